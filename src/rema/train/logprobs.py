"""Per-token log-probs (and entropy) of given ids under a model, without materialising (B, T, V) logits.

The backbone runs once over the rows. The LM head and log-softmax then run only on the positions that are
asked for (the trained tokens: typically a third of a multi-turn row, the rest being prompts and the other
agent's messages), in chunks, each wrapped in activation checkpointing when gradients are needed. Peak
memory holds one chunk of logits (``chunk_tokens × V``) instead of all of them — at V = 49k and 4k
tokens per row that is the difference between 0.8 GB per row and a few MB — and the head's FLOPs (a
fifth of SmolLM2's forward) are spent only where the loss needs them.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


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


def token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    positions: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_tokens: int = 256,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each token given its prefix, under ``log_softmax(logits / temperature)``.

    Args:
        input_ids: (B, T) right-padded ids.
        attention_mask: (B, T), 1 on real tokens.
        positions: (B, T) bool/0-1, the columns to score (e.g. the training mask); None = every column.
        chunk_tokens: logits are computed for this many positions at a time.
    Returns:
        ``(logp, entropy)``, both (B, T) float32 in original positions: column i scores ``input_ids[:, i]``
        given ``input_ids[:, :i]``; columns not asked for (and column 0) are 0. ``entropy`` (of the
        next-token distribution that produced column i) is None unless ``with_entropy``.
    """
    backbone, head = _backbone_and_head(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    want = torch.zeros_like(input_ids, dtype=torch.bool)
    want[:, 1:] = True if positions is None else positions[:, 1:].bool()
    want &= attention_mask.bool()
    rows, cols = want.nonzero(as_tuple=True)  # (K,) each: column c is predicted from hidden[c - 1]
    h_sel, t_sel = hidden[rows, cols - 1], input_ids[rows, cols]  # (K, H), (K,)
    inv_temp = 1.0 / temperature if temperature > 0 else 1.0
    logps, ents = [], []
    for s in range(0, h_sel.shape[0], chunk_tokens):
        h, t = h_sel[s:s + chunk_tokens], t_sel[s:s + chunk_tokens]
        if torch.is_grad_enabled() and h.requires_grad:
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
