"""What vLLM asks of a GPU's memory, as pure functions: the condition it starts under, how a process's share is
split between its engines, and the KV cache left once its weights and workspace are in. Used by the trainer
before it starts its engines (:func:`rema.train.policy.build_policies`) and by ``rema plan``; nothing here
imports vLLM.

Read against vLLM 0.32 (``vllm/v1/worker/utils.py``, ``gpu_worker.py``, ``v1/core/kv_cache_utils.py``):

1. **Start.** An engine asks for ``ceil(gpu_memory_utilization × total)`` bytes of the device and refuses to
   start unless that much is free when it starts ("Free memory on device ... on startup is less than desired
   GPU memory utilization"), whether or not ``kv_cache_memory_bytes`` is set. ``total`` is what the device
   reports (``torch.cuda.mem_get_info``), a little less than the size it is sold as.
2. **KV cache.** What the share leaves after vLLM's weights and its profiled peak (a forward over
   ``max_num_batched_tokens`` tokens, the sampler over ``max_num_seqs`` rows, CUDA graphs unless eager) becomes
   the KV cache — or ``kv_cache_memory_bytes`` when given. None left: "No available memory for the cache
   blocks"; less than one ``max_model_len`` sequence: "To serve at least one request with the model's max seq
   len ...". Both end the start.
3. **Two engines in one process** (separate weights) each need (1) at their own start, so the second starts
   only where ``free ≥ its share`` after the first took its own: rema splits ``vllm_gpu_memory_utilization``
   between them (:func:`engine_shares`), so together they take what one engine would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

GIB = 2**30

MAX_NUM_SEQS = 256
"""vLLM's default ``max_num_seqs`` (rows its sampler is profiled on)."""

CUDA_GRAPH_GIB = 1.0
"""An allowance for the CUDA graphs vLLM captures when not eager (and outside-torch buffers); not measured."""


class VLLMMemoryError(RuntimeError):
    """vLLM would not start with this memory share; the message names the key to change."""


def engine_shares(share: float, weight_bytes: list[float], total_bytes: float) -> list[float]:
    """Split one process's vLLM ``share`` of a device of ``total_bytes`` among its engines, whose weights take
    ``weight_bytes`` each: every engine gets its weights plus an equal part of what is left (for its KV cache
    and workspace). The shares add up to ``share``, so the last engine starts wherever one engine of ``share``
    would (note 3)."""
    left = share * total_bytes - sum(weight_bytes)
    if left <= 0:
        raise VLLMMemoryError(
            f"rollout.vllm_gpu_memory_utilization={share} gives vLLM {share * total_bytes / GIB:.1f} GiB of the "
            f"device, less than its {len(weight_bytes)} engines' weights ({sum(weight_bytes) / GIB:.1f} GiB): raise "
            "it, use rollout.vllm_tensor_parallel_size > 1, or train.shared_weights=true (one engine)")
    return [(w + left / len(weight_bytes)) / total_bytes for w in weight_bytes]


def check_start(free_bytes: float, total_bytes: float, share: float, *, engine: str = "vLLM") -> None:
    """vLLM's start condition (note 1), checked before vLLM is started so the error names the key to change."""
    wanted = math.ceil(share * total_bytes)
    if free_bytes < wanted:
        raise VLLMMemoryError(
            f"{engine} cannot start: it asks for {share:.3f} × {total_bytes / GIB:.1f} GiB = {wanted / GIB:.1f} GiB "
            f"of the GPU but {free_bytes / GIB:.1f} GiB are free (the trainer's model and any engine started before "
            "hold the rest); lower rollout.vllm_gpu_memory_utilization, or shard the trainer (train.strategy=fsdp)")


def workspace_bytes(*, hidden: int, intermediate: int, vocab: int, batched_tokens: int, dtype_bytes: int,
                    eager: bool) -> float:
    """vLLM's profiled peak beside its weights (note 2), estimated: one layer's activations over
    ``batched_tokens`` tokens (the residual stream, attention's q/k/v/o and the MLP's gate, up and product:
    ``4 · hidden + 3 · intermediate`` numbers per token), the sampler's fp32 logits, probabilities and sorted
    copy for :data:`MAX_NUM_SEQS` rows, and :data:`CUDA_GRAPH_GIB` unless ``eager``."""
    activations = batched_tokens * (4 * hidden + 3 * intermediate) * dtype_bytes
    sampler = 3 * MAX_NUM_SEQS * vocab * 4
    return activations + sampler + (0.0 if eager else CUDA_GRAPH_GIB * GIB)


