"""Per-token log-probs (and entropy) of given ids under a model, without materialising (B, T, V) logits.

The backbone runs once; the LM head and log-softmax run over chunks of positions, each chunk wrapped in
activation checkpointing when gradients are needed, so peak memory holds one chunk of logits
(``chunk × V``) instead of all of them — at V = 49k and T = 4k that is the difference between 0.8 GB and
a few MB per row.
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
    logits = head(hidden).float() * inv_temp  # (B, C, V)
    logz = torch.logsumexp(logits, dim=-1)  # (B, C)
    logp = logits.gather(-1, targets[..., None]).squeeze(-1) - logz
    if not with_entropy:
        return logp, torch.zeros_like(logp)
    probs = torch.softmax(logits, dim=-1)
    entropy = logz - (probs * logits).sum(-1)
    return logp, entropy


def token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 256,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each token given its prefix, under ``log_softmax(logits / temperature)``.

    Args:
        input_ids: (B, T) right-padded ids.
        attention_mask: (B, T), 1 on real tokens.
    Returns:
        ``(logp, entropy)``, both (B, T) float32 in original positions: column i scores ``input_ids[:, i]``;
        column 0 is 0. ``entropy`` (of the next-token distribution that produced column i) is None unless
        ``with_entropy``.
    """
    backbone, head = _backbone_and_head(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    hidden = hidden[:, :-1]  # (B, T-1, H): position i predicts token i+1
    targets = input_ids[:, 1:]
    inv_temp = 1.0 / temperature if temperature > 0 else 1.0
    logps, ents = [], []
    for s in range(0, hidden.shape[1], chunk_size):
        h, t = hidden[:, s:s + chunk_size], targets[:, s:s + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            lp, en = checkpoint(_chunk_logp, head, h, t, inv_temp, with_entropy, use_reentrant=False)
        else:
            lp, en = _chunk_logp(head, h, t, inv_temp, with_entropy)
        logps.append(lp)
        ents.append(en)
    zero = hidden.new_zeros((input_ids.shape[0], 1), dtype=torch.float32)
    logp = torch.cat([zero, *logps], dim=1)
    entropy = torch.cat([zero, *ents], dim=1) if with_entropy else None
    return logp, entropy
