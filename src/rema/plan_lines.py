"""One process's memory plan, line by line: the settings (:class:`Setup`), the lines (:class:`Line`) and
:func:`plan`, which counts each component as the notes of :mod:`rema.plan`'s docstring say (the notes cited
below are those) and finds the peak phase."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .models.shapes import ModelShape
from .plan_estimates import (
    GIB,
    HEAD_CHUNK,
    adamw_bytes,
    backbone_activation_bytes,
    grad_bytes,
    head_bytes,
    kv_cache_bytes,
    layer_activation_bytes,
    weight_bytes,
)
from .rollout.vllm_memory import EngineMemory, kv_bytes_per_token, plan_engines, workspace_bytes

CPU_RUNTIME_GIB = 0.75
"""Resident memory of a CPU training process beyond its model: torch, transformers, peft and rema's imports
(0.43 GiB right after import and a tiny model) plus what the first steps add (oneDNN kernels and their
caches, allocator arenas, the rollout's records). Calibrated on the tiny model (its own tensors are < 10 MB):
the peak of ``rema train configs/demo.yaml model.name=tiny-random rollout.engine=hf sft.cold_start=false
train.steps=2 log.tensorboard=false data.eval=null`` was 0.75 GiB at step 2 (0.64 at step 1;
docs/results.md, 2026-12-05). It still grows slowly over later steps (0.83 GiB at step 3)."""

GPU_RUNTIME_GIB = 1.0
"""A GPU process's memory outside its tensors: the CUDA context and kernels (~0.5 GiB on an H100), NCCL's
buffers and the caching allocator's fragmentation. An allowance, not a measurement."""

GRAD_PHASES = ("update", "all-reduce", "optimizer step")
"""Gradients exist from the first backward to the optimizer step (then ``zero_grad(set_to_none=True)``)."""


@dataclass(frozen=True)
class Setup:
    """The settings a plan depends on (``setup_from_config`` reads them from a ``Config``)."""

    processes: int = 1
    device: str = "cpu"
    """``cpu`` or ``cuda``."""
    device_gib: float | None = None
    """A GPU's total memory as the device reports it (``torch.cuda.mem_get_info``; vLLM's share is of it, see
    :func:`device_total_gib`); None on CPU."""
    strategy: str = "ddp"
    cpu_offload: bool = False
    bf16: bool = False
    """The update computes in bf16 (autocast, or ``model.dtype=bfloat16``)."""
    model_dtype_bytes: int = 4
    lora_r: int = 0
    checkpoint_share: float = 0.0
    """Share of decoder layers under activation checkpointing (0 = off)."""
    micro_batch_tokens: int = 8192
    trained_share: float = 1.0
    """Share of a micro-batch's tokens that are trained (the LM head's positions); 1 = the upper bound."""
    entropy_grad: bool = False
    kl_ref: bool = False
    models: int = 1
    optimizers: int | None = None
    """Models whose AdamW holds state (None = ``models``): 1 when ``train.update_agents`` freezes an agent."""
    engine: str = "hf"
    vllm_dtype_bytes: int = 2
    vllm_gpu_memory_utilization: float = 0.5
    vllm_kv_cache_gib: float | None = None
    """vLLM's KV cache; None = 1 GiB on CPU, on a GPU what its share leaves after weights and workspace."""
    vllm_sleep: int = 0
    """GPU: 1 or 2 = vLLM sleeps through the update (one engine per process: vLLM's sleep-mode allocator)."""
    vllm_release_kv: bool = True
    vllm_in_process: bool = True
    vllm_tp: int = 1
    """Processes one vLLM engine spans (``rollout.vllm_tensor_parallel_size``): each holds 1/tp of its weights."""
    vllm_max_model_len: int = 4096
    """``rollout.max_context_tokens``: vLLM's ``max_model_len``, the KV cache's floor is one such sequence."""
    vllm_eager: bool = False
    """``rollout.vllm_enforce_eager``: no CUDA graphs (their allowance is left out of vLLM's workspace)."""
    rollout_sequences: int = 1
    """Episodes this process rolls out at once (the transformers engine's KV cache)."""
    max_context: int = 4096
    """The longest context an episode reaches (the transformers engine's KV cache per sequence)."""
    runtime_gib: float | None = None
    """None: :data:`CPU_RUNTIME_GIB` or :data:`GPU_RUNTIME_GIB`."""


@dataclass
class Line:
    component: str
    gib: float
    note: str = ""
    phases: tuple[str, ...] = ()
    """When it is held: () = throughout; else the phases (``rollout``, ``update``, ``all-reduce``,
    ``optimizer step``, ``sync``) that hold it, the peak being the largest phase; ``("info",)`` = shown for
    comparison, never counted."""
    peak: bool = True
    """Counted in the peak (set by :func:`plan`)."""


@dataclass
class Plan:
    """Per-process memory lines, the peak, whether it fits, and what would stop the run at its start."""

    model: str
    setup: Setup
    lines: list[Line] = field(default_factory=list)
    host_lines: list[Line] = field(default_factory=list)
    """What FSDP's CPU offload and vLLM's level-1 sleep move to host memory (per process)."""
    peak_gib: float = 0.0
    peak_phase: str = ""
    capacity_gib: float | None = None
    problems: list[str] = field(default_factory=list)
    """What stops the run although the peak may fit: a vLLM engine that cannot start (:func:`plan_engines`)."""
    notes: list[str] = field(default_factory=list)
    """How rema handles a setting that needs care on GPUs (two engines, sleep, dtypes)."""

    @property
    def fits(self) -> bool | None:
        return None if self.capacity_gib is None else self.peak_gib <= self.capacity_gib

    @property
    def works(self) -> bool | None:
        """Fits and starts."""
        return None if self.fits is None else self.fits and not self.problems

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "setup": asdict(self.setup),
            "peak_gib": round(self.peak_gib, 3),
            "peak_phase": self.peak_phase,
            "capacity_gib": self.capacity_gib,
            "fits": self.fits,
            "works": self.works,
            "problems": self.problems,
            "notes": self.notes,
            "lines": [asdict(x) | {"gib": round(x.gib, 3)} for x in self.lines],
            "host_lines": [asdict(x) | {"gib": round(x.gib, 3)} for x in self.host_lines],
        }


