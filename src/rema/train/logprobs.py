"""Per-token log-probs (and entropy) of given ids under a model, without materialising (B, T, V) logits.

The backbone runs once over the rows. The LM head and log-softmax then run only on the positions that are
asked for (the trained tokens: typically a third of a multi-turn row, the rest being prompts and the other
agent's messages), in chunks. Peak memory holds one chunk of logits (``chunk_tokens × V``) instead of all
of them — at V = 49k and 4k tokens per row that is the difference between 0.8 GB per row and a few MB —
and the head's FLOPs (a fifth of SmolLM2's forward) are spent only where the loss needs them.

When the head is frozen (LoRA) and the entropy is only reported, each chunk is one autograd function
(:class:`_HeadLogp`): the forward computes log-probs and the entropy without building a graph and keeps
only the chunk's hidden states and ``logsumexp``; the backward recomputes the logits once and forms the
gradient ``(onehot - softmax) / T`` by hand. Where the head computes in 16 bits the forward keeps the
softmax instead (``keep_probs``: K × V × 2 bytes, 75 MB for 769 trained tokens of SmolLM2) and the backward
skips the recomputation: the head's forward and backward over those 769 tokens took 0.52-0.60 s instead of
0.76-1.13 s on 2 CPU cores. The head's weight is cast to the autocast dtype once per call, not once per
chunk, and the chunks share their (chunk × V) buffers. Measured on the embedded model (bf16, 2 CPU cores,
``bench/update_speed.py``): an update of 8 rows of ~150 tokens took 7.7 s through autograd and 5.4-5.9 s
with the function. Otherwise (a trained head, or an entropy bonus in the loss) each chunk runs through
autograd under activation checkpointing.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import checkpoint

from .packed_attention import NAME as PACKED_ATTENTION

SHARDED_METHOD = "rema_token_logprobs"
"""The method an FSDP-sharded model carries (:func:`shard_logprobs`): :func:`token_logprobs` calls the backbone
and reads the head's weight itself, so on a sharded model it runs as a forward method of the root, inside
FSDP's hooks (the root's own parameters gathered before, gradients reduce-scattered after)."""


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


class _Workspace:
    """(chunk × V) buffers reused by every chunk of one ``token_logprobs`` call, and the (K × V) softmax kept
    for the backward. Allocated once per call: under the trainer's 4 MiB mmap threshold each fresh buffer of
    this size is a new mapping whose pages fault in, which cost more than the arithmetic on them."""

    def __init__(self, rows: int, chunk: int, vocab: int, dtype: torch.dtype, device, keep: bool):
        self.chunk, self.vocab, self.device = chunk, vocab, device
        self.buffers: dict[str, torch.Tensor] = {}
        self.kept = torch.empty(rows, vocab, dtype=dtype, device=device) if keep else None

    def get(self, name: str, k: int, dtype: torch.dtype) -> torch.Tensor:
        if name not in self.buffers:
            self.buffers[name] = torch.empty(self.chunk, self.vocab, dtype=dtype, device=self.device)
        return self.buffers[name][:k]


def _logits(hidden, weight, inv_temp: float, work: _Workspace | None) -> torch.Tensor:
    """(K, V) fp32 ``hidden @ weight.T / T``, in the workspace's buffers when there is one."""
    h = hidden.to(weight.dtype)
    if work is None:
        logits = (h @ weight.T).float()
    elif weight.dtype == torch.float32:
        logits = torch.matmul(h, weight.T, out=work.get("logits", h.shape[0], torch.float32))
    else:
        low = torch.matmul(h, weight.T, out=work.get("low", h.shape[0], weight.dtype))
        logits = work.get("logits", h.shape[0], torch.float32).copy_(low)
    return logits.mul_(inv_temp) if inv_temp != 1.0 else logits


