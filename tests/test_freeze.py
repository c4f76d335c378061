"""train.update_agents: RL under a frozen agent (the paper's Fig. 3 ablation), with separate and shared weights."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from helpers.recording import RecordingOptimizer
from test_train import SHORT_PROMPTS, make, tiny_cfg, upper_share

from rema.config import ConfigError, load_config
from rema.rollout import rollout
from rema.scoring import score_episodes
from rema.train import Trainer, update_policy
from rema.train.batch import build_rows


def _weights(tr: Trainer) -> dict[str, list[torch.Tensor]]:
    return {p.name: [q.detach().clone() for q in p.model.parameters()] for p in tr.policies}


def _same(a: list[torch.Tensor], b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("train,frozen", [("ra", "mta"), ("mta", "ra")])
def test_separate_weights_freeze_one_agent_bit_for_bit_without_its_optimizer(tmp_path, train, frozen):
    tr = make(
        tmp_path,
        "train.shared_weights=false",
        "train.switch_freq=1",
        "algo.ratio_level=token",
        f"train.update_agents={train}",
        "train.steps=3",
        "train.save_every=1",
        "algo.kl_coef=0.01",
    )
    pol = {p.name: p for p in tr.policies}
    assert pol[frozen].optimizer is None and pol[frozen].scheduler is None  # no optimizer state at all
    assert pol[frozen].ref is None  # nor a KL reference copy: a frozen agent has no KL term
    assert pol[train].optimizer is not None and pol[train].ref is not None
    before = _weights(tr)
    tr.fit()
    assert _same(before[frozen], pol[frozen].model.parameters())  # bit-identical after 3 steps
    assert not _same(before[train], pol[train].model.parameters())
    # switch_freq=1 would alternate every step: the schedule never switches to the frozen agent
    for m in _metrics(tr.run_dir):
        assert m[f"train/updated/{train}"] == 1.0 and m[f"train/updated/{frozen}"] == 0.0
        assert m["train/active_agent"] == float(train == "ra")
    state = torch.load(tr.run_dir / "checkpoints" / "step_000003" / "state.pt", weights_only=False)
    assert state["policies"][frozen]["optimizer"] is None and state["policies"][frozen]["scheduler"] is None
    assert state["policies"][train]["optimizer"]["state"]  # the trained agent's AdamW moments are saved


def test_frozen_agent_run_resumes_exactly(tmp_path):
    extra = ("train.shared_weights=false", "algo.ratio_level=token", "train.update_agents=ra", "train.steps=3")
    whole = make(tmp_path / "a", *extra)
    whole.fit()
    cut = make(tmp_path / "b", *extra)
    cut.fit(max_steps=2)
    resumed = Trainer(
        load_config(cut.run_dir / "config.yaml"),
        cut.run_dir,
        resume=True,
        correctness_fn=upper_share,
        prompts=cut.prompts,
    )
    assert resumed.policy_of("mta").optimizer is None
    resumed.fit()
    drop = ("time/", "perf/")
    strip = lambda ms: [{k: v for k, v in m.items() if not k.startswith(drop)} for m in ms]  # noqa: E731
    assert strip(_metrics(whole.run_dir)) == strip(_metrics(resumed.run_dir))
    for a, b in zip(whole.policies, resumed.policies):
        assert _same(list(a.model.parameters()), b.model.parameters()), a.name


def _constant_ra_reward(monkeypatch):
    """Scoring where every RA row has the same reward (so GRPO gives the RA zero advantage) while the MTA's
    rewards vary: only the MTA's rows carry a learning signal."""
    import rema.train.trainer as trainer_mod

    def score(episodes, *args, **kwargs):
        for ep in episodes:
            ep.reward = {"mta": upper_share(ep), "ra": 0.5}
        return {}

    monkeypatch.setattr(trainer_mod, "score_episodes", score)


@pytest.mark.parametrize("update_agents,moves", [("ra", False), ("both", True)])
def test_shared_weights_leave_the_frozen_roles_rows_out_of_the_loss(tmp_path, monkeypatch, update_agents, moves):
    """Shared weights, MTA frozen: only the MTA's rows carry a signal here, so the one model must stay
    bit-identical (with ``both`` the same rows move it)."""
    _constant_ra_reward(monkeypatch)
    tr = make(tmp_path, "rollout.mode=multi_turn", f"train.update_agents={update_agents}", "train.steps=2")
    before = _weights(tr)["shared"]
    metrics = [tr.train_step() for _ in range(2)]
    assert _same(before, tr.policies[0].model.parameters()) is not moves
    assert all(m["train/updated/mta"] == float(moves) and m["train/updated/ra"] == 1.0 for m in metrics)
    assert metrics[0]["train/rows"] == 16 * (1 + moves)  # 4 questions x 4 samples, one row per agent


def _scored_episodes(tr: Trainer):
    episodes = rollout(tr.sampler.next_batch(), tr.cfg.rollout, tr.engines, tr.prompts)
    score_episodes(
        episodes, tr.cfg.reward, task=tr.cfg.rollout.task, mode=tr.cfg.rollout.mode, correctness_fn=upper_share
    )
    return episodes


