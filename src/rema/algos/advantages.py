"""Advantage estimators: GRPO, Dr.GRPO, RLOO and REINFORCE++, registered by name.

How we depart from / choose among the paper and the authors' code (https://github.com/ziyuwan/ReMA-public;
docs/design.md §3 and §9):

1. Groups are whatever the caller passes in ``group_ids``; ReMA groups by (question, agent), so the
   MTA's and the RA's samples of one question are normalised separately. Ids may be any integers.
2. GRPO uses the *unbiased* group std (``torch.std`` default) and ``(R - mean) / (std + eps)``, as the
   authors' code does. A group of size 1 gets advantage 0 (the authors' code divides by a std of 1 and a
   mean of 0 there, i.e. gives the raw reward, which silently mixes scales); no NaN is ever produced.
3. RLOO: ``A_i = R_i - mean_{j != i} R_j`` (= ``n/(n-1) (R_i - mean)``); size-1 groups get 0.
4. REINFORCE++ with "per-token return (gamma = 1, reset per turn)": the episode's sparse reward ``R`` is
   placed on the **last trained token of every turn** of the row (docs/design.md §2: the final reward is shared
   by both agents and every turn), the optional KL penalty ``-kl_coef * kl_t`` on every trained token, and
   returns are discounted backwards *within* a turn, counting trained tokens only; the return resets at
   each turn boundary, so a turn's credit never includes another turn's reward. With gamma = 1 and no
   KL every trained token's return is exactly ``R``; REINFORCE++ then differs from GRPO only in its
   baseline (whitening over all trained tokens of the batch, both agents together, vs per group).
   Putting ``R`` only on the last turn would, with a per-turn reset, leave every earlier turn with a
   return of 0 — no credit for the planning turns at all — so we do not.
5. Whitening (REINFORCE++) is over all trained tokens of the batch, so long rows weigh more in the
   batch mean/std; this matches verl/OpenRLHF. Advantages are 0 on untrained tokens for every estimator.
   Under data parallelism the moments are the whole batch's (``all_reduce``): one code path for 1 and N
   processes; the logged stats are each process's own, averaged over processes by the trainer.
6. One uniform signature for every registered estimator (see :data:`AdvantageFn`); options an
   estimator cannot honour (``gamma != 1`` or ``kl_coef != 0`` for the group estimators) raise instead
   of being silently ignored.

Shapes: N rows (episodes × agents), T tokens. ``mask`` is 1 on trained tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from rema.algos.segments import TurnIndex, masked_mean, masked_sum, masked_whiten, turn_index

__all__ = [
    "AdvantageFn",
    "ADVANTAGE_ESTIMATORS",
    "ESTIMATOR_INFO",
    "EstimatorInfo",
    "register_advantage_estimator",
    "get_advantage_estimator",
    "broadcast_to_tokens",
    "grpo",
    "rloo",
    "reinforce_pp_returns",
    "grpo_advantages",
    "dr_grpo_advantages",
    "rloo_advantages",
    "reinforce_pp_advantages",
]

Stats = dict[str, torch.Tensor]


class AdvantageFn(Protocol):
    """The one signature every registered estimator has.

    Args:
        rewards: (N,) float, the scalar episode reward of each row.
        group_ids: (N,) long, rows with the same id are compared (GRPO/RLOO); ignored by REINFORCE++.
        mask: (N, T), 1 on trained tokens.
        turn_ids: (N, T) long, turn index of each token within its row (>= 0 on trained tokens).
        eps: numerical floor added to a std before dividing.
        gamma: per-token discount within a turn (REINFORCE++ only; others require 1.0).
        kl: (N, T) float or None, per-token KL estimate to fold into the reward (REINFORCE++ only).
        kl_coef: weight of ``kl`` in the reward; 0 disables (others require 0).
        all_reduce: ``t -> sum of t over the data-parallel processes`` (None on one process), for ``t`` on any
            device (the trainer's ``Dist.sum_`` sends it through the communication device). Batch-wide
            statistics (REINFORCE++'s whitening) use it so N processes compute what one process would on the
            whole batch; group estimators ignore it (a group never straddles processes).

    Returns:
        advantages: (N, T) float, 0 on untrained tokens (detached: estimators run under no_grad).
        stats: dict of detached scalar tensors.
    """

    def __call__(
        self,
        rewards: torch.Tensor,
        group_ids: torch.Tensor,
        mask: torch.Tensor,
        turn_ids: torch.Tensor,
        *,
        eps: float = 1e-6,
        gamma: float = 1.0,
        kl: torch.Tensor | None = None,
        kl_coef: float = 0.0,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, Stats]: ...


ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {}
"""Name -> estimator: the valid values of ``algo.advantage`` (the config validates against this dict, so an
estimator registered before the config is loaded is accepted there)."""


@dataclass(frozen=True)
class EstimatorInfo:
    """What an estimator can honour, read by the config's validation to refuse settings it would ignore."""

    per_token: bool = False
    """Takes per-token rewards: a discount ``gamma`` within a turn and the KL penalty folded into the reward
    (``algo.kl_in_reward``). An episode-level estimator raises on both, so the config refuses them at load."""
    grouped: bool = True
    """Compares the samples of one question (``group_ids``): with one sample per question every advantage is 0."""


ESTIMATOR_INFO: dict[str, EstimatorInfo] = {}
"""Name -> :class:`EstimatorInfo` of every registered estimator."""


def register_advantage_estimator(name: str, *, per_token: bool = False,
                                 grouped: bool = True) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: register an estimator with the uniform :class:`AdvantageFn` signature under ``name``;
    ``per_token`` / ``grouped`` describe it (:class:`EstimatorInfo`)."""

    def deco(fn: AdvantageFn) -> AdvantageFn:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        ESTIMATOR_INFO[name] = EstimatorInfo(per_token=per_token, grouped=grouped)
        return fn

    return deco


def get_advantage_estimator(name: str) -> AdvantageFn:
    """Look up a registered estimator; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        valid = ", ".join(sorted(ADVANTAGE_ESTIMATORS))
        raise ValueError(f"unknown advantage estimator {name!r}; valid names: {valid}") from None


# ----------------------------------------------------------------------------- scalar (per-episode) helpers


def _check_episode_inputs(rewards: torch.Tensor, group_ids: torch.Tensor) -> None:
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must both be (N,); got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )
    if not rewards.is_floating_point():
        raise ValueError(f"rewards must be a float tensor, got {rewards.dtype}")


def _group_moments(rewards: torch.Tensor, group_ids: torch.Tensor):
    """Group of each row and per-group size, mean and unbiased std.

    rewards, group_ids: (N,) -> inv (N,) long, counts (G,) long, mean (G,), std (G,) (std 0 for size 1).
    """
    _, inv, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)  # inv: (N,)
    G = counts.numel()
    n = counts.to(rewards.dtype)  # (G,)
    mean = rewards.new_zeros(G).index_add(0, inv, rewards) / n  # (G,)
    centred = rewards - mean[inv]  # (N,)
    var = rewards.new_zeros(G).index_add(0, inv, centred * centred) / (n - 1).clamp(min=1)  # unbiased
    return inv, counts, mean, var.sqrt()