class _HeadLogp(torch.autograd.Function):
    """hidden (K, H), weight (V, H) in the compute dtype, targets (K,) -> logp (K,), entropy (K,), both fp32.

    Gradient to ``hidden`` only (the head is frozen); the entropy is not differentiable. Given ``kept`` (a
    (K, V) buffer in the weight's dtype) the forward writes the softmax there for the backward instead of
    keeping the hidden states, which then skips recomputing the logits (one (K × H × V) matmul of three) and
    forms the gradient in that buffer (so the backward runs once: ``retain_graph`` is refused); the target
    column's ``(1 - p)·g`` is taken from the fp32 log-prob (``-expm1(logp)``), not from a rounded p that
    cancels against 1 for a confident token."""

    @staticmethod
    def forward(
        ctx,
        hidden,
        weight,
        targets,
        inv_temp: float,
        with_entropy: bool,
        work: _Workspace | None = None,
        kept: torch.Tensor | None = None,
    ):
        logits = _logits(hidden, weight, inv_temp, work)  # (K, V) fp32; in place from here
        logz = torch.logsumexp(logits, dim=-1)
        logp = logits.gather(-1, targets[:, None]).squeeze(-1) - logz
        entropy = torch.zeros_like(logp)
        if kept is not None:
            logits.sub_(logz[:, None])  # log p
            p = torch.exp(logits, out=work.get("p", len(logp), torch.float32)) if work is not None else logits.exp()
            kept.copy_(p)
            if with_entropy:
                entropy = -p.mul_(logits).sum(-1)
            ctx.kept = kept  # not saved: a view of the workspace, whose later chunks bump its version
            ctx.save_for_backward(weight, targets, logp)
        else:
            if with_entropy:
                entropy = logz - (logits - logz[:, None]).exp_().mul_(logits).sum(-1)
            ctx.save_for_backward(hidden, weight, targets, logz)
        ctx.inv_temp, ctx.keep, ctx.hidden_dtype, ctx.work = inv_temp, kept is not None, hidden.dtype, work
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, _grad_entropy):
        # the buffers are let go here, not when the graph is dropped (the caller's logp holds it until its
        # next micro-batch): the kept softmax would otherwise outlive the head through the backbone's backward
        work, ctx.work = ctx.work, None
        if ctx.keep:
            probs, ctx.kept = ctx.kept, None
            if probs is None:
                raise RuntimeError(
                    "token_logprobs(keep_probs=True): the LM head's backward runs once "
                    "(its kept softmax becomes the gradient); pass keep_probs=False to retain_graph"
                )
            weight, targets, logp = ctx.saved_tensors
            g = grad_logp * ctx.inv_temp  # (K,) fp32
            grad = probs.mul_(-g[:, None].to(probs.dtype))  # -softmax * g, in the compute dtype, in place
            grad.scatter_(-1, targets[:, None], (-torch.expm1(logp) * g)[:, None].to(probs.dtype))  # (1 - p) * g
            return (grad @ weight).to(ctx.hidden_dtype), None, None, None, None, None, None
        hidden, weight, targets, logz = ctx.saved_tensors
        grad = _logits(hidden, weight, ctx.inv_temp, work)
        grad = grad.sub_(logz[:, None]).exp_().mul_(-grad_logp[:, None])  # -softmax * g
        grad.scatter_add_(-1, targets[:, None], grad_logp[:, None])  # + onehot * g
        grad_hidden = (grad.mul_(ctx.inv_temp).to(weight.dtype) @ weight).to(hidden.dtype)
        return grad_hidden, None, None, None, None, None, None


