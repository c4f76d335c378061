"""The health checks on hand-made histories, the guard's decisions and state, checkpoint marks, and the
``train.health`` config (nested keys, the ``train.health=false`` shorthand, validation)."""

from __future__ import annotations

import json

import pytest
import torch

from rema.config import ConfigError, HealthConfig, load_config
from rema.runtime.checkpoints import HEALTH_FILE, best_healthy, healthy_before, mark_text, save_checkpoint
from rema.scoring import non_text, repeated_share, repetitive
from rema.train.guard import HealthGuard, needed_for_rollback, remark
from rema.train.health import CHECKS, at_most, cliff, falls, rises, run_checks, spike
from rema.train.metrics import truncate_jsonl

DEFAULTS = HealthConfig()


def history(key: str, values, start: int = 1, **others) -> list[dict]:
    """Step records ``start, start + 1, ...`` with ``key`` (and each of ``others``) taking ``values`` in turn."""
    series = {key: values, **others}
    return [
        {"step": start + i, **{k: v[i] for k, v in series.items() if i < len(v) and v[i] is not None}}
        for i in range(len(values))
    ]


# --- the pure shapes -------------------------------------------------------------------------------------


def test_shapes_fire_only_on_a_streak_of_patience_against_enough_history():
    assert at_most([1.0, 0.005, 0.004], floor=0.01, patience=2)
    assert not at_most([1.0, 0.5, 0.004], floor=0.01, patience=2)  # one low step is not a streak
    assert rises([0.0, 0.1, 0.2, 1.0, 1.0], high=0.95, low=0.5, patience=2, min_history=3)
    assert not rises([0.0, 0.1, 1.0, 1.0], high=0.95, low=0.5, patience=2, min_history=3)  # too early
    assert not rises([0.9, 0.8, 0.7, 1.0, 1.0], high=0.95, low=0.5, patience=2, min_history=3)  # never was low
    assert falls([1.0, 0.9, 1.0, 0.2, 0.1], ratio=0.5, least=0.75, patience=2, min_history=3)
    assert not falls([0.6, 0.7, 0.6, 0.0, 0.0], ratio=0.5, least=0.75, patience=2, min_history=3)  # never learned
    assert not falls([1.0, 0.9, 1.0, 0.2, 0.6], ratio=0.5, least=0.75, patience=2, min_history=3)
    assert spike([1.0, 2.0, 1.5, 30.0, 40.0], factor=10, floor=0.0, patience=2, min_history=3)
    assert not spike([1.0, 2.0, 1.5, 30.0, 4.0], factor=10, floor=0.0, patience=2, min_history=3)
    assert not spike([0.01, 0.02, 0.01, 0.3, 0.4], factor=10, floor=0.5, patience=2, min_history=3)  # under floor
    # steps without signal (a gradient norm of 0: every reward of the batch equal) do not set the scale
    assert not spike([1.0, 0.0, 0.0, 0.0, 0.5, 0.5], factor=10, floor=0.0, patience=2, min_history=3)


def test_cliff_compares_running_means_with_the_recent_level():
    healthy = [0.6, 0.4, 0.7, 0.5, 0.6, 0.45]
    assert cliff(healthy + [0.0, 0.0, 0.0, 0.0], drop=0.4, ratio=0.5, smooth=3, patience=2, min_history=3)
    assert not cliff(healthy + [0.0, 0.0, 0.0], drop=0.4, ratio=0.5, smooth=3, patience=2, min_history=3)  # mean lags
    assert not cliff(healthy + [0.3, 0.2, 0.3, 0.2], drop=0.4, ratio=0.5, smooth=3, patience=2, min_history=3)
    # one lucky step does not raise the bar: the level is the median, not the best
    assert cliff([0.5, 0.5, 1.0, 0.5, 0.05, 0.05], drop=0.4, ratio=0.5, smooth=1, patience=2, min_history=3)
    # below zero (shaped rewards) only the absolute drop applies
    assert cliff([-0.1, -0.2, -0.1, -0.9, -1.0], drop=0.4, ratio=0.5, smooth=1, patience=2, min_history=3)


# --- the named checks ------------------------------------------------------------------------------------

