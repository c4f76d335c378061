"""Low-precision storage of frozen weights: a LoRA model's base kept in bf16 for an update under autocast.

:func:`store_frozen_weights` swaps the class of each frozen linear layer / embedding to
:class:`StoredLowLinear` / :class:`StoredLowEmbedding` in place (the module tree and parameter names do not
change); :func:`native_bf16` says where bf16 is worth it; :func:`set_training_dtypes` is the dtype layout the
trainer keeps a freshly loaded model in (fp32 master weights, a LoRA base in bf16).
"""

from __future__ import annotations

import torch


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True where bfloat16 matmuls run natively: CUDA devices, and CPUs with AVX-512 BF16 (or AMX)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch without these probes
        return False


class StoredLowLinear(torch.nn.Linear):
    """A frozen ``nn.Linear`` whose weight is stored in a lower precision (see :func:`store_frozen_weights`).

    Under autocast it is a plain linear layer (autocast casts the input; the weight is already in its
    dtype). Elsewhere it computes in the input's dtype with the weight cast up: exact fp32 arithmetic on
    the stored weights, so an fp32 caller (the transformers engine, the sync check) sees the same model
    that an fp32 vLLM engine serves."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type) or x.dtype == self.weight.dtype:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, self.weight.to(x.dtype), bias)


class StoredLowEmbedding(torch.nn.Embedding):
    """A frozen ``nn.Embedding`` whose table is stored in a lower precision (see :func:`store_frozen_weights`):
    the rows it returns are cast back to the dtype it was loaded in, so the residual stream keeps its
    precision and only the table's entries are rounded."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids).to(self.rema_loaded_dtype)


def _store_low(module: torch.nn.Module, dtype: torch.dtype, cls: type) -> None:
    module.rema_loaded_dtype = module.weight.dtype
    with torch.no_grad():  # in place on the Parameter: a module tied to it sees the new tensor too
        module.weight.data = module.weight.data.to(dtype)
        if getattr(module, "bias", None) is not None:
            module.bias.data = module.bias.data.to(dtype)
    module.__class__ = cls


def store_frozen_weights(model, dtype: torch.dtype) -> int:
    """Keep the frozen weights of a LoRA model in ``dtype`` for an update under ``torch.autocast(dtype)``:
    the base weight of every LoRA-wrapped linear layer, the input embedding and the (tied) LM head.
    Returns how many layers were changed.

    The linear layers and the LM head change no number under autocast: it would cast their weights to
    ``dtype`` at every matmul (forward, recomputation, backward) anyway. The embedding's rows are rounded
    to ``dtype`` once (what a bf16 vLLM engine serves; its output is cast back, so the residual stream keeps
    its precision); that is the one numerical change. What this saves is memory: the frozen weights take
    half the bytes and no transient copies are made (SmolLM2-135M's 0.11 GB tied embedding was also cast
    to a 54 MB bf16 copy in every log-prob pass; on a 2-core CPU the update's speed was the same within
    noise). Norms and the LoRA adapters keep their dtype. Outside autocast the layers compute in the
    caller's dtype on the rounded weights (``StoredLowLinear``).
    """
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return 0
    count = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        base = module.get_base_layer()
        if type(base) is not torch.nn.Linear or base.weight.requires_grad or base.weight.dtype == dtype:
            continue
        _store_low(base, dtype, StoredLowLinear)
        count += 1
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    emb, head = inner.get_input_embeddings(), inner.get_output_embeddings()
    tied = head is not None and emb is not None and head.weight is emb.weight
    if (
        type(emb) is torch.nn.Embedding
        and not emb.weight.requires_grad
        and emb.weight.dtype != dtype
        and (not tied or type(head) is torch.nn.Linear)
    ):  # a wrapped tied head (LoRA) would read the table
        _store_low(emb, dtype, StoredLowEmbedding)
        count += 1
        if tied:  # the shared table is rounded already
            head.rema_loaded_dtype = emb.rema_loaded_dtype
            head.__class__ = StoredLowLinear
            count += 1
    if not tied and type(head) is torch.nn.Linear and not head.weight.requires_grad and head.weight.dtype != dtype:
        _store_low(head, dtype, StoredLowLinear)
        count += 1
    if count:
        # the rest may still be views of the checkpoint file's memory map, which then stays resident with
        # the old fp32 weights in it: own copies let it go (measured on SmolLM2-135M: 0.96 GiB of weights
        # and runtime before, 1.16 after the cast alone, 0.76 after the copies)
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                if not t.requires_grad and t.dtype != dtype:
                    t.data = t.data.clone()
    return count


def keep_trainable_fp32(model) -> int:
    """Master weights: trained parameters loaded in a 16-bit dtype become float32, so AdamW's updates are not
    rounded away (at lr 1e-6 most updates of a bf16 weight are below its resolution); frozen ones keep their
    dtype. Returns the number of parameters cast."""
    cast = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
            cast += 1
    return cast


def set_training_dtypes(model, *, bf16: bool, lora: bool, sharded: bool) -> None:
    """The dtypes the trainer keeps a freshly loaded model in: fp32 master copies of the trained parameters
    (:func:`keep_trainable_fp32`), and under LoRA with bf16 autocast on one process or DDP the frozen base in
    bf16 (autocast rounds it to bf16 anyway; under FSDP a unit has one dtype). ``rema export`` rebuilds a
    checkpoint's model the same way (:mod:`rema.runtime.runs`), so its weights are the trainer's."""
    keep_trainable_fp32(model)
    if bf16 and lora and not sharded:
        store_frozen_weights(model, torch.bfloat16)