def _compute_weight(head, hidden: torch.Tensor) -> torch.Tensor:
    """The head's weight in the dtype its matmul runs in: the autocast dtype where autocast is on, else the
    hidden states' (a weight stored in bf16 under an fp32 model is cast up, as
    ``rema.models.low_precision.StoredLowLinear`` does)."""
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
    keep_probs: bool | None = None,
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
        keep_probs: with a frozen head under a gradient, keep each chunk's softmax for the backward (in the
            compute dtype: K × V × 2 bytes in bf16) instead of recomputing the logits there; None = where the
            head computes in 16 bits (fp32 would double that memory for the same matmul saved).
    Returns:
        ``(logp, entropy)``, both (B, T) float32 in original positions: column i scores ``input_ids[:, i]``
        given ``input_ids[:, :i]``; columns not asked for (and column 0) are 0. ``entropy`` (of the
        next-token distribution that produced column i) is None unless ``with_entropy``.
    """
    sharded = getattr(model, SHARDED_METHOD, None)  # a model sharded by FSDP: its hooks must run around us
    fn = sharded if sharded is not None else functools.partial(_token_logprobs, model)
    return fn(
        input_ids,
        attention_mask,
        positions=positions,
        temperature=temperature,
        chunk_tokens=chunk_tokens,
        with_entropy=with_entropy,
        entropy_grad=entropy_grad,
        pack=pack,
        keep_probs=keep_probs,
    )


def _token_logprobs(
    model,
    input_ids,
    attention_mask,
    *,
    positions=None,
    temperature=1.0,
    chunk_tokens=256,
    with_entropy=False,
    entropy_grad=False,
    pack=None,
    keep_probs=None,
):
    """:func:`token_logprobs` on a model whose parameters are all at hand."""
    backbone, head = _backbone_and_head(model)
    hidden, place = _hidden_states(backbone, input_ids, attention_mask, pack)
    want = torch.zeros_like(input_ids, dtype=torch.bool)
    want[:, 1:] = True if positions is None else positions[:, 1:].bool()
    want &= attention_mask.bool()
    rows, cols = want.nonzero(as_tuple=True)  # (K,) each: column c is predicted from hidden[c - 1]
    h_sel, t_sel = hidden.flatten(0, 1)[place[rows, cols - 1]], input_ids[rows, cols]  # (K, H), (K,)
    inv_temp = 1.0 / temperature if temperature > 0 else 1.0
    fused = not (entropy_grad and with_entropy) and not (torch.is_grad_enabled() and head.weight.requires_grad)
    weight = _compute_weight(head, hidden) if fused else None
    if keep_probs is None:
        keep_probs = weight is not None and weight.element_size() == 2
    keep_probs = keep_probs and fused and torch.is_grad_enabled() and h_sel.requires_grad
    work = None
    if fused and h_sel.shape[0]:
        work = _Workspace(
            h_sel.shape[0], min(chunk_tokens, h_sel.shape[0]), weight.shape[0], weight.dtype, weight.device, keep_probs
        )
    logps, ents = [], []
    for s in range(0, h_sel.shape[0], chunk_tokens):
        h, t = h_sel[s : s + chunk_tokens], t_sel[s : s + chunk_tokens]
        if fused:
            lp, en = _HeadLogp.apply(
                h, weight, t, inv_temp, with_entropy, work, work.kept[s : s + chunk_tokens] if keep_probs else None
            )
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


def _hidden_states(backbone, input_ids, attention_mask, pack):
    """The backbone's last hidden states over the rows (or over their packs), and ``place``: (B, T) -> the row of
    ``hidden.flatten(0, 1)`` that holds each token's state."""
    if pack is None:
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return hidden, torch.arange(input_ids.numel(), device=input_ids.device).view(input_ids.shape)
    layout = {}  # the per-segment attention takes the pack's layout (other implementations ignore it)
    if getattr(backbone.config, "_attn_implementation", None) == PACKED_ATTENTION:
        layout["rema_segments"] = pack["segments"]
    hidden = backbone(
        input_ids=pack["input_ids"],
        attention_mask=pack["attention_mask"],
        position_ids=pack["position_ids"],
        use_cache=False,
        **layout,
    ).last_hidden_state
    return hidden, pack["index"]


def shard_logprobs(model) -> None:
    """Give a model sharded with ``fully_shard`` the forward method :func:`token_logprobs` dispatches to."""
    import types

    from torch.distributed.fsdp import register_fsdp_forward_method

    setattr(model, SHARDED_METHOD, types.MethodType(_token_logprobs, model))
    register_fsdp_forward_method(model, SHARDED_METHOD)