def _update(tr: Trainer, rows, agents):
    pol = tr.policies[0]
    opt = RecordingOptimizer(p for p in pol.model.parameters() if p.requires_grad)
    out = update_policy(
        pol.model,
        opt,
        rows,
        algo=tr.cfg.algo,
        train=tr.cfg.train,
        fwd=tr.forward,
        pad_id=pol.tokenizer.pad_token_id,
        step=0,
        agents=agents,
    )
    return [torch.cat([g.flatten() for g in grads]) for grads in opt.grads], out


@pytest.mark.parametrize("extra", [(), ("train.mini_batches=2", "train.ppo_epochs=2")], ids=["one-pass", "recomputed"])
def test_grpo_gradient_of_a_frozen_mta_is_the_ra_rows_alone(tmp_path, extra):
    """GRPO groups are per (question, agent): advantages computed on all rows, then the MTA's rows dropped, give
    the update the RA's rows alone give (π_old recomputed for the kept rows only in the multi-pass variant)."""
    tr = Trainer(
        tiny_cfg(tmp_path, "rollout.mode=multi_turn", "train.update_agents=ra", *extra),
        correctness_fn=upper_share,
        prompts=SHORT_PROMPTS,
    )
    episodes = _scored_episodes(tr)
    g_dropped, out = _update(tr, build_rows(episodes, ("mta", "ra")), ("ra",))
    g_alone, _ = _update(tr, build_rows(episodes, ("ra",)), None)
    assert len(g_dropped) == len(g_alone) == tr.cfg.train.mini_batches * tr.cfg.train.ppo_epochs
    assert g_dropped[0].abs().max() > 0
    for a, b in zip(g_dropped, g_alone):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-5)
    assert out["train/rows"] == 16


def test_reinforce_pp_whitens_over_both_agents_before_the_mta_rows_are_dropped(tmp_path):
    """REINFORCE++'s batch whitening sees both agents' tokens, as with ``both``: the RA's advantages are the ones
    it gets when both agents train (documented choice), not those of the RA's rows whitened alone."""
    tr = Trainer(
        tiny_cfg(tmp_path, "rollout.mode=multi_turn", "algo.advantage=reinforce_pp"),
        correctness_fn=upper_share,
        prompts=SHORT_PROMPTS,
    )
    episodes = _scored_episodes(tr)
    rows = build_rows(episodes, ("mta", "ra"))
    _, frozen = _update(tr, rows, ("ra",))
    _, both = _update(tr, rows, None)
    _, alone = _update(tr, build_rows(episodes, ("ra",)), None)
    for key in ("adv/adv_mean", "adv/adv_std", "adv/return_mean"):
        assert frozen[key] == both[key], key
    assert frozen["adv/adv_std"] != alone["adv/adv_std"]


def test_update_agents_is_checked():
    with pytest.raises(
        ConfigError, match=r"train.update_agents='reasoner' is not valid; choose one of \['both', 'mta', 'ra'\]"
    ):
        load_config(None, ["train.update_agents=reasoner"])
    with pytest.raises(ConfigError, match="freezes the only agent of rollout.method=vrp"):
        load_config(None, ["rollout.method=vrp", "train.update_agents=mta"])
    assert load_config(None, ["rollout.method=vrp", "train.update_agents=ra"]).train.update_agents == "ra"


def test_the_fig3_config_loads():
    from pathlib import Path

    cfg = load_config(Path(__file__).parents[1] / "configs" / "rema_frozen_mta.yaml")
    assert cfg.train.update_agents == "ra" and not cfg.train.shared_weights and cfg.sft.cold_start
    assert cfg.rollout.mode == "single_turn"


def test_rema_plan_counts_one_optimizer_when_an_agent_is_frozen():
    from rema.plan import ModelShape, plan, setup_from_config

    both = setup_from_config(load_config(None, ["train.shared_weights=false"]), native_bf16_cpu=False)
    frozen = setup_from_config(
        load_config(None, ["train.shared_weights=false", "train.update_agents=ra"]), native_bf16_cpu=False
    )
    assert (both.models, both.optimizers, frozen.models, frozen.optimizers) == (2, 2, 2, 1)
    shape = ModelShape(
        name="small",
        hidden=64,
        intermediate=128,
        layers=2,
        heads=4,
        kv_heads=2,
        head_dim=16,
        vocab=100,
        tied=True,
        params=100_000,
        embedding=6_400,
        head=0,
        layer_params=40_000,
        lora_params_per_rank=1_000,
    )
    state = [{x.component: x.gib for x in plan(shape, s).lines}["optimizer state"] for s in (both, frozen)]
    assert state[0] == 2 * state[1]
    # the KL reference: a copy per trained model only
    with_kl = [replace(s, kl_ref=True) for s in (both, frozen)]
    ref = [{x.component: x.gib for x in plan(shape, s).lines}["KL reference"] for s in with_kl]
    assert ref[0] == 2 * ref[1]
