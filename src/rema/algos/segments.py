"""Masked reductions and turn segments: the index plumbing every loss and estimator shares.

How we choose among the paper and the authors' code (https://github.com/ziyuwan/ReMA-public):

1. A *turn* is the set of trained tokens (``mask == 1``) of one row that share a ``turn_id``; it is
   identified by ``(row, turn_id)``. Tokens with ``mask == 0`` belong to no turn, whatever their
   ``turn_id`` says (conventionally -1). The authors' code builds a dense ``(B, T, max_turns)``
   one-hot tensor per step; we compact the ``(row, turn_id)`` pairs (a ``bincount`` over
   ``row * (max_turn_id + 1) + turn_id``, or a sort when turn ids are huge) and reduce with
   ``index_add`` into ``K`` turn slots, so memory is O(B·T), not O(B·T·max_turns).
2. Untrained positions are routed to one extra "dump" slot (index ``K``) that is dropped, so no
   boolean indexing is needed and garbage (NaN, inf) at padded positions can never leak into a turn.
3. ``masked_whiten`` divides by ``std + eps`` with the *unbiased* (Bessel-corrected) std, matching the
   GRPO convention in this package, and returns exact zeros when every value is equal.

Shapes: B rows (one agent's trajectory of one episode each), T tokens, K turns in the batch.
``mask`` is 1 (or True) on tokens the row's agent sampled (trained tokens), 0 elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = [
    "TurnIndex",
    "turn_index",
    "segment_sum",
    "segment_mean",
    "masked_sum",
    "masked_mean",
    "masked_whiten",
]


class TurnIndex(NamedTuple):
    """Compact index of the turns in a ``(B, T)`` batch (build it with :func:`turn_index`).

    Turns are numbered ``0..K-1`` in ``(row, turn_id)`` order.
    """

    token_turn: torch.Tensor
    """(B, T) long: the turn slot of each token; ``K`` (the dump slot) where ``mask == 0``."""
    turn_row: torch.Tensor
    """(K,) long: the row each turn belongs to."""
    turn_count: torch.Tensor
    """(K,) long: number of trained tokens in each turn (always >= 1)."""
    num_turns: int
    """K, the number of turns in the batch."""
    num_rows: int
    """B, the number of rows (including rows without any trained token)."""


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"{names} must be 2-D tensors of equal shape (B, T); got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def turn_index(mask: torch.Tensor, turn_ids: torch.Tensor) -> TurnIndex:
    """Number the turns of a batch.

    Args:
        mask: (B, T) bool/int/float, 1 on trained tokens.
        turn_ids: (B, T) long, turn index of each token within its row; must be >= 0 where
            ``mask == 1`` (ignored elsewhere).

    Returns:
        A :class:`TurnIndex`. Raises ``ValueError`` if a trained token has a negative turn id.
    """
    _check_pair(mask, turn_ids, "mask and turn_ids")
    m = mask.bool()
    B, T = m.shape
    tid = torch.where(m, turn_ids.long(), torch.zeros((), dtype=torch.long, device=m.device))
    if bool((tid < 0).any()):
        raise ValueError("turn_ids must be >= 0 on every trained token (mask == 1)")
    stride = int(tid.max()) + 1 if tid.numel() else 1
    rows = torch.arange(B, device=m.device).unsqueeze(1)  # (B, 1)
    n_slots = B * stride  # one slot per possible (row, turn_id); the sentinel n_slots sorts last
    key = torch.where(m, rows * stride + tid, torch.full((), n_slots, dtype=torch.long, device=m.device))  # (B, T)
    if n_slots <= max(4 * key.numel(), 1 << 16):
        # Dense path (turn ids are small integers, the usual case): count per slot, keep the occupied
        # slots in order. O(B*T + n_slots), no sort.
        counts = torch.bincount(key.reshape(-1), minlength=n_slots + 1)[:n_slots]  # (n_slots,)
        slots = (counts > 0).nonzero().squeeze(1)  # (K,) occupied slots, ascending = (row, turn_id) order
        K = slots.numel()
        compact = torch.full((n_slots + 1,), K, dtype=torch.long, device=m.device)  # sentinel -> dump slot K
        compact[slots] = torch.arange(K, device=m.device)
        return TurnIndex(compact[key], slots // stride, counts[slots], K, B)
    # Sparse path (huge turn ids): compact with a sort.
    uniq, inverse, counts = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
    has_dump = bool(uniq.numel() > 0 and uniq[-1] == n_slots)
    K = uniq.numel() - int(has_dump)
    return TurnIndex(
        token_turn=inverse.reshape(B, T),  # the sentinel maps to slot K exactly because it sorts last
        turn_row=uniq[:K] // stride,
        turn_count=counts[:K],
        num_turns=K,
        num_rows=B,
    )


def segment_sum(values: torch.Tensor, turns: TurnIndex) -> torch.Tensor:
    """Sum ``values`` over the trained tokens of each turn.

    Args:
        values: (B, T) float. Values at untrained positions are ignored (even NaN/inf).
        turns: index from :func:`turn_index` for the same batch.

    Returns:
        (K,) per-turn sums, differentiable w.r.t. ``values``.
    """
    out = values.new_zeros(turns.num_turns + 1)  # +1: dump slot for untrained tokens
    out = out.index_add(0, turns.token_turn.reshape(-1), values.reshape(-1))
    return out[: turns.num_turns]


def segment_mean(values: torch.Tensor, turns: TurnIndex) -> torch.Tensor:
    """Mean of ``values`` over the trained tokens of each turn. values: (B, T) -> (K,)."""
    return segment_sum(values, turns) / turns.turn_count.to(values.dtype)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` (any shape) where ``mask`` (same shape) is 1; masked-out NaN/inf are ignored."""
    return torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (both the same shape, e.g. (B, T)); 0 if the mask is empty."""
    n = mask.bool().sum().clamp(min=1).to(values.dtype)
    return masked_sum(values, mask) / n


def masked_whiten(
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps: float = 1e-6,
    shift_mean: bool = True,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Standardise ``values`` over the positions where ``mask`` is 1.

    ``(x - mean) / (std + eps)`` with mean and unbiased std taken over the masked positions only
    (std is 0 when fewer than two positions are masked). Untrained positions come back as 0.

    Args:
        values: (B, T) float.
        mask: (B, T), 1 on the positions to standardise over.
        eps: added to the std, so equal values give exact zeros instead of NaN.
        shift_mean: subtract the mean (``False`` only rescales, keeping the sign of each value).
        all_reduce: ``t -> sum of t over the processes`` when the batch is split across data-parallel
            processes: the count, the sum and the centred sum of squares are summed before dividing, so every
            process whitens with the moments of the whole batch (two passes, as on one process). None: this
            process holds the whole batch.

    Returns:
        (B, T) whitened values, 0 where ``mask == 0``.
    """
    total = (lambda t: t) if all_reduce is None else all_reduce
    m = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    n = total(m.sum())
    mean = total(masked_sum(values, m)) / n.clamp(min=1).to(values.dtype)
    centred = torch.where(m, values - mean, zero)
    var = total((centred * centred).sum()) / (n - 1).clamp(min=1).to(values.dtype)
    out = centred if shift_mean else torch.where(m, values, zero)
    return out / (var.sqrt() + eps)
