"""Clipped policy-gradient loss with token- or turn-level importance ratios, and loss aggregation.

How we depart from / choose among the paper and the authors' code (https://github.com/ziyuwan/ReMA-public,
``compute_policy_loss`` in ``src/verl/verl/rema_trainer/ppo/core_algos.py``; docs/design.md §4 and §9):

1. Turn-level ratio, both forms selectable: ``ratio_mean="geometric"`` (the authors' code, our default):
   ``r = exp(clamp(mean_turn(log pi - log pi_old), -c, c))``; ``"arithmetic"`` (the paper's formula):
   ``r = mean_turn(exp(clamp(log pi - log pi_old, -c, c)))``. The turn is clipped once; its advantage is
   the mean of its tokens' advantages.
2. The log-ratio clamp is symmetric, ``[-c, c]`` (c = ``log_ratio_clamp`` = 3). The authors' code clamps only
   from above; a ratio below e^-3 ≈ 0.05 is already far outside the trust region and clipped anyway,
   and the symmetric clamp keeps ``exp`` finite when the new policy all but rules a token out.
3. Dual clip (c = 3) for negative advantages, as in the authors' code: the loss of a token/turn with A < 0 is
   at most ``-A * dual_clip``, so one wildly off-policy sample cannot dominate the batch.
4. ``trajectory`` aggregation is mean over turns within a row, then over rows *that have a trained
   token*. The authors' code averages tokens (not turns) within a row for token-level ratios and averages
   over all rows (an agent row with no trained token dilutes the loss); ``turn`` matches it.
5. Aggregation lives in one function, :func:`aggregate`, over a per-token ``(B, T)`` loss. For
   turn-level ratios the per-turn loss is written onto each of the turn's tokens first; since it is
   constant over the turn, the turn mean of those tokens is exactly the turn's loss.
6. ``approx_kl`` is Schulman's k3 estimate of KL(pi_old || pi) from the sampled tokens, ``mean((r - 1) -
   log r)`` with ``r = pi / pi_old`` (per token, log-ratio clamped to ±20 only to stay finite); it is
   >= 0 per token, unlike the authors' k1 (``mean(-log r)``), which can go negative.
7. Statistics are shares of the *units the loss clips*: tokens for token-level ratios, turns for
   turn-level ratios (``log_ratio_clip_frac`` for the arithmetic turn ratio counts tokens, since that is
   where the clamp acts). The counts ``num_tokens``, ``num_turns``, ``num_rows`` are returned so a caller
   that accumulates micro-batches can re-weight them to the normalisation of the full batch.

Shapes: B rows (one agent's trajectory of one episode each), T tokens, K turns. ``mask`` is 1 on the
tokens the row's agent sampled (the trained tokens) and 0 on prompt, the other agent's text, template
glue and padding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from rema.algos.segments import TurnIndex, masked_mean, segment_mean, turn_index

__all__ = ["AGG_MODES", "RATIO_LEVELS", "RATIO_MEANS", "aggregate", "ppo_surrogate", "policy_loss"]

AGG_MODES = ("token", "turn", "trajectory")
RATIO_LEVELS = ("token", "turn")
RATIO_MEANS = ("geometric", "arithmetic")

Stats = dict[str, torch.Tensor]


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(repr(v) for v in valid)}")


def aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    turn_ids: torch.Tensor | None = None,
    *,
    turns: TurnIndex | None = None,
) -> torch.Tensor:
    """Reduce a per-token quantity (a loss, a KL, an entropy) to a scalar. Owns all normalisation.

    Modes:
        ``token``: mean over all trained tokens of the batch.
        ``turn``: mean over all turns of the batch of (mean over the turn's trained tokens).
        ``trajectory``: per row, mean over its turns of the turn means; then mean over the rows that
        have at least one trained token.
    An empty mask gives 0 (still attached to the graph of ``values``).

    Args:
        values: (B, T) float per-token values; untrained positions are ignored (even NaN/inf).
        mask: (B, T), 1 on trained tokens.
        mode: one of :data:`AGG_MODES`.
        turn_ids: (B, T) long turn index within the row; needed for ``turn``/``trajectory`` unless
            ``turns`` is given.
        turns: a precomputed :func:`~rema.algos.segments.turn_index` of (mask, turn_ids), to reuse.

    Returns:
        0-dim tensor.
    """
    _choice("mode", mode, AGG_MODES)
    if values.shape != mask.shape or values.dim() != 2:
        raise ValueError(
            f"values and mask must be (B, T) of equal shape; got {tuple(values.shape)}, {tuple(mask.shape)}"
        )
    m = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    if mode == "token":
        return torch.where(m, values, zero).sum() / m.sum().clamp(min=1).to(values.dtype)
    if turns is None:
        if turn_ids is None:
            raise ValueError(f"aggregate(mode={mode!r}) needs turn_ids (or a precomputed turns index)")
        turns = turn_index(m, turn_ids)
    turn_means = segment_mean(values, turns)  # (K,)
    if mode == "turn":
        return turn_means.sum() / max(turns.num_turns, 1)
    # trajectory: (K,) -> (B,) row means over turns -> mean over rows that have any turn
    ones = torch.ones_like(turn_means)
    row_sum = values.new_zeros(turns.num_rows).index_add(0, turns.turn_row, turn_means)  # (B,)
    row_turns = values.new_zeros(turns.num_rows).index_add(0, turns.turn_row, ones)  # (B,)
    has_turn = row_turns > 0
    row_mean = row_sum / row_turns.clamp(min=1)
    return row_mean.sum() / has_turn.sum().clamp(min=1).to(values.dtype)


def ppo_surrogate(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_eps: float,
    clip_eps_high: float,
    dual_clip: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Elementwise dual-clip PPO surrogate loss (to minimise).

    ``pg_loss1 = -A r``, ``pg_loss2 = -A clip(r, 1 - clip_eps, 1 + clip_eps_high)``,
    ``loss = max(pg_loss1, pg_loss2)``, and for ``A < 0``: ``loss = min(loss, -A * dual_clip)``.

    Args:
        ratio: (...) importance ratios pi/pi_old (per token or per turn).
        advantages: (...) same shape.

    Returns:
        loss (...), is_clipped (...) bool (``pg_loss2 > pg_loss1``: the clipped branch is taken),
        is_dual_clipped (...) bool (``A < 0`` and the dual-clip bound is taken).
    """
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps_high)
    clipped_loss = torch.maximum(pg_loss1, pg_loss2)
    is_clipped = pg_loss2 > pg_loss1
    if dual_clip is None:
        return clipped_loss, is_clipped, torch.zeros_like(is_clipped)
    pg_loss3 = -advantages * dual_clip
    negative = advantages < 0
    is_dual = negative & (clipped_loss > pg_loss3)
    loss = torch.where(negative, torch.minimum(clipped_loss, pg_loss3), clipped_loss)
    return loss, is_clipped, is_dual


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    turn_ids: torch.Tensor,
    *,
    ratio_level: str = "token",
    ratio_mean: str = "geometric",
    agg: str = "trajectory",
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    dual_clip: float | None = 3.0,
    log_ratio_clamp: float | None = 3.0,
) -> tuple[torch.Tensor, Stats]:
    """Dual-clip PPO policy loss with token- or turn-level ratios.

    Token level (``ratio_level="token"``): per token ``r = exp(clamp(logp - old_logp, -c, c))`` and the
    :func:`ppo_surrogate` loss with the token's advantage.
    Turn level (``ratio_level="turn"``): one ratio per turn (``ratio_mean`` picks the geometric or the
    arithmetic mean over the turn's trained tokens, see the module notes), clipped once, with the turn's
    advantage = mean of its tokens' advantages. Gradients reach every token of the turn through the mean.
    The per-token (or per-turn) loss is then reduced by :func:`aggregate` with ``mode=agg``.

    Args:
        logp: (B, T) float log-probs of the sampled tokens under the policy being trained (with grad);
            pass float32 (not bf16): turn means and the ratio are computed in ``logp``'s dtype.
        old_logp: (B, T) float log-probs under the sampling policy (treated as constants).
        advantages: (B, T) float per-token advantages (treated as constants).
        mask: (B, T), 1 on trained tokens. Values at untrained positions of the other tensors are ignored.
        turn_ids: (B, T) long turn index of each token within its row (>= 0 on trained tokens).
        ratio_level: ``"token"`` or ``"turn"``.
        ratio_mean: ``"geometric"`` (the authors' code) or ``"arithmetic"`` (paper); turn level only.
        agg: ``"token"``, ``"turn"`` or ``"trajectory"``; ``"token"`` is invalid with turn-level ratios.
        clip_eps: lower clip range, ratio >= 1 - clip_eps (0 < clip_eps < 1).
        clip_eps_high: upper clip range, ratio <= 1 + clip_eps_high; defaults to ``clip_eps``.
        dual_clip: bound c > 1 on the loss for negative advantages (``-A * c``); None disables.
        log_ratio_clamp: c > 0, the (token or turn-mean) log-ratio is clamped to [-c, c]; None disables.

    Returns:
        loss: 0-dim tensor to minimise.
        stats: detached 0-dim tensors — ``clip_frac``, ``clip_frac_lower`` (dual clip taken),
        ``log_ratio_clip_frac``, ``approx_kl`` (k3, see module notes), ``ratio_mean``, ``ratio_max``,
        ``ratio_min``, ``num_tokens``, ``num_turns``, ``num_rows`` (rows with a trained token).
    """
    clip_eps_high = _check_args(
        logp,
        old_logp,
        advantages,
        mask,
        turn_ids,
        ratio_level=ratio_level,
        ratio_mean=ratio_mean,
        agg=agg,
        clip_eps=clip_eps,
        clip_eps_high=clip_eps_high,
        dual_clip=dual_clip,
        log_ratio_clamp=log_ratio_clamp,
    )
    m = mask.bool()
    dtype = logp.dtype
    zero = torch.zeros((), dtype=dtype, device=logp.device)
    # Sanitise first: untrained positions become exact zeros, so padding garbage (NaN, inf) can reach
    # neither the loss nor its gradient.
    log_ratio = torch.where(m, logp - old_logp.detach().to(dtype), zero)  # (B, T)
    adv = torch.where(m, advantages.detach().to(dtype), zero)  # (B, T)
    turns = turn_index(m, turn_ids)
    surrogate = dict(clip_eps=clip_eps, clip_eps_high=clip_eps_high, dual_clip=dual_clip)
    if ratio_level == "token":
        units = _token_units(log_ratio, adv, m, c=log_ratio_clamp, surrogate=surrogate)
    else:
        units = _turn_units(
            log_ratio, adv, m, turns, c=log_ratio_clamp, geometric=ratio_mean == "geometric", surrogate=surrogate
        )
    loss = aggregate(units.loss_tok, m, agg, turns=turns)
    return loss, _loss_stats(units, log_ratio, m, turns)


