"""Tests for rema.algos: hand-computed values, plain-loop references, and properties.

Every vectorised function is compared (float64, 1e-6) with a plain Python loop written from the
formulas in the module docstrings. The loops are deliberately naive: they walk rows, tokens and turns.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import rema.algos as A
from rema.algos import (
    aggregate,
    get_advantage_estimator,
    grpo,
    kl_k1,
    kl_k3,
    masked_mean,
    masked_whiten,
    policy_loss,
    reinforce_pp_returns,
    rloo,
)

F64 = torch.float64
COMBOS = [
    (level, mean, agg)
    for level, mean, agg in itertools.product(
        ("token", "turn"), ("geometric", "arithmetic"), ("token", "turn", "trajectory")
    )
    if not (level == "turn" and agg == "token")
]


# ----------------------------------------------------------------------------- random batches


def random_batch(seed: int, B: int = 6, T: int = 24, single_token_turns: bool = False, sparse_ids: bool = False):
    """A (B, T) batch shaped like real rows: prompt, then own turns (trained) alternating with the other
    agent's messages (untrained), then padding. Some rows have no trained token at all."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T, dtype=torch.long)
    turn_ids = torch.full((B, T), -1, dtype=torch.long)
    for b in range(B):
        if b == B - 1:
            continue  # a row without trained tokens (e.g. an agent that never spoke)
        t = int(torch.randint(1, 4, (1,), generator=g))  # prompt
        turn = 0
        while t < T - 1:
            L = 1 if single_token_turns else int(torch.randint(1, 5, (1,), generator=g))
            L = min(L, T - t)
            mask[b, t : t + L] = 1
            turn_ids[b, t : t + L] = turn * (2 if sparse_ids else 1)
            turn += 1
            t += L + int(torch.randint(1, 4, (1,), generator=g))  # the other agent's message / glue
            if torch.rand((), generator=g) < 0.15:
                break  # padding for the rest of the row
    logp = -3 * torch.rand(B, T, generator=g, dtype=F64)
    # Mostly near-policy, a few tokens far off so every clip branch and the log-ratio clamp are hit.
    noise = 0.3 * torch.randn(B, T, generator=g, dtype=F64)
    far = torch.rand(B, T, generator=g) < 0.1
    noise = torch.where(far, 4.0 * torch.sign(torch.randn(B, T, generator=g, dtype=F64)), noise)
    old_logp = logp - noise
    adv = torch.randn(B, T, generator=g, dtype=F64)
    return logp, old_logp, adv, mask, turn_ids


# ----------------------------------------------------------------------------- plain-loop references


def loop_turns(mask, turn_ids):
    """{(row, turn_id): [token positions]} in row-major order, built one token at a time."""
    turns = {}
    B, T = mask.shape
    for b in range(B):
        for t in range(T):
            if mask[b, t]:
                turns.setdefault((b, int(turn_ids[b, t])), []).append(t)
    return turns