HEALTHY_THEN_BROKEN = {  # check: (key, healthy values, broken values, other keys needed)
    "entropy": ("stats/entropy", [0.8, 0.6, 0.5], [0.005, 0.004]),
    "turns_collapse": ("train/turns/mean", [3.0, 2.8, 3.0], [1.0, 1.0]),
    "turns_pinned": ("train/end/max_turns", [0.1, 0.0, 0.05], [1.0, 1.0]),
    "length_pinned": ("train/truncated_turns/ra", [0.0, 0.1, 0.0], [0.97, 1.0]),
    "format": ("train/boxed_rate", [0.95, 1.0, 0.9], [0.2, 0.1]),
    "degenerate": ("train/degenerate/repetitive", [0.0, 0.05, 0.0], [0.8, 0.9]),
    "reward_cliff": ("train/reward/ra", [0.6, 0.5, 0.7, 0.6, 0.5], [0.0, 0.0, 0.0]),
    "eval_cliff": ("eval/acc", [0.5, None, 0.6], [0.1]),
    "kl_spike": ("stats/kl", [0.01, 0.012, 0.011], [0.5, 0.6]),
    "grad_spike": ("stats/grad_norm", [0.5, 0.7, 0.6], [20.0, 30.0]),
    "logp_drift": ("check/sampler_logp_abs_diff", [0.01, 0.012, 0.011], [0.6, 0.7]),
}


@pytest.mark.parametrize("name", CHECKS)
def test_each_check_fires_on_its_collapse_and_names_its_streak(name):
    key, healthy, broken = HEALTHY_THEN_BROKEN[name]
    others = {}
    if name == "eval_cliff":  # an evaluation of 30 episodes, every other step
        others["eval/episodes"] = [30.0 if v is not None else None for v in healthy + broken]
    steps = history(key, healthy + broken, **others)
    [finding] = [f for f in run_checks(steps, DEFAULTS) if f.check == name]
    first_broken = len(healthy) + 1
    assert finding.since == (first_broken if name != "reward_cliff" else first_broken + 1)  # the mean lags
    assert key in finding.message and "train.health." in finding.message
    assert not [f for f in run_checks(steps[:-1], DEFAULTS) if f.check == name]  # the streak was one short
    assert not run_checks(history(key, healthy + healthy, **others), DEFAULTS)


def test_a_healthy_history_of_every_signal_fires_nothing():
    keys = {k: (h * 4)[:12] for k, h, _ in HEALTHY_THEN_BROKEN.values() if k != "eval/acc"}
    steps = history("train/acc", [0.5, 0.6, 0.4] * 4, **keys)
    assert run_checks(steps, DEFAULTS) == []


def test_small_evaluations_and_skipped_checks_do_not_fire():
    accs = [0.25, 0.5, 0.25, 0.0]  # 4 questions: one answer moves accuracy by 25 points
    assert not run_checks(history("eval/acc", accs, **{"eval/episodes": [4.0] * 4}), DEFAULTS)
    few = HealthConfig(eval_min_episodes=4)
    assert [f.check for f in run_checks(history("eval/acc", accs, **{"eval/episodes": [4.0] * 4}), few)] == [
        "eval_cliff"
    ]
    key, healthy, broken = HEALTHY_THEN_BROKEN["entropy"]
    assert not run_checks(history(key, healthy + broken), HealthConfig(skip=["entropy"]))


# --- the guard -------------------------------------------------------------------------------------------


def feed(guard: HealthGuard, values: list[float], key: str = "train/end/max_turns", start: int = 1) -> list:
    return [guard.observe(start + i, {key: v, "time/step": 1.0}) for i, v in enumerate(values)]


def test_guard_decides_once_per_firing_marks_the_suspect_steps_and_escalates():
    guard = HealthGuard(HealthConfig(max_rollbacks=1))
    verdicts = feed(guard, [0.0, 0.1, 0.0, 1.0, 1.0, 1.0])
    assert verdicts[:4] == [None] * 4 and verdicts[5] is None  # still firing at step 6: no second decision
    v = verdicts[4]
    assert (v.step, v.action, v.checks, v.unhealthy_from) == (5, "rollback", "turns_pinned", 3)
    assert guard.unhealthy == [[3, 6]] and guard.firing == ["turns_pinned"]
    assert [guard.healthy(s) for s in (2, 3, 6)] == [True, False, False]
    assert "time/step" not in guard.history[-1]  # only the watched keys are kept
    guard.rolled_back(2, 5)
    assert guard.rollbacks == 1 and guard.lr_scale == 0.5 and guard.unhealthy == [] and guard.firing == []
    assert [r["step"] for r in guard.history] == [1, 2]
    verdicts = feed(guard, [0.0, 1.0, 1.0], start=3)
    assert verdicts[2].action == "stop"  # train.health.max_rollbacks=1 reached
    assert guard.rollback_before(verdicts[2]) == 2  # not past step 5 yet: before the last rollback's target
    feed(guard, [0.0, 0.0, 0.0], start=6)
    assert guard.retreat is None  # got past step 5: that rollback helped