class _Units(NamedTuple):
    """What the surrogate computed over the units the loss clips (tokens, or turns), for the loss and its stats."""

    loss_tok: torch.Tensor
    """(B, T) per-token loss (a turn's loss written onto each of its tokens; 0 off-mask)."""
    is_clipped: torch.Tensor
    """Per unit: the clipped branch is taken."""
    is_dual: torch.Tensor
    """Per unit: ``A < 0`` and the dual-clip bound is taken."""
    unit_mask: torch.Tensor
    """Per unit: which units count (trained tokens; every turn)."""
    unit_ratio: torch.Tensor
    """Per unit: the importance ratio."""
    clamped: torch.Tensor
    """Where the log-ratio clamp acted (tokens, or turns for the geometric turn ratio)."""
    clamped_mask: torch.Tensor
    """Which entries of ``clamped`` count."""


def _check_args(
    logp,
    old_logp,
    advantages,
    mask,
    turn_ids,
    *,
    ratio_level: str,
    ratio_mean: str,
    agg: str,
    clip_eps: float,
    clip_eps_high: float | None,
    dual_clip: float | None,
    log_ratio_clamp: float | None,
) -> float:
    """Refuse :func:`policy_loss`'s invalid arguments (each error names the argument and its valid range);
    returns ``clip_eps_high`` with its default (``clip_eps``) filled in."""
    _choice("ratio_level", ratio_level, RATIO_LEVELS)
    _choice("ratio_mean", ratio_mean, RATIO_MEANS)
    _choice("agg", agg, AGG_MODES)
    if ratio_level == "turn" and agg == "token":
        raise ValueError(
            "agg='token' cannot be used with ratio_level='turn': a turn-level ratio yields one loss per "
            "turn, and averaging it over tokens would weight each turn by its length — the length bias "
            "turn-level ratios are meant to remove. Use agg='turn' or agg='trajectory'."
        )
    for name, t in (("old_logp", old_logp), ("advantages", advantages), ("mask", mask), ("turn_ids", turn_ids)):
        if t.shape != logp.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected logp's shape {tuple(logp.shape)}")
    if logp.dim() != 2:
        raise ValueError(f"logp must be (B, T), got shape {tuple(logp.shape)}")
    if not 0.0 < clip_eps < 1.0:
        raise ValueError(f"clip_eps must be in (0, 1), got {clip_eps}")
    clip_eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    if clip_eps_high < 0.0:
        raise ValueError(f"clip_eps_high must be >= 0, got {clip_eps_high}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None to disable), got {dual_clip}")
    if log_ratio_clamp is not None and log_ratio_clamp <= 0.0:
        raise ValueError(f"log_ratio_clamp must be > 0 (or None to disable), got {log_ratio_clamp}")
    return clip_eps_high