def kv_bytes_per_token(*, layers: int, kv_width: int, dtype_bytes: int) -> int:
    """Keys and values of one token over every layer."""
    return 2 * layers * kv_width * dtype_bytes


def kv_floor_error(kv_bytes: float, *, max_model_len: int, per_token: int) -> str | None:
    """The error vLLM ends its start with when its KV cache gets ``kv_bytes`` (note 2), or None when at least
    one ``max_model_len`` sequence fits."""
    if kv_bytes <= 0:
        return "No available memory for the cache blocks"
    needed = max_model_len * per_token
    if needed > kv_bytes:
        return (f"To serve at least one request with the model's max seq len ({max_model_len}), "
                f"({needed / GIB:.2f} GiB KV cache is needed, which is larger than the available KV cache memory "
                f"({kv_bytes / GIB:.2f} GiB)")
    return None


def device_memory(device) -> tuple[float, float] | None:
    """``(free, total)`` bytes of a CUDA ``device`` after returning the caching allocator's unused blocks (as
    vLLM does before its own snapshot); None for any other device."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    return float(free), float(total)


@dataclass
class EngineMemory:
    """What one vLLM engine of a process holds on its GPU, and whether it starts (:func:`plan_engines`)."""

    share: float
    """Its ``gpu_memory_utilization``."""
    weights: float
    """Bytes of its weights (1/tp of the model under tensor parallelism)."""
    kv: float
    """Bytes of its KV cache: what the share leaves after weights and workspace, or ``kv_cache_memory_bytes``."""
    footprint: float
    """Bytes it holds awake: the whole share, or weights + workspace + the given KV cache."""
    sleeps: bool
    """Whether it sleeps through the update (one engine per process can)."""
    problems: list[str] = field(default_factory=list)
    """Why it would not start (vLLM's start condition, its KV floor)."""


def plan_engines(*, total: float, share: float, weights: list[float], workspace: float, kv_cache: float | None,
                 held_at_start: float, sleepers: int, max_model_len: int, per_token: int) -> list[EngineMemory]:
    """A process's vLLM engines, started in order on a device of ``total`` bytes where the trainer holds
    ``held_at_start`` when the first starts: each engine's share (:func:`engine_shares` for several), footprint
    and KV cache (``kv_cache``: ``rollout.vllm_kv_cache_gib`` in bytes, or None), and the problems that stop
    its start: too little free for its share (note 1), a KV cache below one ``max_model_len`` sequence
    (note 2). The first ``sleepers`` engines sleep through the update."""
    try:
        shares = engine_shares(share, weights, total) if len(weights) > 1 else [share]
        split_error = None
    except VLLMMemoryError as err:
        shares, split_error = [share / len(weights)] * len(weights), str(err)
    out, held = [], held_at_start
    for i, (s, w) in enumerate(zip(shares, weights)):
        kv = s * total - w - workspace if kv_cache is None else kv_cache
        engine = EngineMemory(s, w, kv, s * total if kv_cache is None else w + workspace + kv_cache, i < sleepers)
        name = f"vLLM engine {i + 1} of {len(weights)}" if len(weights) > 1 else "vLLM"
        if split_error:
            engine.problems += [split_error] if i == 0 else []
        elif total - held < math.ceil(s * total) and not any(e.problems for e in out):  # the first that fails
            engine.problems.append(f"{name} would not start: it asks for {s:.3f} of the GPU ({s * total / GIB:.1f} GiB) "
                                   f"and {max(total - held, 0) / GIB:.1f} GiB are free then (vLLM: \"Free memory on device "
                                   "... is less than desired GPU memory utilization\")")
        floor = kv_floor_error(kv, max_model_len=max_model_len, per_token=per_token)
        if floor and not split_error:
            engine.problems.append(f"{name} would stop at its start: \"{floor}\"")
        out.append(engine)
        held += engine.footprint
    return out