def test_guard_actions_warn_only_and_state_round_trip():
    guard = HealthGuard(HealthConfig(warn_only=["turns_pinned"]))
    v = feed(guard, [0.0, 0.1, 0.0, 1.0, 1.0])[-1]
    assert v.action == "warn"
    event = guard.event(v, "warn")
    assert event["health/event"] == 0 and event["health/check"] == "turns_pinned" and event["health/since"] == 4
    again = HealthGuard(HealthConfig())
    again.load_state_dict(json.loads(json.dumps(guard.state_dict())))  # it travels in checkpoints
    assert again.state_dict() == guard.state_dict()
    assert HealthGuard(HealthConfig(action="stop")).observe(1, {}) is None
    off = HealthGuard(HealthConfig(enabled=False))
    assert feed(off, [0.0, 0.1, 0.0, 1.0, 1.0]) == [None] * 5 and off.history == []


# --- checkpoint marks, rotation, best --------------------------------------------------------------------


def _ckpt(root, step, healthy, **kw):
    return save_checkpoint(
        root, step, {"step": step}, files={HEALTH_FILE: mark_text({"step": step, "healthy": healthy})}, **kw
    )


def test_rotation_spares_the_checkpoints_a_rollback_needs_and_marks_are_rewritten(tmp_path):
    root = tmp_path / "checkpoints"
    guard = HealthGuard(HealthConfig(patience=2))  # reach: 3 steps
    for step, healthy in ((0, True), (2, True), (4, False), (6, True), (8, False)):
        _ckpt(root, step, healthy, keep=1, spare=needed_for_rollback(root, step, guard))
    # step 8: healthy ones of steps >= 5 (6) and the newest healthy before (2) survive keep=1
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000002", "step_000006", "step_000008"]
    assert {p.name for p in needed_for_rollback(root, 10, guard)} == {"step_000006"}
    guard.retreat = [6, 9]  # a rollback to step 6 that has not helped yet: the one before it is needed too
    assert {p.name for p in needed_for_rollback(root, 10, guard)} == {"step_000002", "step_000006"}
    assert healthy_before(root, 7).name == "step_000006" and healthy_before(root, 6).name == "step_000002"
    guard = HealthGuard(HealthConfig())
    guard.unhealthy = [[5, 8]]
    remark(root, guard)
    assert json.loads((root / "step_000006" / HEALTH_FILE).read_text())["healthy"] is False
    assert healthy_before(root, 9).name == "step_000002"


