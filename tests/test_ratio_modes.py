"""When the importance ratio acts (docs/design.md §5).

With one PPO epoch and one mini-batch (every shipped config) π_old = π when the loss is differentiated, so every
ratio is 1 and the clip never acts: the token-level, turn-geometric and turn-arithmetic ratios give the same
gradient, the plain policy gradient under the chosen aggregation. They part once π_old differs from π: with
several mini-batches (``train.mini_batches``) or epochs (``train.ppo_epochs``) every optimizer step after the
first sees a moved policy.
"""

from __future__ import annotations

import pytest
import torch
from test_train import SHORT_PROMPTS, tiny_cfg, upper_share

from rema.algos import aggregate, grpo_advantages, policy_loss, reinforce_pp_advantages
from rema.train import Trainer

MODES = {
    "token": ("token", "geometric"),
    "turn-geometric": ("turn", "geometric"),
    "turn-arithmetic": ("turn", "arithmetic"),
}


def batch():
    """Three rows of unequal turns (two agents' views), padding at the end, GRPO advantages per row.

    Returns (theta, tokens, mask, turn_ids, adv): theta (B, T, V) the logits being trained, tokens (B, T) the
    sampled ids, mask (B, T) 1 on trained tokens, turn_ids (B, T), adv (B, T) per-token advantages."""
    g = torch.Generator().manual_seed(0)
    B, T, V = 3, 12, 7
    theta = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    tokens = torch.randint(V, (B, T), generator=g)
    mask = torch.tensor(
        [
            [0, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0],
            [0, 0, 1, 0, 1, 1, 1, 1, 1, 0, 1, 0],
            [1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0],
        ],
        dtype=torch.float64,
    )
    turn_ids = torch.tensor(
        [
            [-1, 0, 0, 0, -1, 1, 1, -1, -1, -1, -1, -1],
            [-1, -1, 0, -1, 1, 1, 1, 1, 1, -1, 2, -1],
            [0, 0, 0, 0, 0, -1, -1, 1, -1, -1, -1, -1],
        ]
    )
    rewards = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    adv, _ = grpo_advantages(rewards, torch.zeros(3, dtype=torch.long), mask, turn_ids)
    return theta, tokens, mask, turn_ids, adv


def gradient(theta, tokens, mask, turn_ids, adv, *, level, mean, agg, old_shift=None):
    """d loss / d theta of :func:`policy_loss`, with old_logp = logp (ratio 1) or logp + ``old_shift``."""
    theta = theta.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    old = logp.detach() if old_shift is None else logp.detach() + old_shift
    loss, stats = policy_loss(logp, old, adv, mask, turn_ids, ratio_level=level, ratio_mean=mean, agg=agg)
    loss.backward()
    return theta.grad, stats