def peak_of(lines: list[Line]) -> tuple[float, str]:
    """``(peak, phase)``: the lines held throughout plus those of the phase whose lines sum highest."""
    phases: dict[str, float] = {}
    for x in lines:
        for ph in x.phases:
            if ph != "info":
                phases[ph] = phases.get(ph, 0.0) + x.gib
    top = max(phases, key=phases.get) if phases else ""
    return sum(x.gib for x in lines if not x.phases) + phases.get(top, 0.0), top


@dataclass(frozen=True)
class _Counts:
    """What the lines of one plan share: where it runs, how it is sharded, what is trained (parameters)."""

    gpu: bool
    fsdp: bool
    shards: int
    lora: bool
    trainable: int
    frozen: int
    frozen_bytes: int
    optimizers: int
    per: str
    two: str

    @classmethod
    def of(cls, shape: ModelShape, s: Setup) -> _Counts:
        fsdp = s.strategy == "fsdp" and s.processes > 1
        lora = s.lora_r > 0
        return cls(
            gpu=s.device == "cuda",
            fsdp=fsdp,
            shards=s.processes if fsdp else 1,
            lora=lora,
            trainable=s.lora_r * shape.lora_params_per_rank if lora else shape.params,
            frozen=shape.params if lora else 0,
            frozen_bytes=2 if (lora and s.bf16 and not fsdp) else s.model_dtype_bytes,  # FSDP: one dtype/unit
            optimizers=s.models if s.optimizers is None else s.optimizers,
            per=f"/ {s.processes} processes" if fsdp else "full replica",
            two=f" × {s.models} models" if s.models > 1 else "",
        )