def loop_policy_loss(
    logp,
    old_logp,
    adv,
    mask,
    turn_ids,
    *,
    ratio_level,
    ratio_mean,
    agg,
    clip_eps=0.2,
    clip_eps_high=None,
    dual_clip=3.0,
    log_ratio_clamp=3.0,
):
    """Reference policy loss: one 0-dim tensor op at a time (keeps autograd, so gradients compare too)."""
    eh = clip_eps if clip_eps_high is None else clip_eps_high
    c = log_ratio_clamp

    def clamp_lr(x):
        return x if c is None else torch.clamp(x, -c, c)

    def surrogate(r, a):
        l1 = -a * r
        l2 = -a * torch.clamp(r, 1 - clip_eps, 1 + eh)
        loss = l1 if l1 >= l2 else l2
        clipped = bool(l2 > l1)
        dual = False
        if dual_clip is not None and a < 0:
            l3 = -a * dual_clip
            dual = bool(loss > l3)
            loss = l3 if dual else loss
        return loss, clipped, dual

    turns = loop_turns(mask, turn_ids)
    turn_loss, token_losses, n_clip, n_dual, n_units = {}, [], 0, 0, 0
    for (b, k), ts in turns.items():
        if ratio_level == "token":
            losses = []
            for t in ts:
                loss, cl, du = surrogate(torch.exp(clamp_lr(logp[b, t] - old_logp[b, t])), adv[b, t])
                losses.append(loss)
                n_clip, n_dual, n_units = n_clip + cl, n_dual + du, n_units + 1
            token_losses += losses
            turn_loss[(b, k)] = sum(losses) / len(losses)
        else:
            a_turn = sum(adv[b, t] for t in ts) / len(ts)
            if ratio_mean == "geometric":
                r = torch.exp(clamp_lr(sum(logp[b, t] - old_logp[b, t] for t in ts) / len(ts)))
            else:
                r = sum(torch.exp(clamp_lr(logp[b, t] - old_logp[b, t])) for t in ts) / len(ts)
            loss, cl, du = surrogate(r, a_turn)
            n_clip, n_dual, n_units = n_clip + cl, n_dual + du, n_units + 1
            turn_loss[(b, k)] = loss
            token_losses += [loss] * len(ts)
    if agg == "token":
        total = sum(token_losses) / len(token_losses)
    elif agg == "turn":
        total = sum(turn_loss.values()) / len(turn_loss)
    else:
        rows = {}
        for (b, _), v in turn_loss.items():
            rows.setdefault(b, []).append(v)
        total = sum(sum(v) / len(v) for v in rows.values()) / len(rows)
    return total, {"clip_frac": n_clip / n_units, "clip_frac_lower": n_dual / n_units}


def loop_grpo(rewards, group_ids, eps=1e-6, scale_by_std=True):
    out = []
    for i in range(len(rewards)):
        group = [float(rewards[j]) for j in range(len(rewards)) if group_ids[j] == group_ids[i]]
        if len(group) == 1:
            out.append(0.0)
            continue
        mean = sum(group) / len(group)
        std = math.sqrt(sum((x - mean) ** 2 for x in group) / (len(group) - 1))
        out.append((float(rewards[i]) - mean) / (std + eps) if scale_by_std else float(rewards[i]) - mean)
    return torch.tensor(out, dtype=F64)


def loop_rloo(rewards, group_ids):
    out = []
    for i in range(len(rewards)):
        others = [float(rewards[j]) for j in range(len(rewards)) if group_ids[j] == group_ids[i] and j != i]
        out.append(float(rewards[i]) - sum(others) / len(others) if others else 0.0)
    return torch.tensor(out, dtype=F64)


def loop_reinforce_pp(rewards, mask, turn_ids, gamma=1.0, kl=None, kl_coef=0.0, eps=1e-6):
    returns = torch.zeros(mask.shape, dtype=F64)
    for (b, _), ts in loop_turns(mask, turn_ids).items():
        running = 0.0
        for i, t in enumerate(reversed(ts)):  # walk the turn backwards; reward on its last token
            r = (float(rewards[b]) if i == 0 else 0.0) - (kl_coef * float(kl[b, t]) if kl_coef else 0.0)
            running = r + gamma * running
            returns[b, t] = running
    vals = [float(returns[b, t]) for b in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[b, t]]
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    adv = torch.zeros(mask.shape, dtype=F64)
    for b in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if mask[b, t]:
                adv[b, t] = (returns[b, t] - mean) / (std + eps)
    return returns, adv


# ----------------------------------------------------------------------------- hand-computed values


def test_grpo_hand_values():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0], dtype=F64)
    groups = torch.tensor([7, 7, 7, 7, 3])
    # group 7: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.577350; A = ±0.5 / (0.577350 + 1e-6)
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    assert torch.allclose(grpo(rewards, groups), torch.tensor([a, -a, -a, a, 0.0], dtype=F64))
    # Dr.GRPO: no std division
    assert torch.allclose(
        grpo(rewards, groups, scale_by_std=False), torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0], dtype=F64)
    )
    # RLOO: A_0 = 1 - (0 + 0 + 1) / 3 = 2/3, A_1 = 0 - (1 + 0 + 1) / 3 = -2/3; singleton -> 0
    assert torch.allclose(rloo(rewards, groups), torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0], dtype=F64))