@pytest.mark.parametrize("agg", ["turn", "trajectory"])
def test_at_ratio_one_the_three_ratio_modes_give_the_plain_policy_gradient(agg):
    theta, tokens, mask, turn_ids, adv = batch()
    grads = {}
    for name, (level, mean) in MODES.items():
        grads[name], stats = gradient(theta, tokens, mask, turn_ids, adv, level=level, mean=mean, agg=agg)
        assert float(stats["clip_frac"]) == 0.0 and float(stats["ratio_mean"]) == 1.0
    # the REINFORCE gradient -A ∇log π, normalised by the same aggregation: no ratio, no clip
    theta_pg = theta.clone().requires_grad_(True)
    logp = torch.log_softmax(theta_pg, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    aggregate(-adv * logp, mask, agg, turn_ids).backward()
    assert theta_pg.grad.abs().sum() > 0
    for name, grad in grads.items():
        torch.testing.assert_close(grad, theta_pg.grad, rtol=1e-12, atol=1e-12, msg=name)


def test_only_the_normalisation_differs_between_aggregations_at_ratio_one():
    """Turns of unequal length: token-mean and turn-mean weigh the same per-token gradients differently."""
    theta, tokens, mask, turn_ids, adv = batch()
    token_agg, _ = gradient(theta, tokens, mask, turn_ids, adv, level="token", mean="geometric", agg="token")
    turn_agg, _ = gradient(theta, tokens, mask, turn_ids, adv, level="token", mean="geometric", agg="turn")
    assert not torch.allclose(token_agg, turn_agg)
    # ... and each row's gradient differs only by a positive scale per turn: same direction within a turn
    in_turn = (slice(1, 2), slice(4, 9))  # row 1's turn 1
    cos = torch.nn.functional.cosine_similarity(token_agg[in_turn].flatten(), turn_agg[in_turn].flatten(), dim=0)
    assert abs(float(cos) - 1.0) < 1e-12


@pytest.mark.parametrize("agg", ["turn", "trajectory"])
def test_once_old_logp_differs_the_ratio_modes_part(agg):
    theta, tokens, mask, turn_ids, adv = batch()
    shift = 0.15 * torch.randn(mask.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = {
        name: gradient(theta, tokens, mask, turn_ids, adv, level=level, mean=mean, agg=agg, old_shift=shift)[0]
        for name, (level, mean) in MODES.items()
    }
    names = list(grads)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert (grads[a] - grads[b]).abs().max() > 1e-4, (a, b)


def test_advantages_that_vary_within_a_turn_part_token_and_turn_ratios_even_at_ratio_one():
    """The equality needs one advantage per turn (GRPO, Dr.GRPO, RLOO; REINFORCE++ at gamma = 1 without
    KL-in-reward). REINFORCE++ with gamma < 1 discounts within the turn: the turn ratio sees the turn's mean."""
    theta, tokens, mask, turn_ids, _ = batch()
    rewards = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    adv, _ = reinforce_pp_advantages(rewards, torch.zeros(3, dtype=torch.long), mask, turn_ids, gamma=0.5)
    token, _ = gradient(theta, tokens, mask, turn_ids, adv, level="token", mean="geometric", agg="turn")
    turn, _ = gradient(theta, tokens, mask, turn_ids, adv, level="turn", mean="geometric", agg="turn")
    assert (token - turn).abs().max() > 1e-4


class RecordingSGD(torch.optim.SGD):
    """SGD that records the gradient of every step it takes (so later mini-batches see a moved policy)."""

    def __init__(self, params, lr):
        super().__init__(list(params), lr=lr)
        self.grads: list[torch.Tensor] = []

    def step(self, closure=None):
        self.grads.append(torch.cat([p.grad.flatten().clone() for g in self.param_groups for p in g["params"]]))
        return super().step(closure)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")  # optimizer swapped
def test_the_trainer_update_gives_one_gradient_for_the_three_ratio_modes_until_the_policy_moves(tmp_path):
    """``update_policy`` on the tiny model with two mini-batches: the first optimizer step (π_old = π) is the same
    for every ratio mode; the second (after one step with a large learning rate) is not."""
    steps = {}
    for name, (level, mean) in MODES.items():
        cfg = tiny_cfg(
            tmp_path / name,
            "rollout.mode=multi_turn",
            "algo.agg=trajectory",
            f"algo.ratio_level={level}",
            f"algo.ratio_mean={mean}",
            "train.mini_batches=2",
            "train.seed=3",
        )
        tr = Trainer(cfg, correctness_fn=upper_share, prompts=SHORT_PROMPTS)
        pol = tr.policies[0]
        pol.optimizer = RecordingSGD((p for p in pol.model.parameters() if p.requires_grad), lr=3.0)
        tr.train_step()
        steps[name] = pol.optimizer.grads
    first = [s[0] for s in steps.values()]
    assert first[0].norm() > 0
    for g in first[1:]:
        torch.testing.assert_close(g, first[0], rtol=1e-4, atol=1e-6)
    second = [s[1] for s in steps.values()]
    assert all(len(s) == 2 for s in steps.values())
    for i in range(3):
        for j in range(i + 1, 3):
            assert (second[i] - second[j]).abs().max() > 1e-6 * second[i].abs().max(), (i, j)