def plan(shape: ModelShape, s: Setup) -> Plan:
    """Compose the estimates above into one process's peak for ``shape`` under ``s``, and (vLLM on a GPU)
    check that its engines start."""
    c = _Counts.of(shape, s)
    out = Plan(shape.name, s, capacity_gib=s.device_gib)
    runtime = s.runtime_gib if s.runtime_gib is not None else (GPU_RUNTIME_GIB if c.gpu else CPU_RUNTIME_GIB)
    out.lines.append(
        Line(
            "runtime",
            runtime,
            "CUDA context, NCCL, allocator (allowance)"
            if c.gpu
            else "torch/transformers process (measured, tiny model)",
        )
    )
    state = _model_state(shape, s, c)
    if c.fsdp and s.cpu_offload:
        out.host_lines = [replace(x, note=x.note + ", in host memory") for x in state]
        state = [Line("weights/gradients/optimizer", 0.0, "in host memory (train.fsdp_cpu_offload)")]
    out.lines += state
    if s.engine == "vllm" and c.gpu:
        _vllm_on_gpu(shape, s, out)
    elif s.engine == "vllm":
        _vllm_on_cpu(shape, s, c, out)
    else:
        kv = kv_cache_bytes(
            s.rollout_sequences,
            s.max_context,
            layers=shape.layers,
            kv_width=shape.kv_width,
            dtype_bytes=s.model_dtype_bytes,
        )
        out.lines.append(
            Line(
                "KV cache (transformers engine)",
                kv / GIB,
                f"{s.rollout_sequences} episodes × {s.max_context} tokens (bound)",
                phases=("rollout",),
            )
        )
    out.lines += _sync_lines(shape, s, c) + _update_lines(shape, s, c)
    out.peak_gib, out.peak_phase = peak_of(out.lines)
    for x in out.lines:
        x.peak = not x.phases or out.peak_phase in x.phases
    out.notes += gpu_notes(s)
    return out


def _model_state(shape: ModelShape, s: Setup, c: _Counts) -> list[Line]:
    """Weights, gradients, AdamW state and the KL reference (notes 1-3, 5, 6)."""
    w = weight_bytes(c.frozen, c.trainable, frozen_bytes=c.frozen_bytes, shards=c.shards) * s.models
    g = grad_bytes(c.trainable, shards=c.shards)
    o = adamw_bytes(c.trainable, shards=c.shards, models=c.optimizers)
    many = c.optimizers > 1
    state = [
        Line(
            "weights",
            w / GIB,
            f"{c.trainable / 1e6:,.1f}M trainable in fp32"
            + (f" + {c.frozen / 1e6:,.0f}M frozen in {c.frozen_bytes * 8}-bit" if c.frozen else "")
            + f"{c.two}, {c.per}",
        ),
        Line("gradients", g / GIB, f"fp32, the updated model's, {c.per}", phases=GRAD_PHASES),
        Line(
            "optimizer state",
            o / GIB,
            f"AdamW 2 × fp32{f' × {c.optimizers} models' if many else ''}, "
            f"{c.per}"
            + (
                " (the inactive agent's too, as allocated today)"
                if many
                else ", the updated agent's only (train.update_agents)"
                if s.models > 1
                else ""
            ),
        ),
    ]
    if s.kl_ref and not c.lora:  # the trained models' only (a frozen agent has no KL term)
        ref = weight_bytes(0, shape.params, frozen_bytes=0, shards=c.shards) * c.optimizers
        state.append(
            Line(
                "KL reference",
                ref / GIB,
                "frozen copy of the fp32 weights" + (f" × {c.optimizers} models" if many else "") + f", {c.per}",
            )
        )
    return state


def _vllm_on_cpu(shape: ModelShape, s: Setup, c: _Counts, out: Plan) -> None:
    """vLLM on CPU: its weights and its ``vllm_kv_cache_gib`` (1 GiB by default) per engine."""
    vw = shape.params * s.vllm_dtype_bytes * s.models / s.vllm_tp / GIB
    out.lines.append(
        Line(
            "vLLM weights",
            vw,
            f"{s.vllm_dtype_bytes * 8}-bit copy{c.two}"
            + (f", 1/{s.vllm_tp} (tensor parallel)" if s.vllm_tp > 1 else "")
            + ("" if s.vllm_in_process else ", in vLLM's own processes"),
        )
    )
    kv = 1.0 if s.vllm_kv_cache_gib is None else s.vllm_kv_cache_gib
    out.lines.append(
        Line(
            "vLLM KV cache",
            kv * s.models,
            "vllm_kv_cache_gib" + (", returned after the rollout" if s.vllm_release_kv else ""),
            phases=("rollout",) if s.vllm_release_kv else (),
        )
    )