def _clamp(x: torch.Tensor, c: float | None) -> torch.Tensor:
    """``x`` clamped to ``[-c, c]``; unchanged when ``c`` is None."""
    return x.clamp(-c, c) if c is not None else x


def _token_units(
    log_ratio: torch.Tensor, adv: torch.Tensor, m: torch.Tensor, *, c: float | None, surrogate: dict
) -> _Units:
    """Token-level ratios: ``r = exp(clamp(log pi - log pi_old, -c, c))`` per token (B, T), each with its own
    advantage; statistics are over the trained tokens."""
    ratio = torch.exp(_clamp(log_ratio, c))  # (B, T); exactly 1 on untrained tokens
    loss_tok, is_clipped, is_dual = ppo_surrogate(ratio, adv, **surrogate)  # (B, T) each; 0 off-mask as adv = 0
    clamped = log_ratio.abs() > c if c is not None else torch.zeros_like(m)
    return _Units(loss_tok, is_clipped, is_dual, unit_mask=m, unit_ratio=ratio, clamped=clamped, clamped_mask=m)


def _turn_units(
    log_ratio: torch.Tensor,
    adv: torch.Tensor,
    m: torch.Tensor,
    turns: TurnIndex,
    *,
    c: float | None,
    geometric: bool,
    surrogate: dict,
) -> _Units:
    """Turn-level ratios (K turns): the geometric ``exp(clamp(mean_turn(log r)))`` or the arithmetic
    ``mean_turn(exp(clamp(log r)))`` (module note 1), clipped once with the turn's mean advantage; the turn's
    loss is written onto its tokens; statistics are over turns."""
    adv_turn = segment_mean(adv, turns)  # (K,)
    if geometric:
        mean_log_ratio = segment_mean(log_ratio, turns)  # (K,)
        unit_ratio = torch.exp(_clamp(mean_log_ratio, c))
        clamped = mean_log_ratio.abs() > c if c is not None else torch.zeros_like(adv_turn, dtype=torch.bool)
        clamped_mask = torch.ones_like(clamped)
    else:
        unit_ratio = segment_mean(torch.exp(_clamp(log_ratio, c)), turns)  # (K,)
        clamped = log_ratio.abs() > c if c is not None else torch.zeros_like(m)
        clamped_mask = m
    loss_turn, is_clipped, is_dual = ppo_surrogate(unit_ratio, adv_turn, **surrogate)  # (K,) each
    # Write each turn's loss onto its tokens (slot K, the dump for untrained tokens, holds 0).
    zero = torch.zeros((), dtype=log_ratio.dtype, device=log_ratio.device)
    loss_tok = torch.cat([loss_turn, zero.reshape(1)])[turns.token_turn]  # (B, T)
    return _Units(
        loss_tok,
        is_clipped,
        is_dual,
        unit_mask=torch.ones_like(is_clipped),
        unit_ratio=unit_ratio,
        clamped=clamped,
        clamped_mask=clamped_mask,
    )