@torch.no_grad()
def grpo(
    rewards: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-6, scale_by_std: bool = True
) -> torch.Tensor:
    """GRPO episode advantages: ``A = (R - mean_group R) / (std_group R + eps)``.

    The std is unbiased (Bessel-corrected, like ``torch.std``). Groups of size 1 get 0.
    ``scale_by_std=False`` gives Dr.GRPO (``A = R - mean_group R``).

    Args:
        rewards: (N,) float episode rewards.
        group_ids: (N,) long, the group of each episode (ReMA: one id per (question, agent)).
        eps: added to the std.
        scale_by_std: divide by the group std (GRPO) or not (Dr.GRPO).

    Returns:
        (N,) advantages, same dtype as ``rewards``.
    """
    _check_episode_inputs(rewards, group_ids)
    inv, counts, mean, std = _group_moments(rewards, group_ids)
    adv = rewards - mean[inv]
    if scale_by_std:
        adv = adv / (std[inv] + eps)
    return torch.where(counts[inv] > 1, adv, torch.zeros_like(adv))


@torch.no_grad()
def rloo(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """RLOO episode advantages: ``A_i = R_i - mean_{j != i, same group} R_j``; size-1 groups get 0.

    Args:
        rewards: (N,) float episode rewards.
        group_ids: (N,) long group of each episode.

    Returns:
        (N,) advantages.
    """
    _check_episode_inputs(rewards, group_ids)
    inv, counts, mean, _ = _group_moments(rewards, group_ids)
    n = counts[inv].to(rewards.dtype)
    adv = n / (n - 1).clamp(min=1) * (rewards - mean[inv])  # = R_i - (n*mean - R_i)/(n-1)
    return torch.where(counts[inv] > 1, adv, torch.zeros_like(adv))


def broadcast_to_tokens(episode_adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Copy each row's scalar advantage onto its trained tokens.

    Args:
        episode_adv: (N,) float.
        mask: (N, T), 1 on trained tokens.

    Returns:
        (N, T): ``episode_adv[i]`` where ``mask[i, t] == 1``, else 0.
    """
    if episode_adv.dim() != 1 or mask.dim() != 2 or mask.shape[0] != episode_adv.shape[0]:
        raise ValueError(f"need episode_adv (N,) and mask (N, T); got {tuple(episode_adv.shape)}, {tuple(mask.shape)}")
    zero = torch.zeros((), dtype=episode_adv.dtype, device=episode_adv.device)
    return torch.where(mask.bool(), episode_adv.unsqueeze(1), zero)


# ----------------------------------------------------------------------------- REINFORCE++ returns


def _turn_positions(mask: torch.Tensor, turns: TurnIndex) -> tuple[torch.Tensor, torch.Tensor]:
    """For every trained token: its position among the row's trained tokens, and how many trained
    tokens of its own turn come after it. Raises if a turn's tokens are interleaved with another's."""
    m = mask.bool()
    pos = m.long().cumsum(dim=1) - 1  # (N, T) index among the row's trained tokens
    K = turns.num_turns
    flat_turn = turns.token_turn.reshape(-1)
    flat_pos = pos.reshape(-1)
    big = torch.iinfo(torch.long).max
    first = torch.full((K + 1,), big, dtype=torch.long, device=m.device).scatter_reduce(0, flat_turn, flat_pos, "amin")
    last = torch.full((K + 1,), -1, dtype=torch.long, device=m.device).scatter_reduce(0, flat_turn, flat_pos, "amax")
    if bool((last[:K] - first[:K] + 1 != turns.turn_count).any()):
        raise ValueError("each turn's trained tokens must be contiguous among the row's trained tokens")
    n_after = (last[turns.token_turn] - pos).clamp(min=0)  # (N, T); garbage (clamped) on untrained tokens
    is_last = m & (n_after == 0)
    return n_after, is_last


@torch.no_grad()
def reinforce_pp_returns(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    turn_ids: torch.Tensor,
    *,
    gamma: float = 1.0,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> torch.Tensor:
    """Per-token discounted returns that reset at every turn boundary (REINFORCE++ before whitening).

    Token rewards: ``r_t = -kl_coef * kl_t`` on every trained token, plus the episode reward ``R`` on
    the last trained token of each turn. Return: ``G_t = sum_{s >= t, s in turn(t)} gamma^(k(s) - k(t)) r_s``
    where ``k`` counts trained tokens (untrained positions inside a turn are skipped, not discounted).

    Args:
        rewards: (N,) float episode rewards.
        mask: (N, T), 1 on trained tokens.
        turn_ids: (N, T) long turn index within the row (>= 0 on trained tokens; a turn's trained
            tokens must be contiguous).
        gamma: discount per trained token within a turn.
        kl: (N, T) float per-token KL estimate, required when ``kl_coef != 0``.
        kl_coef: weight of the KL penalty in the reward.

    Returns:
        (N, T) returns, 0 on untrained tokens.
    """
    if rewards.dim() != 1 or mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"need rewards (N,) and mask (N, T); got {tuple(rewards.shape)}, {tuple(mask.shape)}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    m = mask.bool()
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    turns = turn_index(m, turn_ids)
    n_after, is_last = _turn_positions(m, turns)
    R = rewards.unsqueeze(1)  # (N, 1)

    if kl_coef == 0.0:
        # Fast closed form: the only reward in a turn sits on its last token, so G_t = gamma^n_after * R.
        disc = R.expand_as(n_after) if gamma == 1.0 else R * gamma ** n_after.to(rewards.dtype)
        return torch.where(m, disc, zero)

    if kl is None or kl.shape != mask.shape:
        raise ValueError(f"kl_coef={kl_coef} needs a per-token kl tensor of shape {tuple(mask.shape)}")
    token_reward = torch.where(m, -kl_coef * kl.to(rewards.dtype), zero) + torch.where(is_last, R, zero)  # (N, T)
    # Backward scan, vectorised over rows: O(T) small ops; only runs when KL-in-reward is on.
    # Because turns are contiguous and each turn ends on an `is_last` token, resetting the running
    # return right after (in reverse: right before) each turn's last token implements the reset.
    returns = torch.zeros_like(token_reward)
    running = rewards.new_zeros(rewards.shape[0])  # (N,)
    for t in range(mask.shape[1] - 1, -1, -1):
        on = m[:, t]
        running = torch.where(is_last[:, t], zero, running)
        running = torch.where(on, token_reward[:, t] + gamma * running, running)
        returns[:, t] = torch.where(on, running, zero)
    return returns


# ----------------------------------------------------------------------------- registered estimators


def _check_token_inputs(rewards, group_ids, mask, turn_ids) -> None:
    _check_episode_inputs(rewards, group_ids)
    if mask.dim() != 2 or mask.shape[0] != rewards.shape[0] or turn_ids.shape != mask.shape:
        raise ValueError(
            f"mask and turn_ids must be (N, T) with N={rewards.shape[0]}; "
            f"got {tuple(mask.shape)}, {tuple(turn_ids.shape)}"
        )


def _only_outcome(name: str, gamma: float, kl_coef: float) -> None:
    if gamma != 1.0:
        raise ValueError(
            f"{name}: gamma={gamma} has no meaning for an episode-level estimator; use 1.0 (or reinforce_pp)"
        )
    if kl_coef != 0.0:
        raise ValueError(
            f"{name}: KL-in-reward (kl_coef={kl_coef}) is only supported by reinforce_pp; use the KL loss term"
        )


def _adv_stats(adv: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor, all_reduce=None) -> Stats:
    """Advantage statistics over trained tokens; with ``all_reduce`` the mean and std are the whole batch's."""
    m = mask.bool()
    if all_reduce is None:
        mean = masked_mean(adv, m)
        var = masked_mean((adv - mean) ** 2, m)
    else:
        n = all_reduce(m.sum().to(adv.dtype)).clamp(min=1)
        mean = all_reduce(masked_sum(adv, m)) / n
        var = all_reduce(masked_sum((adv - mean) ** 2, m)) / n
    any_tok = bool(m.any())
    return {
        "reward_mean": rewards.mean() if rewards.numel() else rewards.new_zeros(()),
        "adv_mean": mean,
        "adv_std": var.sqrt(),
        "adv_max": adv[m].max() if any_tok else adv.new_zeros(()),
        "adv_min": adv[m].min() if any_tok else adv.new_zeros(()),
    }


def _group_stats(rewards: torch.Tensor, group_ids: torch.Tensor) -> Stats:
    _, counts, _, std = _group_moments(rewards, group_ids)
    G = max(counts.numel(), 1)
    multi = counts > 1
    return {
        "num_groups": rewards.new_tensor(float(counts.numel())),
        "frac_groups_singleton": (~multi).sum().to(rewards.dtype) / G,
        # groups with >1 sample whose rewards are all equal: no learning signal from them
        "frac_groups_zero_std": (multi & (std == 0)).sum().to(rewards.dtype) / G,
    }


@register_advantage_estimator("grpo")
@torch.no_grad()
def grpo_advantages(rewards, group_ids, mask, turn_ids, *, eps=1e-6, gamma=1.0, kl=None, kl_coef=0.0,
                     all_reduce=None):
    """GRPO (see :func:`grpo`) broadcast to trained tokens. Uniform :class:`AdvantageFn` signature."""
    _check_token_inputs(rewards, group_ids, mask, turn_ids)
    _only_outcome("grpo", gamma, kl_coef)
    adv = broadcast_to_tokens(grpo(rewards, group_ids, eps=eps, scale_by_std=True), mask)
    return adv, {**_adv_stats(adv, mask, rewards, all_reduce), **_group_stats(rewards, group_ids)}


@register_advantage_estimator("dr_grpo")
@torch.no_grad()
def dr_grpo_advantages(rewards, group_ids, mask, turn_ids, *, eps=1e-6, gamma=1.0, kl=None, kl_coef=0.0,
                     all_reduce=None):
    """Dr.GRPO (``R - mean_group R``, no std division) broadcast to trained tokens. Uniform signature."""
    _check_token_inputs(rewards, group_ids, mask, turn_ids)
    _only_outcome("dr_grpo", gamma, kl_coef)
    adv = broadcast_to_tokens(grpo(rewards, group_ids, eps=eps, scale_by_std=False), mask)
    return adv, {**_adv_stats(adv, mask, rewards, all_reduce), **_group_stats(rewards, group_ids)}


@register_advantage_estimator("rloo")
@torch.no_grad()
def rloo_advantages(rewards, group_ids, mask, turn_ids, *, eps=1e-6, gamma=1.0, kl=None, kl_coef=0.0,
                     all_reduce=None):
    """RLOO (see :func:`rloo`) broadcast to trained tokens. Uniform signature; ``eps`` is unused."""
    _check_token_inputs(rewards, group_ids, mask, turn_ids)
    _only_outcome("rloo", gamma, kl_coef)
    adv = broadcast_to_tokens(rloo(rewards, group_ids), mask)
    return adv, {**_adv_stats(adv, mask, rewards, all_reduce), **_group_stats(rewards, group_ids)}


@register_advantage_estimator("reinforce_pp", per_token=True, grouped=False)
@torch.no_grad()
def reinforce_pp_advantages(rewards, group_ids, mask, turn_ids, *, eps=1e-6, gamma=1.0, kl=None, kl_coef=0.0,
                     all_reduce=None):
    """REINFORCE++: per-turn-reset returns (:func:`reinforce_pp_returns`) whitened over all trained
    tokens of the batch (:func:`~rema.algos.segments.masked_whiten`). ``group_ids`` is unused."""
    _check_token_inputs(rewards, group_ids, mask, turn_ids)
    returns = reinforce_pp_returns(rewards, mask, turn_ids, gamma=gamma, kl=kl, kl_coef=kl_coef)
    adv = masked_whiten(returns, mask, eps=eps, all_reduce=all_reduce)
    stats = _adv_stats(adv, mask, rewards, all_reduce)
    stats["return_mean"] = masked_mean(returns, mask)
    if kl_coef != 0.0:
        stats["kl_in_reward_mean"] = masked_mean(kl.to(rewards.dtype), mask)
    return adv, stats
