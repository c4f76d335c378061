"""Memory plan: what one training process holds at its peak, per device, from a model's config alone.

``rema plan CONFIG [overrides] --gpus N [--gpu-mem GiB]`` answers "does this run fit?" before any GPU hour
is spent. The model is built on the ``meta`` device from its ``config.json`` (no weights are read): the
paper's models ship their shapes in ``rema/assets/model_shapes/`` so the answer needs no network.

What is counted, per process (one process per device; bytes, reported in GiB = 2**30 bytes):

1. **Weights.** Trainable parameters as fp32 master weights (AdamW on bf16 weights rounds small updates
   away, so bf16 compute keeps fp32 masters); frozen ones (LoRA's base) in the dtype they are stored in:
   bf16 under bf16 compute (``rema.models.store_frozen_weights``), else ``model.dtype``.
2. **Gradients**: fp32, one per trainable parameter. **Optimizer state**: AdamW's two fp32 moments.
3. **Sharding**: ``train.strategy=fsdp`` divides weights, gradients and optimizer state by the number of
   processes (``train.fsdp_cpu_offload`` moves them to host memory) and adds the layers gathered for
   compute; ``ddp`` keeps a full replica per device plus the flat all-reduce buffer of the gradients.
4. **Activations** of one micro-batch of ``train.micro_batch_tokens`` padded tokens (the update's
   largest), with gradient checkpointing (``model.checkpoint_layers`` of the layers keep only their input)
   or without; plus the LM head, which computes log-probs only on trained positions in chunks of
   :data:`HEAD_CHUNK` (``rema.train.logprobs``), so no (T × V) logits are ever held.
5. **KL reference**: ``algo.kl_coef > 0`` with full fine-tuning keeps a frozen copy of the model (under FSDP
   sharded shard by shard, never whole); with LoRA the base with the adapter off is the reference.
6. **Separate weights** (``train.shared_weights=false``): two models, two generation engines, and, as
   ``rema.train.policy.build_policies`` allocates today, an AdamW per model whose state both hold once each
   agent has been updated (the inactive agent's gradients are freed after its step); one AdamW only when
   ``train.update_agents`` freezes an agent.
7. **Generation**: vLLM holds its own weights in ``rollout.vllm_dtype`` (1/tp of them with
   ``rollout.vllm_tensor_parallel_size``) and a KV cache. On a GPU an engine holds its share of the device's
   reported total (``--gpu-mem`` 80 → 79.19 GiB, :func:`device_total_gib`), or weights + workspace +
   ``rollout.vllm_kv_cache_gib``; two engines (separate weights) split ``rollout.vllm_gpu_memory_utilization``;
   each must pass vLLM's start condition and keep a KV cache of one ``max_model_len`` sequence, else the plan
   names the error vLLM would raise (:mod:`rema.rollout.vllm_memory`). With ``rollout.vllm_sleep`` one engine
   per process is awake in the rollout and the sync only (level 1 parks its weights in host memory). On CPU:
   ``rollout.vllm_kv_cache_gib`` (1 GiB), released after the rollout with ``rollout.vllm_release_kv``. Under
   FSDP vLLM is synced one gathered weight at a time (the largest in fp32 plus its cast). The transformers
   engine shares the trainer's weights (under FSDP an unsharded copy) and holds a KV cache in the rollout.
8. **Runtime**: the process's own memory — on CPU the torch/transformers runtime measured on a tiny-model
   run (:data:`CPU_RUNTIME_GIB`), on a GPU the CUDA context and communication buffers.

The peak is the persistent part (runtime, weights, gradients, optimizer state, reference, a GPU's awake vLLM
engines) plus the largest of the phases' transients (the micro-batch's activations, the all-reduce buffer,
the optimizer step's temporaries, the rollout's KV cache, the sync with its engine awake). The CPU figures are
checked against measured peaks of real runs in ``tests/test_plan.py`` (docs/results.md).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from .models.shapes import ModelShape, model_config, model_shape  # noqa: F401  (rema.plan's API)
from .plan_estimates import (  # noqa: F401  (rema.plan's API)
    GIB,
    HEAD_AUTOGRAD_BYTES_PER_LOGIT,
    HEAD_CHUNK,
    LAYER_BYTES_PER_TOKEN,
    adamw_bytes,
    backbone_activation_bytes,
    grad_bytes,
    head_bytes,
    kv_cache_bytes,
    layer_activation_bytes,
    weight_bytes,
)
from .plan_lines import (  # noqa: F401  (rema.plan's API)
    CPU_RUNTIME_GIB,
    GPU_RUNTIME_GIB,
    GRAD_PHASES,
    Line,
    Plan,
    Setup,
    gpu_notes,
    peak_of,
    plan,
)

# -------------------------------------------------------------------------------------- a Config's setup


PROMPT_TOKENS = 256
"""Allowance for an episode's prompt (system prompt and question) in the rollout's longest context: the
demo's first MTA context is 135 SmolLM2 tokens. The context is then bounded by this plus every message
(``2 · max_turns · max_tokens_per_turn`` in multi-turn) and by ``rollout.max_context_tokens``."""


def setup_from_config(
    cfg,
    *,
    gpus: int = 1,
    gpu_mem_gib: float | None = None,
    trained_share: float = 1.0,
    runtime_gib: float | None = None,
    native_bf16_cpu: bool | None = None,
) -> Setup:
    """The :class:`Setup` of a ``Config`` on ``gpus`` processes: GPUs of ``gpu_mem_gib`` GiB each, or CPU
    processes when None. ``train.autocast=auto`` means bf16 on a GPU and, on CPU, where this machine computes
    bf16 natively (``native_bf16_cpu``; None = ask this machine). ``rollout.engine=auto`` is what the runtime
    resolves it to on this machine (:func:`rema.runtime.engine_of`; a command's config is resolved already)."""
    from .runtime import engine_of

    gpu = gpu_mem_gib is not None
    t, m, r = cfg.train, cfg.model, cfg.rollout
    if t.autocast == "auto":
        if gpu:
            bf16 = True
        else:
            if native_bf16_cpu is None:
                from .models import native_bf16

                native_bf16_cpu = native_bf16("cpu")
            bf16 = native_bf16_cpu
    else:
        bf16 = t.autocast == "bf16"
    dtype_bytes = 2 if m.dtype in ("bfloat16", "float16") else 4
    bf16 = bf16 or dtype_bytes == 2
    vllm_bytes = {"": 2 if (gpu or bf16) else 4, "bfloat16": 2, "float16": 2, "float32": 4}[r.vllm_dtype]
    per_rank = math.ceil(t.questions_per_step / gpus) * r.samples_per_question
    messages = 2 * r.max_turns if r.mode == "multi_turn" else 2
    context = min(r.max_context_tokens, PROMPT_TOKENS + messages * r.max_tokens_per_turn)
    return Setup(
        processes=gpus,
        device="cuda" if gpu else "cpu",
        device_gib=device_total_gib(gpu_mem_gib),
        strategy=t.strategy,
        cpu_offload=t.fsdp_cpu_offload,
        bf16=bf16,
        model_dtype_bytes=dtype_bytes,
        lora_r=m.lora_r,
        checkpoint_share=m.checkpoint_layers if m.gradient_checkpointing else 0.0,
        micro_batch_tokens=t.micro_batch_tokens,
        trained_share=trained_share,
        entropy_grad=cfg.algo.entropy_coef > 0,
        kl_ref=cfg.algo.kl_coef > 0,
        models=1 if t.shared_weights else 2,
        engine=engine_of(cfg),
        vllm_dtype_bytes=vllm_bytes,
        optimizers=1 if t.shared_weights or t.update_agents != "both" else 2,
        vllm_gpu_memory_utilization=r.vllm_gpu_memory_utilization,
        vllm_kv_cache_gib=r.vllm_kv_cache_gib,
        vllm_sleep=r.vllm_sleep if gpu else 0,
        vllm_release_kv=r.vllm_release_kv and not gpu,
        vllm_in_process=r.vllm_in_process,
        vllm_tp=r.vllm_tensor_parallel_size,
        vllm_max_model_len=r.max_context_tokens,
        vllm_eager=r.vllm_enforce_eager,
        rollout_sequences=per_rank,
        max_context=context,
        runtime_gib=runtime_gib,
    )


DEVICE_TOTAL_GIB = {80: 79.19, 141: 139.80, 40: 39.39}
"""What a GPU sold as N GB reports as its total, in GiB (``torch.cuda.mem_get_info()[1]``, also printed in its
out-of-memory errors, "GPU 0 has a total capacity of 79.19 GiB"): H100 / A100 80 GB, H200, A100 40 GB."""


def device_total_gib(gpu_mem_gib: float | None) -> float | None:
    """``--gpu-mem`` as the device's reported total: a size from :data:`DEVICE_TOTAL_GIB` (80, 141, 40) becomes
    what those GPUs report, any other value is taken as the reported total itself."""
    return None if gpu_mem_gib is None else DEVICE_TOTAL_GIB.get(gpu_mem_gib, gpu_mem_gib)


def config_shape(cfg) -> ModelShape:
    """The shape of the model a ``Config`` trains: ``model.name``, or under separate weights with another
    ``model.ra_name`` the larger of the two (the plan is per process, and each process holds both)."""
    names = [cfg.model.name] + ([cfg.model.ra_name] if not cfg.train.shared_weights and cfg.model.ra_name else [])
    shapes = [model_shape(model_config(name), name) for name in dict.fromkeys(names)]
    return max(shapes, key=lambda x: x.params)


def alternatives(shape: ModelShape, s: Setup) -> list[tuple[str, Plan]]:
    """What to change when a plan does not fit or does not start: each single change worth trying, planned
    (LoRA, FSDP, CPU offload, more GPUs, smaller micro-batches, checkpointing, another vLLM share)."""
    tries: list[tuple[str, Setup]] = []
    if s.lora_r == 0:
        tries.append(("model.lora_r=16", replace(s, lora_r=16)))
    if s.strategy != "fsdp" and s.processes > 1:
        tries.append(("train.strategy=fsdp", replace(s, strategy="fsdp")))
    if s.strategy == "fsdp" and s.processes > 1 and not s.cpu_offload:
        tries.append(("train.fsdp_cpu_offload=true", replace(s, cpu_offload=True)))
    fsdp_s = replace(s, strategy="fsdp")
    for n in (2 * s.processes, 4 * s.processes):
        tries.append((f"train.strategy=fsdp on {n} GPUs", replace(fsdp_s, processes=n)))
    if s.checkpoint_share < 1:
        tries.append(("model.gradient_checkpointing=true model.checkpoint_layers=1", replace(s, checkpoint_share=1.0)))
    for mbt in (s.micro_batch_tokens // 2, s.micro_batch_tokens // 4):
        if mbt >= 512:
            tries.append((f"train.micro_batch_tokens={mbt}", replace(s, micro_batch_tokens=mbt)))
    if s.engine == "vllm" and s.device == "cuda" and not s.vllm_sleep:
        tries.append(("rollout.vllm_sleep=1", replace(s, vllm_sleep=1)))
    if s.engine == "vllm" and s.device == "cuda":
        for u in (0.3, 0.2, 0.6, 0.7):  # smaller: room for the trainer; larger: room for vLLM's KV cache
            if u != s.vllm_gpu_memory_utilization:
                tries.append((f"rollout.vllm_gpu_memory_utilization={u}", replace(s, vllm_gpu_memory_utilization=u)))
    return [(what, plan(shape, alt)) for what, alt in tries]


# --------------------------------------------------------------------------------------------- rema plan


def host_memory_gib() -> float | None:
    """This machine's total memory (Linux ``MemTotal``), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def verdict(p: Plan, alts: list[tuple[str, Plan]]) -> str:
    """One line: fits (and starts) or not, the largest components, and when it does not work the single
    changes that make it work, with their peaks."""
    counted = sorted((x for x in p.lines if x.peak), key=lambda x: -x.gib)
    top = ", ".join(f"{x.component} {x.gib:.1f}" for x in counted[:3])
    if p.capacity_gib is None:
        return f"peak {p.peak_gib:.2f} GiB per process ({p.peak_phase}); largest: {top} GiB"
    state = "does not fit" if not p.fits else "fits but will not start" if p.problems else "fits"
    head = (
        f"{state}: peak {p.peak_gib:.1f} of {p.capacity_gib:g} GiB per GPU ({p.peak_phase}); largest: {top} GiB"
        + "".join(f". {problem}" for problem in p.problems)
    )
    if p.works:
        return head + (f"; headroom {p.capacity_gib - p.peak_gib:.1f} GiB")
    fixes = [f"{what} → {alt.peak_gib:.1f} GiB" for what, alt in alts if alt.works]
    near = sorted(alts, key=lambda a: a[1].peak_gib)[:2]
    if fixes:
        return head + ". Works with: " + "; ".join(fixes)
    return head + ". No single change works; closest: " + "; ".join(f"{w} → {a.peak_gib:.1f} GiB" for w, a in near)