def _vllm_on_gpu(shape: ModelShape, s: Setup, out: Plan) -> None:
    """vLLM's engines on a GPU (note 7): each holds its share of the device's total (or weights + workspace +
    ``vllm_kv_cache_gib``), awake through the rollout and the sync; one per process sleeps through the update
    with ``vllm_sleep``. Each must pass vLLM's start condition given what the trainer and the engines started
    before hold, and keep a KV cache of one ``max_model_len`` sequence (:func:`plan_engines`)."""
    held = sum(x.gib for x in out.lines if x.component in ("runtime", "weights", "KL reference")) * GIB
    engines = _gpu_engines(shape, s, held)
    for asleep in (True, False):
        group = [e for e in engines if e.sleeps == asleep]
        if not group:
            continue
        tag = "" if len(group) == len(engines) else (" (the sleeping engine)" if asleep else " (the awake engine)")
        _engine_lines(s, group, asleep=asleep, tag=tag, kv=engines[0].kv, out=out)
    out.problems += [p for e in engines for p in e.problems]


def _gpu_engines(shape: ModelShape, s: Setup, held: float) -> list[EngineMemory]:
    """One process's vLLM engines as :func:`plan_engines` sizes them: each its 1/tp of the weights, the
    workspace and the KV cache per token, started after the trainer's ``held`` bytes."""
    weights = shape.params * s.vllm_dtype_bytes / s.vllm_tp
    workspace = workspace_bytes(
        hidden=shape.hidden,
        intermediate=shape.intermediate // s.vllm_tp,
        vocab=shape.vocab,
        batched_tokens=max(s.vllm_max_model_len, 8192),
        dtype_bytes=s.vllm_dtype_bytes,
        eager=s.vllm_eager,
    )
    own_processes = not s.vllm_in_process and s.processes == 1  # each engine's allocator in a process of its own
    sleepers = 0 if not s.vllm_sleep else (s.models if own_processes else 1)
    return plan_engines(
        total=s.device_gib * GIB,
        share=s.vllm_gpu_memory_utilization,
        weights=[weights] * s.models,
        workspace=workspace,
        held_at_start=held,
        sleepers=sleepers,
        kv_cache=None if s.vllm_kv_cache_gib is None else s.vllm_kv_cache_gib * GIB,
        max_model_len=s.vllm_max_model_len,
        per_token=kv_bytes_per_token(
            layers=shape.layers, kv_width=shape.kv_width // s.vllm_tp, dtype_bytes=s.vllm_dtype_bytes
        ),
    )


def _engine_lines(s: Setup, group: list[EngineMemory], *, asleep: bool, tag: str, kv: float, out: Plan) -> None:
    """The lines of the sleeping engine, or of the awake ones: their weights and their KV cache + workspace
    (held through the rollout and the sync only when asleep), and with ``vllm_sleep=1`` the sleeping weights
    in host memory. ``kv``: one engine's KV cache, for the note."""
    phases = ("rollout", "sync") if asleep else ()  # woken before the sync, which reloads its weights
    how = (
        f"{s.vllm_dtype_bytes * 8}-bit copy"
        + (f" × {len(group)} engines" if len(group) > 1 else "")
        + (f", 1/{s.vllm_tp} (tensor parallel)" if s.vllm_tp > 1 else "")
    )
    out.lines.append(
        Line(
            "vLLM weights" + tag,
            sum(e.weights for e in group) / GIB,
            how + (f", vllm_sleep={s.vllm_sleep}" if asleep else ""),
            phases=phases,
        )
    )
    shares = " + ".join(f"{e.share:.3f}" for e in group)
    out.lines.append(
        Line(
            "vLLM KV cache + workspace" + tag,
            sum(e.footprint - e.weights for e in group) / GIB,
            (
                f"share {shares} of {s.device_gib:g} GiB"
                if s.vllm_kv_cache_gib is None
                else f"vllm_kv_cache_gib {s.vllm_kv_cache_gib:g}"
            )
            + f", KV {kv / GIB:.1f} GiB per engine",
            phases=phases,
        )
    )
    if asleep and s.vllm_sleep == 1:
        out.host_lines.append(
            Line(
                "vLLM weights",
                sum(e.weights for e in group) / GIB,
                "moved to host memory while asleep (vllm_sleep=1)",
            )
        )