def test_grpo_singletons_and_constant_groups_give_zero_without_nan():
    rewards = torch.tensor([1.0, 0.5, 0.5, 0.5], dtype=F64)
    groups = torch.tensor([0, 1, 1, 1])  # a singleton, and a group with std 0
    for scale in (True, False):
        out = grpo(rewards, groups, scale_by_std=scale)
        assert not torch.isnan(out).any()
        assert torch.equal(out, torch.zeros(4, dtype=F64))
    assert torch.equal(rloo(rewards, groups), torch.zeros(4, dtype=F64))
    mask = torch.ones(4, 3, dtype=torch.long)
    adv, stats = get_advantage_estimator("grpo")(rewards, groups, mask, torch.zeros(4, 3, dtype=torch.long))
    assert torch.equal(adv, torch.zeros(4, 3, dtype=F64))
    assert stats["frac_groups_singleton"] == 0.5 and stats["frac_groups_zero_std"] == 0.5


def test_reinforce_pp_returns_hand_values():
    # one row: turn 0 = tokens 1,2 ; other agent at 3 ; turn 1 = token 4 ; reward 1
    mask = torch.tensor([[0, 1, 1, 0, 1]])
    turn_ids = torch.tensor([[-1, 0, 0, -1, 1]])
    R = torch.tensor([1.0], dtype=F64)
    # gamma = 1: every trained token's return is R
    assert torch.equal(reinforce_pp_returns(R, mask, turn_ids), torch.tensor([[0, 1, 1, 0, 1]], dtype=F64))
    # gamma = 0.5: R sits on each turn's last token, discounted back within the turn only
    assert torch.allclose(
        reinforce_pp_returns(R, mask, turn_ids, gamma=0.5), torch.tensor([[0, 0.5, 1, 0, 1]], dtype=F64)
    )
    # + KL in reward, kl = 1 everywhere, coef 0.1: token rewards turn0 [-0.1, 0.9], turn1 [0.9]
    # turn0 returns: [-0.1 + 0.5 * 0.9, 0.9] = [0.35, 0.9]
    kl = torch.ones(1, 5, dtype=F64)
    got = reinforce_pp_returns(R, mask, turn_ids, gamma=0.5, kl=kl, kl_coef=0.1)
    assert torch.allclose(got, torch.tensor([[0, 0.35, 0.9, 0, 0.9]], dtype=F64))


def test_reinforce_pp_whitening_hand_values():
    # two rows, 2 trained tokens each, R = 1 and 0: returns [1, 1, 0, 0] -> mean 0.5,
    # unbiased std sqrt(4 * 0.25 / 3) = 0.577350 -> advantages ±0.866025
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    turn_ids = torch.tensor([[0, 0, -1], [-1, 0, 0]])
    adv, stats = get_advantage_estimator("reinforce_pp")(
        torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0, 0]), mask, turn_ids
    )
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    assert torch.allclose(adv, torch.tensor([[a, a, 0], [0, -a, -a]], dtype=F64))
    assert abs(float(stats["adv_mean"])) < 1e-12