def test_best_healthy_checkpoint_by_held_out_accuracy(tmp_path):
    root = tmp_path / "checkpoints"
    for step, healthy in ((2, True), (4, False), (6, True), (8, True)):
        _ckpt(root, step, healthy, keep=0)
    (root / "step_000009").mkdir()  # incomplete (no state.pt): never picked
    rows = [
        {"step": 2, "eval/acc": 0.5},
        {"step": 4, "eval/acc": 0.9},
        {"step": 6, "eval/acc": 0.6},
        {"step": 7, "eval/acc": 0.8},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert best_healthy(tmp_path).name == "step_000006"  # step 4 scored higher but is unhealthy
    (tmp_path / "metrics.jsonl").write_text("")
    assert best_healthy(tmp_path).name == "step_000008"  # nothing evaluated: the newest healthy one


# --- logs ------------------------------------------------------------------------------------------------


def test_truncation_keeps_known_events_and_sets_records_aside(tmp_path):
    path, aside = tmp_path / "metrics.jsonl", tmp_path / "metrics_rolled_back.jsonl"
    rows = [
        {"step": 1},
        {"step": 2},
        {"step": 3},
        {"step": 3, "health/event": 0},
        {"step": 4},
        {"step": 5, "health/event": 1},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    truncate_jsonl(path, 2, keep_events=1, aside=aside, tag={"rollback": 1})
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:2] + [rows[3]]
    assert [json.loads(line) for line in aside.read_text().splitlines()] == [
        {"step": 3, "rollback": 1},
        {"step": 4, "rollback": 1},
        {"step": 5, "health/event": 1, "rollback": 1},
    ]


def test_degenerate_text_detectors():
    assert repetitive("ab ab ab ab ab ab ab ab ab ab ab ab") and repetitive("go go go go go go go go go [FINISH]")
    assert not repetitive("To add 7 and 5, count up from 7: 8, 9, 10, 11, 12. So 7 + 5 = 12.")
    assert not repetitive("The answer is \\boxed{12}. The answer is \\boxed{12}.")  # said twice is not a loop
    assert repeated_share("short") == 0.0
    assert non_text("\ufffd\ufffd\x01 x") and non_text(")))))))))))))))))))]") and not non_text("")
    assert not non_text("x = 3 + 4 = 7, so \\boxed{7}") and not non_text("三加四等于七")


# --- config ----------------------------------------------------------------------------------------------


def test_nested_keys_shorthand_and_validation(tmp_path):
    cfg = load_config(None, ["train.health.patience=4", "train.health.skip=[entropy,format]"])
    assert cfg.train.health.patience == 4 and cfg.train.health.skip == ["entropy", "format"]
    assert cfg.train.health.enabled and Config_roundtrip(cfg, tmp_path) == cfg
    off = load_config(None, ["train.health.patience=5", "train.health=false"])
    assert not off.train.health.enabled and off.train.health.patience == 5
    (tmp_path / "c.yaml").write_text("train:\n  health: off\n")
    assert not load_config(tmp_path / "c.yaml", ["train.health.action=warn"]).train.health.enabled
    with pytest.raises(ConfigError, match="did you mean train.health.patience"):
        load_config(None, ["train.health.patiense=5"])
    with pytest.raises(ConfigError, match="train.health.skip: unknown check.*'entropi'"):
        load_config(None, ["train.health.skip=[entropi]"])
    with pytest.raises(ConfigError, match="train.health.action='undo'"):
        load_config(None, ["train.health.action=undo"])
    with pytest.raises(ConfigError, match="train.health.lr_factor"):
        load_config(None, ["train.health.lr_factor=2"])


def Config_roundtrip(cfg, tmp_path):
    from rema.config import save_config

    save_config(cfg, tmp_path / "saved.yaml")
    return load_config(tmp_path / "saved.yaml")


def test_set_base_lr_keeps_the_schedule_position():
    from types import SimpleNamespace

    from rema.train.policy import lr_lambda, set_base_lr

    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([w], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(4, 10, "constant"))
    opt.step()
    sched.step()  # warm-up factor 2/4
    set_base_lr(SimpleNamespace(scheduler=sched, optimizer=opt), 0.1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05) and sched.get_last_lr() == [pytest.approx(0.05)]
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.075)
    state = sched.state_dict()
    assert state["base_lrs"] == [0.1]  # a checkpoint keeps it


def test_reseed_draws_a_new_stream_the_same_on_every_run(tiny):
    from rema.rollout.engine import SamplingParams
    from rema.rollout.hf_engine import HFEngine

    model, tok = tiny
    prompt, params = [tok("What is 2 + 3?")["input_ids"]], [SamplingParams(max_tokens=12, temperature=1.0)]

    def sample(salt):
        engine = HFEngine(model, tok, seed=0)
        if salt is not None:
            engine.reseed(salt)
        return engine.generate(prompt, params)[0].token_ids

    assert sample(None) == sample(None) and sample(1) == sample(1)  # seeded either way
    assert sample(1) != sample(None) and sample(2) != sample(1)


def test_a_failed_sync_check_fires_logp_drift_at_once_and_is_handed_to_a_rolling_back_guard():
    """A post-sync check beyond the engine's tolerance: under a guard that rolls back the engine reports it
    (sync_check_fatal off) and logp_drift fires on that very step; a guard that only warns, or skips
    logp_drift, leaves the engine raising WeightSyncError as before."""
    from rema.train.guard import guard_sync_checks

    c = HealthConfig()
    calm = [{"step": s, "sync/sync_check_mean_abs_diff": 0.01} for s in range(1, 4)]
    assert CHECKS["logp_drift"](calm, c) is None
    failed = calm + [{"step": 4, "sync/sync_check_mean_abs_diff": 0.13, "sync/sync_check_failed": 1.0}]
    finding = CHECKS["logp_drift"](failed, c)
    assert finding.check == "logp_drift" and finding.since == 4 and "mean 0.13" in finding.message
    assert CHECKS["logp_drift"](failed[:1] + failed[-1:], c) is not None  # no history needed

    class Engine:
        sync_check_fatal = True

    for health, fatal in (
        (HealthConfig(), False),
        (HealthConfig(action="warn"), True),
        (HealthConfig(skip=["logp_drift"]), True),
    ):
        engines = {"shared": Engine(), "hf": object()}
        guard_sync_checks(engines, HealthGuard(health))
        assert engines["shared"].sync_check_fatal is fatal
    guard = HealthGuard(c)
    for record in failed[:-1]:
        assert guard.observe(record["step"], record) is None
    verdict = guard.observe(4, failed[-1])  # the guard keeps the key and rolls back at this step
    assert verdict.action == "rollback" and verdict.checks == "logp_drift" and verdict.step == 4
