"""Choosing a generation engine by name (``rollout.engine``)."""

from __future__ import annotations

from .engine import Engine
from .hf_engine import HFEngine

ENGINES = ("hf", "vllm")


def make_engine(model, tokenizer, *, engine: str = "hf", seed: int = 0, **kwargs) -> Engine:
    """An engine that samples from ``model``: ``hf`` (transformers, shares the model object) or ``vllm``."""
    if engine == "hf":
        return HFEngine(model, tokenizer, seed=seed)
    if engine == "vllm":
        try:
            from .vllm_engine import VLLMEngine
        except ImportError as err:
            raise RuntimeError(f"rollout.engine=vllm needs vLLM: pip install 'rema[vllm]' ({err})") from err
        return VLLMEngine(model, tokenizer, seed=seed, **kwargs)
    raise ValueError(f"unknown engine '{engine}'; choose one of {list(ENGINES)}")