def test_policy_loss_token_hand_values():
    # token 0: r = 1.5, A = +1: pg1 = -1.5, pg2 = -1.2 -> max = -1.2 (clipped)
    # token 1: r = 0.5, A = -1: pg1 = 0.5, pg2 = 0.8 -> max = 0.8 (clipped); dual bound 3 not hit
    old = torch.zeros(1, 2, dtype=F64)
    logp = torch.log(torch.tensor([[1.5, 0.5]], dtype=F64))
    adv = torch.tensor([[1.0, -1.0]], dtype=F64)
    mask, tid = torch.ones(1, 2), torch.zeros(1, 2, dtype=torch.long)
    loss, stats = policy_loss(logp, old, adv, mask, tid, agg="token")
    assert math.isclose(float(loss), (-1.2 + 0.8) / 2, abs_tol=1e-12)
    assert float(stats["clip_frac"]) == 1.0 and float(stats["clip_frac_lower"]) == 0.0
    # ratio mean (1.5 + 0.5)/2 = 1; approx_kl = mean(r - 1 - log r) = (0.5 - log 1.5 + (-0.5) - log 0.5)/2
    assert math.isclose(float(stats["ratio_mean"]), 1.0, abs_tol=1e-12)
    assert math.isclose(float(stats["approx_kl"]), (-math.log(1.5) - math.log(0.5)) / 2, abs_tol=1e-12)


def test_policy_loss_dual_clip_and_clamp_hand_values():
    # log-ratio 5 clamped to 3: r = e^3 = 20.09, A = -1: pg1 = 20.09, pg2 = 0.8 -> 20.09; dual: min(20.09, 3) = 3
    logp, old = torch.tensor([[5.0]], dtype=F64), torch.zeros(1, 1, dtype=F64)
    adv, mask, tid = -torch.ones(1, 1, dtype=F64), torch.ones(1, 1), torch.zeros(1, 1, dtype=torch.long)
    loss, stats = policy_loss(logp, old, adv, mask, tid)
    assert math.isclose(float(loss), 3.0)
    assert float(stats["clip_frac_lower"]) == 1.0 and float(stats["log_ratio_clip_frac"]) == 1.0
    assert math.isclose(float(stats["ratio_max"]), math.exp(3.0))
    loss, _ = policy_loss(logp, old, adv, mask, tid, dual_clip=None)
    assert math.isclose(float(loss), math.exp(3.0))
    loss, _ = policy_loss(logp, old, adv, mask, tid, dual_clip=None, log_ratio_clamp=None)
    assert math.isclose(float(loss), math.exp(5.0))


def test_policy_loss_turn_hand_values():
    # one turn of two tokens: r_tok = [2, 0.5], A = [1, 3] -> A_turn = 2
    # geometric: exp(mean(log 2, log 0.5)) = 1 -> loss = -2 * 1 = -2 (not clipped)
    # arithmetic: (2 + 0.5)/2 = 1.25 -> pg1 = -2.5, pg2 = -2 * 1.2 = -2.4 -> -2.4 (clipped)
    logp = torch.log(torch.tensor([[2.0, 0.5]], dtype=F64))
    old = torch.zeros(1, 2, dtype=F64)
    adv = torch.tensor([[1.0, 3.0]], dtype=F64)
    mask, tid = torch.ones(1, 2), torch.zeros(1, 2, dtype=torch.long)
    loss, stats = policy_loss(logp, old, adv, mask, tid, ratio_level="turn", agg="turn")
    assert math.isclose(float(loss), -2.0) and float(stats["clip_frac"]) == 0.0
    loss, stats = policy_loss(logp, old, adv, mask, tid, ratio_level="turn", ratio_mean="arithmetic", agg="turn")
    assert math.isclose(float(loss), -2.4) and float(stats["clip_frac"]) == 1.0


def test_aggregate_hand_values():
    # row 0: turn 0 = [1, 3], turn 1 = [5]; row 1: turn 0 = [4]; row 2: nothing trained
    values = torch.tensor([[1.0, 3.0, 9.0, 5.0], [4.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]])
    tid = torch.tensor([[0, 0, -1, 1], [0, -1, -1, -1], [-1, -1, -1, -1]])
    assert math.isclose(float(aggregate(values, mask, "token", tid)), (1 + 3 + 5 + 4) / 4)  # 3.25
    assert math.isclose(float(aggregate(values, mask, "turn", tid)), (2 + 5 + 4) / 3)  # 11/3
    assert math.isclose(float(aggregate(values, mask, "trajectory", tid)), ((2 + 5) / 2 + 4) / 2)  # 3.75
    empty = torch.zeros_like(mask)
    for mode in ("token", "turn", "trajectory"):
        assert float(aggregate(values, empty, mode, tid)) == 0.0


