"""Per-token log-probs (and entropy) of given ids under a model, without materialising (B, T, V) logits.

The backbone runs once over the rows. The LM head and log-softmax then run only on the positions that are
asked for (the trained tokens: typically a third of a multi-turn row, the rest being prompts and the other
agent's messages), in chunks. Peak memory holds one chunk of logits (``chunk_tokens × V``) instead of all
of them — at V = 49k and 4k tokens per row that is the difference between 0.8 GB per row and a few MB —
and the head's FLOPs (a fifth of SmolLM2's forward) are spent only where the loss needs them.

When the head is frozen (LoRA) and the entropy is only reported, each chunk is one autograd function
(:class:`_HeadLogp`): the forward computes log-probs and the entropy without building a graph and keeps
only the chunk's hidden states and ``logsumexp``; the backward recomputes the logits once and forms the
gradient ``(onehot - softmax) / T`` by hand. The head's weight is cast to the autocast dtype once per call,
not once per chunk. Measured on the embedded model (bf16, 2 CPU cores, ``bench/update_speed.py``): an
update of 8 rows of ~150 tokens took 7.7 s through autograd and 5.4-5.9 s this way. Otherwise (a trained
head, or an entropy bonus in the loss) each chunk runs through autograd under activation checkpointing.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from .packed_attention import NAME as PACKED_ATTENTION


def _backbone_and_head(model):
    """(backbone, lm_head) of a causal LM, through a peft wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    return backbone, base.get_output_embeddings()


def _chunk_logp(head, hidden: torch.Tensor, targets: torch.Tensor, inv_temp: float, with_entropy: bool):
    """hidden (K, H), targets (K,) -> logp (K,), entropy (K,)."""
    logits = head(hidden).float() * inv_temp  # (K, V)
    logz = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - logz
    if not with_entropy:
        return logp, torch.zeros_like(logp)
    entropy = logz - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logp, entropy


class _HeadLogp(torch.autograd.Function):
    """hidden (K, H), weight (V, H) in the compute dtype, targets (K,) -> logp (K,), entropy (K,), both fp32.

    Gradient to ``hidden`` only (the head is frozen); the entropy is not differentiable."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, inv_temp: float, with_entropy: bool):
        logits = (hidden.to(weight.dtype) @ weight.T).float()  # (K, V); in place from here: at most two
        if inv_temp != 1.0:                                      # (K, V) fp32 buffers are alive at once
            logits.mul_(inv_temp)
        logz = torch.logsumexp(logits, dim=-1)
        logp = logits.gather(-1, targets[:, None]).squeeze(-1) - logz
        if with_entropy:
            entropy = logz - (logits - logz[:, None]).exp_().mul_(logits).sum(-1)
        else:
            entropy = torch.zeros_like(logp)
        ctx.save_for_backward(hidden, weight, targets, logz)
        ctx.inv_temp = inv_temp
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, _grad_entropy):
        hidden, weight, targets, logz = ctx.saved_tensors
        logits = (hidden.to(weight.dtype) @ weight.T).float()
        if ctx.inv_temp != 1.0:
            logits.mul_(ctx.inv_temp)
        grad = logits.sub_(logz[:, None]).exp_().mul_(-grad_logp[:, None])  # -softmax * g
        grad.scatter_add_(-1, targets[:, None], grad_logp[:, None])  # + onehot * g
        grad_hidden = (grad.mul_(ctx.inv_temp).to(weight.dtype) @ weight).to(hidden.dtype)
        return grad_hidden, None, None, None, None


def _compute_weight(head, hidden: torch.Tensor) -> torch.Tensor:
    """The head's weight in the dtype its matmul runs in: the autocast dtype where autocast is on, else the
    hidden states' (a weight stored in bf16 under an fp32 model is cast up, as ``_StoredLowLinear`` does)."""
    w = head.weight.detach()
    if not w.is_floating_point():
        return w
    if torch.is_autocast_enabled(hidden.device.type):
        return w.to(torch.get_autocast_dtype(hidden.device.type))
    return w.to(hidden.dtype)


def token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    positions: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_tokens: int = 256,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    pack: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each token given its prefix, under ``log_softmax(logits / temperature)``.

    Args:
        input_ids: (B, T) right-padded ids.
        attention_mask: (B, T), 1 on real tokens.
        positions: (B, T) bool/0-1, the columns to score (e.g. the training mask); None = every column.
        chunk_tokens: logits are computed for this many positions at a time.
        entropy_grad: the entropy takes part in the loss (an entropy bonus), so it needs a gradient.
        pack: the rows packed around shared prefixes (``rema.train.batch.pack_units``): the backbone runs on
            the packed sequences and each token is read back from its place there. Same results as unpacked.
            A model switched to ``rema.train.packed_attention`` computes the packs' attention per segment.
    Returns:
        ``(logp, entropy)``, both (B, T) float32 in original positions: column i scores ``input_ids[:, i]``
        given ``input_ids[:, :i]``; columns not asked for (and column 0) are 0. ``entropy`` (of the
        next-token distribution that produced column i) is None unless ``with_entropy``.
    """
    backbone, head = _backbone_and_head(model)
    if pack is None:
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        place = torch.arange(input_ids.numel(), device=input_ids.device).view(input_ids.shape)
    else:
        layout = {}  # the per-segment attention takes the pack's layout (other implementations ignore it)
        if getattr(backbone.config, "_attn_implementation", None) == PACKED_ATTENTION:
            layout["rema_segments"] = pack["segments"]
        hidden = backbone(input_ids=pack["input_ids"], attention_mask=pack["attention_mask"],
                          position_ids=pack["position_ids"], use_cache=False, **layout).last_hidden_state
        place = pack["index"]  # (B, T) -> row of hidden.flatten(0, 1)
    want = torch.zeros_like(input_ids, dtype=torch.bool)
    want[:, 1:] = True if positions is None else positions[:, 1:].bool()
    want &= attention_mask.bool()
    rows, cols = want.nonzero(as_tuple=True)  # (K,) each: column c is predicted from hidden[c - 1]
    h_sel, t_sel = hidden.flatten(0, 1)[place[rows, cols - 1]], input_ids[rows, cols]  # (K, H), (K,)
    inv_temp = 1.0 / temperature if temperature > 0 else 1.0
    fused = not (entropy_grad and with_entropy) and not (torch.is_grad_enabled() and head.weight.requires_grad)
    weight = _compute_weight(head, hidden) if fused else None
    logps, ents = [], []
    for s in range(0, h_sel.shape[0], chunk_tokens):
        h, t = h_sel[s:s + chunk_tokens], t_sel[s:s + chunk_tokens]
        if fused:
            lp, en = _HeadLogp.apply(h, weight, t, inv_temp, with_entropy)
        elif torch.is_grad_enabled() and h.requires_grad:
            lp, en = checkpoint(_chunk_logp, head, h, t, inv_temp, with_entropy, use_reentrant=False)
        else:
            lp, en = _chunk_logp(head, h, t, inv_temp, with_entropy)
        logps.append(lp)
        ents.append(en)
    logp = hidden.new_zeros(input_ids.shape, dtype=torch.float32)
    logp = logp.index_put((rows, cols), torch.cat(logps) if logps else logp.new_zeros(0))
    entropy = None
    if with_entropy:
        entropy = hidden.new_zeros(input_ids.shape, dtype=torch.float32)
        entropy = entropy.index_put((rows, cols), torch.cat(ents) if ents else entropy.new_zeros(0))
    return logp, entropy