def _loss_stats(units: _Units, log_ratio: torch.Tensor, m: torch.Tensor, turns: TurnIndex) -> Stats:
    """:func:`policy_loss`'s statistics (detached 0-dim tensors): shares of the clipped units, the k3 KL
    estimate over trained tokens (module note 6), the ratios' mean/max/min and the counts."""
    dtype = log_ratio.dtype
    zero = torch.zeros((), dtype=dtype, device=log_ratio.device)
    unit_mask = units.unit_mask
    with torch.no_grad():
        lr = log_ratio.detach().clamp(-20.0, 20.0)
        k3 = torch.expm1(lr) - lr  # (r - 1) - log r >= 0; exactly 0 off-mask
        ur = units.unit_ratio.detach()
        any_unit = bool(unit_mask.any())
        return {
            "clip_frac": masked_mean(units.is_clipped.to(dtype), unit_mask),
            "clip_frac_lower": masked_mean(units.is_dual.to(dtype), unit_mask),
            "log_ratio_clip_frac": masked_mean(units.clamped.to(dtype), units.clamped_mask),
            "approx_kl": masked_mean(k3, m),
            "ratio_mean": masked_mean(ur, unit_mask),
            "ratio_max": torch.where(unit_mask, ur, -torch.inf).max() if any_unit else zero,
            "ratio_min": torch.where(unit_mask, ur, torch.inf).min() if any_unit else zero,
            "num_tokens": m.sum().to(dtype),
            "num_turns": torch.tensor(float(turns.num_turns), dtype=dtype, device=log_ratio.device),
            "num_rows": m.any(dim=1).sum().to(dtype),
        }


def sft_nll(logp: torch.Tensor, mask: torch.Tensor, n_tokens: int | None = None) -> torch.Tensor:
    """Supervised fine-tuning loss: the negative log-likelihood of the masked tokens, averaged over tokens.

    Args:
        logp: (B, T) log-prob of each token given its prefix.
        mask: (B, T) 1 on the tokens to learn (a role's own messages), 0 elsewhere.
        n_tokens: the denominator; default ``mask.sum()``. Pass the whole batch's count when summing the
            losses of micro-batches, so their sum is the token mean over the batch.
    Returns:
        A scalar: ``-sum(logp * mask) / n_tokens`` (0 when there is no masked token).
    """
    denom = float(n_tokens) if n_tokens is not None else float(mask.sum())
    return -(logp * mask).sum() / max(denom, 1.0)
