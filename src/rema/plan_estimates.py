"""The memory plan's estimates: bytes of weights, gradients, optimizer state, activations, the LM head and a
KV cache, each from a model's shape alone (pure math, no torch). :mod:`rema.plan` composes them into one
process's peak (:mod:`rema.plan_lines`); ``tests/test_plan.py`` checks them on hand-computed numbers and the
activation model against the tensors autograd saves."""

from __future__ import annotations

GIB = 2**30

HEAD_CHUNK = 256
"""Trained positions per LM-head chunk (``token_logprobs``' ``chunk_tokens`` default)."""

LAYER_BYTES_PER_TOKEN = {
    # (per hidden unit, per intermediate unit, per key/value width unit); + 4 bytes per attention head (the
    # attention's log-sum-exp). Counted with torch.autograd.graph.saved_tensors_hooks over transformers'
    # Llama decoder layer (sdpa attention, no weights counted); tests/test_plan.py recounts it.
    "fp32": (32, 16, 8),  # parameters and compute in fp32
    "bf16": (20, 8, 4),  # parameters and compute in bf16 (FSDP's bf16 param_dtype); the norms save fp32 copies
    "autocast": (30, 8, 4),  # fp32 parameters under bf16 autocast: the residual stream and norms stay fp32
}
"""Bytes that one token's pass through one decoder layer saves for the backward, by compute mode."""

HEAD_AUTOGRAD_BYTES_PER_LOGIT = 24
"""A trained LM head's chunk through autograd (recomputed under checkpointing in the backward): the logits in
the compute dtype (2) and in fp32 (4), scaled by 1/T (4), the softmax for the entropy (4) and its product with
the logits (4), then the gradient in fp32 (4) and in the compute dtype (2): 24 bytes per (token, vocab) entry."""


def weight_bytes(frozen: int, trainable: int, *, frozen_bytes: int, shards: int = 1) -> float:
    """Stored weights: ``trainable`` parameters as fp32 masters (4 bytes), ``frozen`` ones at ``frozen_bytes``
    each; divided over ``shards`` processes (FSDP; 1 = a full replica)."""
    return (4 * trainable + frozen_bytes * frozen) / shards


def grad_bytes(trainable: int, *, shards: int = 1) -> float:
    """fp32 gradients of the trainable parameters (FSDP reduces them in fp32 and keeps the shard)."""
    return 4 * trainable / shards


def adamw_bytes(trainable: int, *, shards: int = 1, models: int = 1) -> float:
    """AdamW's first and second moments in fp32 (8 bytes per trainable parameter), for each of ``models``
    optimizers that hold state."""
    return 8 * trainable * models / shards


def layer_activation_bytes(
    tokens: int, *, hidden: int, intermediate: int, kv_width: int, heads: int, mode: str
) -> float:
    """What one decoder layer saves for the backward over ``tokens`` tokens (no checkpointing):
    ``tokens · (h·H + i·I + k·kv_width + 4·heads)`` with (h, i, k) from :data:`LAYER_BYTES_PER_TOKEN[mode]`
    (``fp32``, ``bf16`` or ``autocast``: fp32 weights under bf16 autocast)."""
    h, i, k = LAYER_BYTES_PER_TOKEN[mode]
    return tokens * (h * hidden + i * intermediate + k * kv_width + 4 * heads)


def backbone_activation_bytes(
    tokens: int, *, layers: int, checkpointed: int, layer_bytes: float, hidden: int, residual_bytes: int
) -> float:
    """The backbone's activations at the backward's peak for one micro-batch of ``tokens`` tokens.

    A checkpointed layer keeps only its input (``tokens · hidden · residual_bytes``) and recomputes the rest
    in the backward, one layer at a time (``layer_bytes`` once); the other ``layers - checkpointed`` keep
    ``layer_bytes`` each. The final norm saves its input and output, and the backward carries the residual
    stream's gradient plus one branch's (3 more ``tokens · hidden`` fp32 tensors)."""
    stream = tokens * hidden
    kept = checkpointed * stream * residual_bytes + (layers - checkpointed) * layer_bytes
    recompute = layer_bytes if checkpointed else 0.0
    return kept + recompute + 2 * stream * residual_bytes + 3 * stream * 4


def head_bytes(
    trained: int, *, vocab: int, hidden: int, chunk: int = HEAD_CHUNK, trained_head: bool, low_precision: bool
) -> float:
    """The LM head's peak for ``trained`` trained positions (``rema.train.logprobs.token_logprobs``).

    The selected hidden states (``trained · hidden`` fp32) feed chunks of ``c = min(chunk, trained)``
    positions. A trained head (full fine-tuning) runs each chunk through autograd under checkpointing:
    :data:`HEAD_AUTOGRAD_BYTES_PER_LOGIT` per (position, vocab) entry of one chunk. A frozen head (LoRA) runs
    the fused function: one fp32 (c × V) logits buffer, a 16-bit one when the head computes in bf16, and
    then (``keep_probs``) an fp32 softmax buffer plus the kept softmax of *every* trained position in bf16
    (``trained · V · 2``) for the backward."""
    c = min(chunk, trained)
    selected = trained * hidden * 4
    if trained_head:
        return selected + HEAD_AUTOGRAD_BYTES_PER_LOGIT * c * vocab
    if low_precision:
        return selected + (4 + 2 + 4) * c * vocab + 2 * trained * vocab
    return selected + 4 * c * vocab


def kv_cache_bytes(sequences: int, context: int, *, layers: int, kv_width: int, dtype_bytes: int) -> float:
    """Keys and values of ``sequences`` sequences of ``context`` tokens: ``2 · layers · kv_width`` numbers
    per token."""
    return sequences * context * 2 * layers * kv_width * dtype_bytes