def test_kl_hand_values():
    logp = torch.zeros(1, 3, dtype=F64)
    ref = torch.tensor([[math.log(2.0), 0.0, 5.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 0]])
    # d = log 2: 2 - log 2 - 1 = 0.306853; d = 0: 0; untrained: 0
    assert torch.allclose(kl_k3(logp, ref, mask), torch.tensor([[1 - math.log(2.0), 0.0, 0.0]], dtype=F64))
    assert torch.allclose(kl_k1(logp, ref, mask), torch.tensor([[-math.log(2.0), 0.0, 0.0]], dtype=F64))
    assert float(aggregate(kl_k3(logp, ref, mask), mask, "token")) == pytest.approx((1 - math.log(2.0)) / 2)


def test_masked_mean_and_whiten_hand_values():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, float("nan"), 4.0]], dtype=F64)
    m = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert float(masked_mean(x, m)) == 2.5  # (1 + 2 + 3 + 4) / 4; NaN and 100 ignored
    # mean 2.5, unbiased std sqrt((2.25 + .25 + .25 + 2.25) / 3) = sqrt(5/3)
    w = masked_whiten(x, m, eps=0.0)
    s = math.sqrt(5 / 3)
    assert torch.allclose(w, torch.tensor([[-1.5 / s, -0.5 / s, 0], [0.5 / s, 0, 1.5 / s]], dtype=F64))


# ----------------------------------------------------------------------------- vectorised == loop


