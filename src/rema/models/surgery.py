"""Training-time changes to a loaded model, and the facts the trainer plans with: activation checkpointing of
a share of the decoder layers, ``torch.compile`` per decoder layer (with the C++-compiler probe it needs on a
CPU), and a decoder layer's weight-to-attention FLOPs balance."""

from __future__ import annotations


def linear_per_attention(model) -> float:
    """FLOPs per token of a decoder layer's weights over those of its attention per token of context.

    A layer spends ``2·W`` FLOPs per token on its W weights and ``4·A`` per token of context on attention
    scores and values (A = heads × head size): the ratio ``W / (2·A)`` is the context length at which the two
    are equal. It tells when packing rows around a shared prefix (``rema.train.batch.plan_micro_batches``)
    stops paying. ~3070 for SmolLM2-135M.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    layer = backbone.layers[0]
    weights = sum(p.numel() for n, p in layer.named_parameters() if "lora_" not in n and p.dim() > 1)
    cfg = base.config
    heads = getattr(cfg, "num_attention_heads", 1)
    width = heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
    return weights / (2 * width)


def has_cpp_compiler() -> bool:
    """Whether inductor finds a C++ compiler (``CXX``, g++, clang++): compiling for a CPU needs one."""
    try:
        from torch._inductor import cpp_builder

        return bool(cpp_builder.get_cpp_compiler())
    except Exception:  # noqa: BLE001 - inductor raises its own error type when none is found
        return False


def enable_checkpointing(model, share: float = 1.0) -> int:
    """Activation checkpointing (non-reentrant) for ``share`` of ``model``'s n decoder layers: k = max(1,
    round(share·n)) of them, evenly spread (layer i recomputes its activations in the backward iff
    ⌊(i+1)·k/n⌋ > ⌊i·k/n⌋), so 1 = every layer and 0.5 = every other one; the rest keep their activations
    (less recomputation, more memory). Returns k. Works on any transformers model whose decoder layers are
    ``GradientCheckpointingLayer``s."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    if not 0.0 < share <= 1.0:
        raise ValueError(f"the share of checkpointed layers must be in (0, 1], got {share}")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    n = len(layers)
    k = max(1, round(share * n))
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = (i + 1) * k // n > i * k // n
    return k


def compile_decoder_layers(model) -> int:
    """``torch.compile`` every decoder layer of ``model`` (peft-wrapped or not) in place, with dynamic shapes;
    returns how many. ``nn.Module.compile`` keeps the module tree and its state-dict names (checkpoints,
    export and the weight sync see the same model), and activation checkpointing still wraps each layer."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = inner.get_decoder() if hasattr(inner, "get_decoder") else inner.model
    layers = getattr(backbone, "layers", None)
    if layers is None:
        raise ValueError(f"{type(backbone).__name__} has no .layers to compile (train.compile)")
    if next(model.parameters()).device.type == "cpu" and not has_cpp_compiler():
        raise RuntimeError(
            "train.compile on CPU needs a C++ compiler for inductor: install g++ (or set CXX), "
            "or set train.compile=false"
        )
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