def _sync_lines(shape: ModelShape, s: Setup, c: _Counts) -> list[Line]:
    """Under FSDP: vLLM's sync gathers one weight at a time and casts it; the transformers engine serves an
    unsharded replica the sync gathers into (``build_policies``)."""
    if c.fsdp and s.engine == "vllm":  # VLLMEngine._reload
        largest = max(shape.vocab, shape.intermediate) * shape.hidden
        return [
            Line(
                "weight sync",
                largest * (4 + s.vllm_dtype_bytes) / GIB,
                "the largest weight gathered in fp32 and cast, one at a time",
                phases=("sync",),
            )
        ]
    if c.fsdp:
        width = 2 if c.gpu and s.bf16 else (s.model_dtype_bytes if c.lora else 4)
        return [
            Line(
                "engine replica",
                shape.params * width * s.models / GIB,
                f"unsharded {width * 8}-bit copy the engine is synced from{c.two}",
            )
        ]
    return []


def _update_lines(shape: ModelShape, s: Setup, c: _Counts) -> list[Line]:
    """The update's transients: one micro-batch's activations and LM head (note 4), FSDP's gathered layers
    or autocast's weight casts, the all-reduce buffer, AdamW's step; and, for comparison, the activations with
    checkpointing switched the other way."""
    tokens = s.micro_batch_tokens
    mode = _activation_mode(s, c)
    ckpt = max(1, round(s.checkpoint_share * shape.layers)) if s.checkpoint_share > 0 else 0
    out = [
        Line(
            "activations",
            _backbone_gib(shape, tokens, mode, checkpointed=ckpt),
            f"{tokens} tokens/micro-batch, {mode}, "
            + (f"{ckpt}/{shape.layers} layers checkpointed" if ckpt else "no checkpointing"),
            phases=("update",),
        ),
        _head_line(shape, s, c),
    ]
    out += _weight_copy_lines(shape, s, c) + _step_lines(s, c)
    out.append(
        Line(
            "activations " + ("without" if ckpt else "with") + " checkpointing",
            _backbone_gib(shape, tokens, mode, checkpointed=0 if ckpt else shape.layers),
            "model.gradient_checkpointing=" + ("false" if ckpt else "true") + ": for comparison",
            phases=("info",),
        )
    )
    return out


def _activation_mode(s: Setup, c: _Counts) -> str:
    """How the update computes, as :data:`rema.plan_estimates.LAYER_BYTES_PER_TOKEN` keys it: ``fp32``;
    ``bf16`` under FSDP's bf16 param_dtype or over a bf16-stored base (a bf16 residual stream); else
    ``autocast`` over fp32 weights."""
    if not s.bf16:
        return "fp32"
    if c.fsdp or (c.lora and s.model_dtype_bytes == 2):
        return "bf16"
    return "autocast"


def _backbone_gib(shape: ModelShape, tokens: int, mode: str, *, checkpointed: int) -> float:
    """The backbone's activations (GiB) for one micro-batch of ``tokens`` tokens with ``checkpointed`` layers
    under checkpointing (:func:`backbone_activation_bytes`)."""
    layer_bytes = layer_activation_bytes(
        tokens,
        hidden=shape.hidden,
        intermediate=shape.intermediate,
        kv_width=shape.kv_width,
        heads=shape.heads,
        mode=mode,
    )
    return (
        backbone_activation_bytes(
            tokens,
            layers=shape.layers,
            checkpointed=checkpointed,
            layer_bytes=layer_bytes,
            hidden=shape.hidden,
            residual_bytes=2 if mode == "bf16" else 4,
        )
        / GIB
    )