@pytest.mark.parametrize("level,mean,agg", COMBOS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_policy_loss_matches_loop(level, mean, agg, seed):
    logp, old, adv, mask, tid = random_batch(seed, sparse_ids=(seed == 2))
    kw = dict(ratio_level=level, ratio_mean=mean, agg=agg)
    if seed == 1:
        kw.update(clip_eps=0.1, clip_eps_high=0.28, dual_clip=2.0)
    lp1 = logp.clone().requires_grad_(True)
    lp2 = logp.clone().requires_grad_(True)
    loss, stats = policy_loss(lp1, old, adv, mask, tid, **kw)
    ref, ref_stats = loop_policy_loss(lp2, old, adv, mask, tid, **kw)
    assert abs(loss.item() - ref.item()) < 1e-6
    (g1,) = torch.autograd.grad(loss, lp1)
    (g2,) = torch.autograd.grad(ref, lp2)
    assert torch.allclose(g1, g2, atol=1e-6)
    for k in ("clip_frac", "clip_frac_lower"):
        assert abs(float(stats[k]) - ref_stats[k]) < 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_group_estimators_match_loop(seed):
    g = torch.Generator().manual_seed(seed)
    N = 20
    rewards = torch.randint(0, 3, (N,), generator=g).to(F64) / 2
    groups = torch.randint(0, 6, (N,), generator=g) * 1000 + 17  # arbitrary, non-contiguous ids
    assert torch.allclose(grpo(rewards, groups), loop_grpo(rewards, groups), atol=1e-6)
    assert torch.allclose(
        grpo(rewards, groups, scale_by_std=False), loop_grpo(rewards, groups, scale_by_std=False), atol=1e-6
    )
    assert torch.allclose(rloo(rewards, groups), loop_rloo(rewards, groups), atol=1e-6)
    mask = (torch.rand(N, 7, generator=g) < 0.6).long()
    tid = torch.zeros(N, 7, dtype=torch.long)
    for name, ref in (("grpo", loop_grpo(rewards, groups)), ("rloo", loop_rloo(rewards, groups))):
        adv, _ = get_advantage_estimator(name)(rewards, groups, mask, tid)
        assert torch.allclose(adv, ref[:, None] * mask, atol=1e-6)


@pytest.mark.parametrize("gamma,kl_coef", [(1.0, 0.0), (0.9, 0.0), (1.0, 0.05), (0.8, 0.2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_reinforce_pp_matches_loop(gamma, kl_coef, seed):
    _, _, _, mask, tid = random_batch(seed, sparse_ids=(seed == 1))
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 2, (mask.shape[0],), generator=g).to(F64)
    kl = torch.rand(mask.shape, generator=g, dtype=F64)
    ref_ret, ref_adv = loop_reinforce_pp(rewards, mask, tid, gamma, kl, kl_coef)
    ret = reinforce_pp_returns(rewards, mask, tid, gamma=gamma, kl=kl, kl_coef=kl_coef)
    adv, _ = get_advantage_estimator("reinforce_pp")(
        rewards, torch.zeros_like(rewards).long(), mask, tid, gamma=gamma, kl=kl, kl_coef=kl_coef
    )
    assert torch.allclose(ret, ref_ret, atol=1e-6)
    assert torch.allclose(adv, ref_adv, atol=1e-6)


def test_reinforce_pp_fast_path_equals_scan():
    _, _, _, mask, tid = random_batch(3)
    rewards = torch.rand(mask.shape[0], dtype=F64)
    zero_kl = torch.zeros(mask.shape, dtype=F64)
    for gamma in (1.0, 0.7):
        fast = reinforce_pp_returns(rewards, mask, tid, gamma=gamma)
        scan = reinforce_pp_returns(rewards, mask, tid, gamma=gamma, kl=zero_kl, kl_coef=1.0)
        assert torch.allclose(fast, scan, atol=1e-12)


# ----------------------------------------------------------------------------- properties


@pytest.mark.parametrize("level,mean,agg", COMBOS)
def test_on_policy_loss_is_minus_aggregated_advantage(level, mean, agg):
    logp, _, adv, mask, tid = random_batch(5)
    loss, stats = policy_loss(logp, logp.clone(), adv, mask, tid, ratio_level=level, ratio_mean=mean, agg=agg)
    # ratio = 1 everywhere, so no clip branch is taken and the loss is -A aggregated
    # (with turn ratios the turn's advantage is the mean of its tokens', which `aggregate` also takes)
    assert torch.allclose(loss, -aggregate(adv, mask, agg, tid), atol=1e-12)
    assert float(stats["clip_frac"]) == 0.0 and float(stats["approx_kl"]) == 0.0


@pytest.mark.parametrize("level,mean,agg", COMBOS)
def test_zero_advantages_give_zero_gradient(level, mean, agg):
    logp, old, _, mask, tid = random_batch(6)
    lp = logp.clone().requires_grad_(True)
    loss, _ = policy_loss(lp, old, torch.zeros_like(logp), mask, tid, ratio_level=level, ratio_mean=mean, agg=agg)
    (grad,) = torch.autograd.grad(loss, lp)
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("mean", ("geometric", "arithmetic"))
@pytest.mark.parametrize("agg", ("turn", "trajectory"))
def test_single_token_turns_make_turn_and_token_ratios_agree(mean, agg):
    logp, old, adv, mask, tid = random_batch(7, single_token_turns=True)
    lp_tok, lp_turn = logp.clone().requires_grad_(True), logp.clone().requires_grad_(True)
    loss_tok, s_tok = policy_loss(lp_tok, old, adv, mask, tid, ratio_level="token", agg=agg)
    loss_turn, s_turn = policy_loss(lp_turn, old, adv, mask, tid, ratio_level="turn", ratio_mean=mean, agg=agg)
    assert torch.allclose(loss_tok, loss_turn, atol=1e-12)
    assert torch.allclose(
        torch.autograd.grad(loss_tok, lp_tok)[0], torch.autograd.grad(loss_turn, lp_turn)[0], atol=1e-12
    )
    assert float(s_tok["clip_frac"]) == float(s_turn["clip_frac"])


@pytest.mark.parametrize("level,mean,agg", COMBOS)
def test_dual_clip_bounds_loss_for_negative_advantages(level, mean, agg):
    logp, _, adv, mask, tid = random_batch(8)
    neg = -adv.abs() - 0.1
    old = logp - 10.0  # every ratio huge (clamped at e^3 ≈ 20)
    kw = dict(ratio_level=level, ratio_mean=mean, agg=agg)
    loss, stats = policy_loss(logp, old, neg, mask, tid, **kw)
    bound = aggregate(-neg * 3.0, mask, agg, tid)  # each unit's loss is at most -A * dual_clip
    assert float(loss) <= float(bound) + 1e-12
    assert float(stats["clip_frac_lower"]) == 1.0
    unbounded, _ = policy_loss(logp, old, neg, mask, tid, dual_clip=None, **kw)
    assert float(unbounded) > float(bound) * 5


@pytest.mark.parametrize("level,mean", [("token", "geometric"), ("turn", "geometric"), ("turn", "arithmetic")])
def test_clipping_stops_gradient_outside_trust_region(level, mean):
    # one row, two turns of two tokens; all tokens share a log-ratio so token and turn ratios coincide
    mask, tid = torch.ones(1, 4), torch.tensor([[0, 0, 1, 1]])
    agg = "turn"
    for log_r, a, clipped in (
        (0.5, 1.0, True),
        (-0.5, -1.0, True),
        (0.1, 1.0, False),
        (-0.1, -1.0, False),
        (0.5, -1.0, False),
        (-0.5, 1.0, False),
    ):
        lp = torch.zeros(1, 4, dtype=F64, requires_grad=True)
        old = torch.full((1, 4), -log_r, dtype=F64)
        loss, stats = policy_loss(
            lp, old, torch.full((1, 4), a, dtype=F64), mask, tid, ratio_level=level, ratio_mean=mean, agg=agg
        )
        (grad,) = torch.autograd.grad(loss, lp)
        assert (torch.count_nonzero(grad) == 0) == clipped, (log_r, a)
        assert float(stats["clip_frac"]) == float(clipped)
        if not clipped:
            assert (grad != 0).all()  # every token of every turn gets gradient


def test_turn_ratio_gradient_reaches_every_token_of_the_turn():
    logp, old, adv, mask, tid = random_batch(9)
    lp = logp.clone().requires_grad_(True)
    loss, _ = policy_loss(lp, logp.clone(), adv, mask, tid, ratio_level="turn", agg="trajectory")
    (grad,) = torch.autograd.grad(loss, lp)
    turn_adv = {k: float(sum(adv[k[0], t] for t in ts)) for k, ts in loop_turns(mask, tid).items()}
    for (b, k), ts in loop_turns(mask, tid).items():
        for t in ts:
            assert (grad[b, t] != 0) == (turn_adv[(b, k)] != 0)
    assert torch.count_nonzero(grad[mask == 0]) == 0


def test_token_agg_with_turn_ratio_raises():
    logp, old, adv, mask, tid = random_batch(0)
    with pytest.raises(ValueError, match="agg='token' cannot be used with ratio_level='turn'"):
        policy_loss(logp, old, adv, mask, tid, ratio_level="turn", agg="token")


def test_bad_options_raise():
    logp, old, adv, mask, tid = random_batch(0)
    for kw in (
        dict(ratio_level="seq"),
        dict(ratio_mean="harmonic"),
        dict(agg="batch"),
        dict(clip_eps=0.0),
        dict(dual_clip=1.0),
        dict(log_ratio_clamp=0.0),
    ):
        with pytest.raises(ValueError):
            policy_loss(logp, old, adv, mask, tid, **kw)
    with pytest.raises(ValueError, match="shape"):
        policy_loss(logp, old[:, :-1], adv, mask, tid)
    bad_tid = tid.clone()
    bad_tid[mask.bool()] = -1
    with pytest.raises(ValueError, match="turn_ids"):
        policy_loss(logp, old, adv, mask, bad_tid)


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(ValueError, match="dr_grpo, grpo, reinforce_pp, rloo"):
        get_advantage_estimator("ppo")
    assert set(A.ADVANTAGE_ESTIMATORS) == {"grpo", "dr_grpo", "rloo", "reinforce_pp"}


def test_estimators_share_one_signature_and_reject_unsupported_options():
    _, _, _, mask, tid = random_batch(1)
    rewards = torch.rand(mask.shape[0], dtype=F64)
    groups = torch.arange(mask.shape[0]) // 2
    for name in A.ADVANTAGE_ESTIMATORS:
        adv, stats = get_advantage_estimator(name)(
            rewards, groups, mask, tid, eps=1e-6, gamma=1.0, kl=None, kl_coef=0.0
        )
        assert adv.shape == mask.shape and torch.count_nonzero(adv[mask == 0]) == 0
        assert all(v.dim() == 0 for v in stats.values())
    for name in ("grpo", "dr_grpo", "rloo"):
        with pytest.raises(ValueError, match="reinforce_pp"):
            get_advantage_estimator(name)(rewards, groups, mask, tid, kl=torch.zeros(mask.shape), kl_coef=0.1)
        with pytest.raises(ValueError, match="gamma"):
            get_advantage_estimator(name)(rewards, groups, mask, tid, gamma=0.9)
    with pytest.raises(ValueError, match="kl"):
        get_advantage_estimator("reinforce_pp")(rewards, groups, mask, tid, kl_coef=0.1)


def test_inputs_are_not_mutated_and_padding_garbage_does_not_leak():
    logp, old, adv, mask, tid = random_batch(4)
    off = mask == 0
    logp, old, adv = (
        logp.masked_fill(off, float("nan")),
        old.masked_fill(off, float("inf")),
        adv.masked_fill(off, float("nan")),
    )
    copies = [x.clone() for x in (logp, old, adv, mask, tid)]
    for level, mean, agg in COMBOS:
        lp = logp.clone().requires_grad_(True)
        loss, stats = policy_loss(lp, old, adv, mask, tid, ratio_level=level, ratio_mean=mean, agg=agg)
        (grad,) = torch.autograd.grad(loss, lp)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert all(torch.isfinite(v) for v in stats.values())
    for x, c in zip((logp, old, adv, mask, tid), copies):
        assert torch.equal(x.nan_to_num(), c.nan_to_num())
    rewards = torch.rand(mask.shape[0], dtype=F64)
    r_copy = rewards.clone()
    for name in A.ADVANTAGE_ESTIMATORS:
        get_advantage_estimator(name)(rewards, torch.zeros_like(tid[:, 0]), mask, tid)
    assert torch.equal(rewards, r_copy)


@pytest.mark.parametrize("agg", ("token", "turn", "trajectory"))
def test_micro_batches_recombine_with_returned_counts(agg):
    # The stats counts let a trainer that accumulates gradients reproduce the full-batch normalisation.
    logp, old, adv, mask, tid = random_batch(11, B=8)
    full, _ = policy_loss(logp, old, adv, mask, tid, agg=agg, ratio_level="turn" if agg != "token" else "token")
    unit = {"token": "num_tokens", "turn": "num_turns", "trajectory": "num_rows"}[agg]
    parts = [
        policy_loss(
            logp[s], old[s], adv[s], mask[s], tid[s], agg=agg, ratio_level="turn" if agg != "token" else "token"
        )
        for s in (slice(0, 3), slice(3, 8))
    ]
    total_units = sum(float(st[unit]) for _, st in parts)
    recombined = sum(loss * float(st[unit]) / total_units for loss, st in parts)
    assert torch.allclose(full, recombined, atol=1e-12)


def test_kl_k3_is_nonnegative_and_zero_on_policy():
    logp, ref, _, mask, _ = random_batch(2)
    kl = kl_k3(logp, ref, mask)
    assert (kl >= 0).all() and torch.count_nonzero(kl[mask == 0]) == 0
    assert torch.count_nonzero(kl_k3(logp, logp.clone(), mask)) == 0