def _head_line(shape: ModelShape, s: Setup, c: _Counts) -> Line:
    """The LM head over the micro-batch's trained positions: through autograd when the head is trained (full
    fine-tuning) or the entropy has a gradient, else the fused function (:func:`head_bytes`)."""
    trained = max(1, int(s.micro_batch_tokens * s.trained_share))
    autograd_head = not c.lora or s.entropy_grad
    hb = head_bytes(trained, vocab=shape.vocab, hidden=shape.hidden, trained_head=autograd_head, low_precision=s.bf16)
    return Line(
        "LM head",
        hb / GIB,
        f"{trained} trained positions, chunks of {HEAD_CHUNK}, "
        + ("autograd" if autograd_head else "fused" + (" + kept softmax" if s.bf16 else "")),
        phases=("update",),
    )


def _weight_copy_lines(shape: ModelShape, s: Setup, c: _Counts) -> list[Line]:
    """The weights the update's compute holds beside the stored ones: FSDP's gathered layers, or autocast's
    bf16 casts of the fp32 weights."""
    if c.fsdp:  # FSDP2 gathers each layer for its compute (the next one prefetched); the root (embedding,
        unit = 2 if s.bf16 else 4  # head, final norm) stays gathered from the forward through the backward
        gathered = (2 * shape.layer_params + shape.embedding + shape.head) * unit
        return [
            Line("gathered layers", gathered / GIB, "FSDP all-gather: 2 decoder layers + the root", phases=("update",))
        ]
    if s.bf16 and not c.lora:  # autocast keeps one bf16 cast of each fp32 weight matrix until the forward ends
        casts = 2 * (shape.params - shape.embedding + (shape.embedding if shape.tied else 0))
        return [
            Line("autocast weight copies", casts / GIB, "bf16 casts of the fp32 weights (forward)", phases=("update",))
        ]
    return []


def _step_lines(s: Setup, c: _Counts) -> list[Line]:
    """After the backward: DDP's flat all-reduce buffer (more than one process), and on a GPU the foreach
    AdamW's temporaries (unless FSDP's CPU offload runs the step in host memory)."""
    out = []
    if not c.fsdp and s.processes > 1:
        out.append(
            Line(
                "all-reduce buffer", grad_bytes(c.trainable) / GIB, "flat fp32 gradients (ddp)", phases=("all-reduce",)
            )
        )
    if c.gpu and not (c.fsdp and s.cpu_offload):
        out.append(
            Line(
                "optimizer step",
                4 * c.trainable / c.shards / GIB,
                "foreach AdamW temporaries",
                phases=("optimizer step",),
            )
        )
    return out


def gpu_notes(s: Setup) -> list[str]:
    """What rema does about settings that need care on GPUs, for the plan's reader."""
    if s.device != "cuda":
        return []
    notes = []
    if s.engine == "vllm" and s.models > 1:
        notes.append(
            f"separate weights: {s.models} vLLM engines per process split rollout.vllm_gpu_memory_utilization="
            f"{s.vllm_gpu_memory_utilization} (each its weights + an equal part of the rest)"
        )
        if s.vllm_sleep and (s.vllm_in_process or s.processes > 1):
            notes.append(
                f"rollout.vllm_sleep={s.vllm_sleep} puts one engine per process to sleep (vLLM's sleep-mode "
                "allocator allows one); the other stays awake through the update"
            )
    if s.engine == "vllm" and s.vllm_sleep == 2 and (s.models > 1 or (s.optimizers or s.models) < s.models):
        notes.append(
            "rollout.vllm_sleep=2 discards the sleeping engine's weights: when its agent is not updated "
            "(frozen, or the inactive one) the trainer syncs it again each step (vllm_sleep=1 keeps them in "
            "host memory instead)"
        )
    if s.engine == "vllm" and s.vllm_dtype_bytes == 4 and s.strategy == "fsdp" and s.processes > 1 and s.bf16:
        notes.append(
            "rollout.vllm_dtype=float32 under FSDP's bf16 compute: the post-sync check uses bf16's "
            "tolerance (the trainer's forward runs in bf16)"
        )
    if s.engine == "vllm" and s.vllm_tp > 1:
        notes.append("tensor-parallel vLLM runs with its custom all-reduce off (NCCL's), as verl and TRL do")
    if s.strategy == "fsdp" and s.cpu_offload and s.processes > 1:
        notes.append(
            "train.fsdp_cpu_offload: shards live in host memory; the sync, export and checks gather them on the GPU"
        )
    return notes
