"""The health guard on the tiny model: each failure, forced by a scripted policy that collapses at the run's
learning rate (or by an absurd learning rate on the real tiny model), is named at the step it shows, the run rolls
back to the newest healthy checkpoint before it and finishes; stop, warn, exhausted rollbacks, resume, and every
rank of a two-process run taking the same decision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.collapse import CollapsingEngine, correct

from rema.config import load_config
from rema.prompts import PromptSet
from rema.train import RunUnhealthy, Trainer

SHORT_PROMPTS = PromptSet("test", "plan", "solve")
HELPERS = Path(__file__).parent / "helpers"

BASE = [
    "model.name=tiny-random",
    "rollout.mode=single_turn",
    "rollout.max_tokens_per_turn=48",
    "rollout.max_turns=2",
    "rollout.samples_per_question=2",
    "train.questions_per_step=2",
    "train.steps=6",
    "train.lr=1e-2",
    "data.train=synthetic:levels=1:n=40:seed=0:word=0",
    "data.eval=null",
    "train.eval_every=0",
    "reward.mask_unfinished=false",
    "log.progress=false",
    "log.tensorboard=false",
    "train.save_every=1",
    "train.autocast=off",
    "train.sample_every=1",
    "train.samples_to_log=1",
]


def collapsing(tmp_path, failure: str, *overrides, at: int = 4, safe_lr: float = 6e-3) -> Trainer:
    """A trainer whose policy collapses (``failure``) from step ``at`` while its learning rate is above ``safe_lr``."""
    holder: dict = {}
    cfg = load_config(None, [*BASE, f"log.run_dir={tmp_path / 'run'}", *overrides])
    tr = Trainer(
        cfg,
        correctness_fn=correct,
        prompts=SHORT_PROMPTS,
        engine_factory=lambda model, tok, seed: CollapsingEngine(tok, failure, at, safe_lr, holder),
    )
    holder["trainer"] = tr
    return tr


def records(run: Path, name: str = "metrics.jsonl") -> list[dict]:
    path = run / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def events(run: Path) -> list[dict]:
    return [r for r in records(run) if "health/event" in r]


def steps_logged(run: Path) -> list[int]:
    return [r["step"] for r in records(run) if "health/event" not in r]


CASES = {  # failure: (overrides, a check expected to fire, the step its streak begins)
    "format": (["rollout.mode=multi_turn"], "format", 4),
    "degenerate": ([], "degenerate", 4),
    "length": ([], "length_pinned", 4),
    "reward": (["train.health.smooth=1"], "reward_cliff", 4),
    "turns": (["rollout.mode=multi_turn", "rollout.max_turns=3"], "turns_collapse", 4),
    "eval": (
        [
            "data.eval=synthetic:levels=1:n=2:seed=1:word=0",
            "train.eval_every=1",
            "train.health.skip=[reward_cliff]",
            "train.health.eval_min_episodes=2",
        ],
        "eval_cliff",
        3,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_failure_is_named_rolled_back_and_the_run_finishes(tmp_path, case):
    overrides, check, since = CASES[case]
    failure = "reward" if case == "eval" else case
    tr = collapsing(tmp_path, failure, *overrides)
    tr.fit()
    [event] = events(tr.run_dir)
    assert check in event["health/check"].split(", "), event
    assert event["health/action"] == "rollback" and event["health/since"] == since
    assert event["step"] == since + (0 if case == "eval" else 1)  # a streak of train.health.patience=2 steps
    # steps since - 1 .. were sampled from suspect weights: back to the checkpoint before them (save_every=1)
    assert event["health/to_step"] == since - 2 and event["health/lr_scale"] == 0.5
    assert tr.step == 6 and (tr.run_dir / "final" / "config.json").is_file()  # the run finished
    assert steps_logged(tr.run_dir) == [s for s in range(0, 7) if s > 0 or case == "eval"]
    aside = records(tr.run_dir, "metrics_rolled_back.jsonl")
    assert [r["step"] for r in aside] == list(range(since - 1, event["step"] + 1))
    assert {r["rollback"] for r in aside} == {1}
    assert [r["lr"] for r in records(tr.run_dir) if r.get("step", 0) > since - 2 and "lr" in r] == [5e-3] * (8 - since)
    assert tr.guard.rollbacks == 1 and tr.guard.firing == []
    marks = {p.name: json.loads((p / "health.json").read_text()) for p in (tr.run_dir / "checkpoints").glob("step_*")}
    assert all(m["healthy"] for m in marks.values()), marks  # the abandoned ones are gone


def test_stop_checkpoints_marks_it_unhealthy_and_names_the_check(tmp_path):
    tr = collapsing(tmp_path, "length", "train.health.action=stop", "train.keep_checkpoints=0")
    with pytest.raises(
        RunUnhealthy,
        match=r"health check length_pinned, format fired at step 5: "
        r".*train/truncated_turns/ra.*train.health.action=stop.*--checkpoint best",
    ):
        tr.fit()
    assert tr.step == 5 and not (tr.run_dir / "final").exists()
    [event] = events(tr.run_dir)
    assert event["health/action"] == "stop" and event["step"] == 5
    marks = {
        p.name: json.loads((p / "health.json").read_text())["healthy"]
        for p in (tr.run_dir / "checkpoints").glob("step_*")
    }
    assert marks["step_000005"] is False and marks["step_000003"] is False and marks["step_000002"] is True


def test_rollbacks_run_out_then_the_run_stops(tmp_path):
    tr = collapsing(tmp_path, "degenerate", "train.health.max_rollbacks=1", "train.steps=10", safe_lr=1e-4)
    with pytest.raises(RunUnhealthy, match=r"fired at step 5: .*after 1 rollback\(s\), train.health.max_rollbacks=1"):
        tr.fit()
    assert [(e["step"], e["health/action"]) for e in events(tr.run_dir)] == [(5, "rollback"), (5, "stop")]


def test_warn_logs_the_event_marks_checkpoints_and_goes_on(tmp_path, capsys):
    from rema.runtime.checkpoints import best_healthy

    tr = collapsing(
        tmp_path, "format", "rollout.mode=multi_turn", "train.health.action=warn", "train.keep_checkpoints=0"
    )
    tr.fit()
    [event] = events(tr.run_dir)
    assert (event["step"], event["health/action"], event["health/since"]) == (5, "warn", 4)
    assert steps_logged(tr.run_dir) == [1, 2, 3, 4, 5, 6] and tr.guard.rollbacks == 0
    marks = {
        p.name: json.loads((p / "health.json").read_text())["healthy"]
        for p in sorted((tr.run_dir / "checkpoints").glob("step_*"))
    }
    assert marks == {f"step_00000{s}": s < 3 for s in range(1, 7)}  # collapsed to the end: 3 .. 6 unhealthy
    assert best_healthy(tr.run_dir).name == "step_000002"
    assert "health: step 5: " in capsys.readouterr().err


def test_resume_keeps_the_guard_state_and_continues_the_rolled_back_run(tmp_path):
    whole = collapsing(tmp_path / "whole", "degenerate")
    whole.fit()
    cut = collapsing(tmp_path / "cut", "degenerate")

    def ctrl_c_after_the_rollback(ep):  # as Ctrl-C does: finish the step, save, return
        cut.stop_requested |= cut.guard.rollbacks == 1 and cut.step == 3
        return correct(ep)

    cut.correctness_fn = ctrl_c_after_the_rollback
    cut.fit()  # steps 1-5, the rollback to 2 at step 5, then 3 and 4 again
    assert cut.step == 4 and cut.guard.rollbacks == 1 and not (cut.run_dir / "final").exists()
    cfg = load_config(cut.run_dir / "config.yaml")
    holder: dict = {}
    again = Trainer(
        cfg,
        cut.run_dir,
        resume=True,
        correctness_fn=correct,
        prompts=SHORT_PROMPTS,
        engine_factory=lambda model, tok, seed: CollapsingEngine(tok, "degenerate", 4, 6e-3, holder),
    )
    holder["trainer"] = again
    assert again.guard.state_dict() == cut.guard.state_dict()
    assert again.policies[0].optimizer.param_groups[0]["lr"] == 5e-3  # the lowered learning rate came back too
    again.fit()

    def clean(run, name="metrics.jsonl"):
        return [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/"))} for r in records(run, name)]

    assert clean(again.run_dir) == clean(whole.run_dir)
    assert clean(again.run_dir, "metrics_rolled_back.jsonl") == clean(whole.run_dir, "metrics_rolled_back.jsonl")
    for p, q in zip(whole.policies[0].model.parameters(), again.policies[0].model.parameters()):
        assert torch.equal(p, q)


def test_an_absurd_learning_rate_collapses_the_tiny_model_and_the_guard_recovers(tmp_path):
    """The real tiny model (no script) at lr 1.0 collapses: it games the upper-case reward by repeating one letter,
    its entropy at 0; the guard rolls back with the learning rate x 1e-3 and the run ends all its steps, its last
    checkpoint healthy."""
    from test_train import make, upper_share  # noqa: F401 - the same run settings as the trainer's tests

    tr = make(
        tmp_path,
        "train.steps=8",
        "train.lr=1.0",
        "train.health.lr_factor=0.001",
        "train.save_every=2",
        "train.questions_per_step=2",
        "rollout.max_tokens_per_turn=24",
    )
    tr.fit()
    fired = events(tr.run_dir)
    assert fired and all(e["health/action"] == "rollback" for e in fired)
    assert fired[0]["health/to_step"] < fired[0]["health/since"] - 1
    assert tr.step == 8 and (tr.run_dir / "final" / "config.json").is_file()
    assert json.loads((tr.run_dir / "checkpoints" / "step_000008" / "health.json").read_text())["healthy"]
    assert records(tr.run_dir)[-1]["lr"] == pytest.approx(1e-3 ** len(fired))


def test_report_marks_the_events_and_eval_takes_the_best_healthy_checkpoint(tmp_path, capsys):
    from rema.cli import main
    from rema.eval.report import build_report
    from rema.runtime.runs import run_models

    tr = collapsing(tmp_path, "reward", *CASES["eval"][0], "train.keep_checkpoints=0")
    tr.fit()
    [event] = events(tr.run_dir)
    assert main(["report", str(tr.run_dir), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "1 health event(s)" in out and f"step {event['step']}: rollback to step 1" in out
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "eval_cliff" in page and "Health events" in page
    # the healthy checkpoints' held-out accuracy is 1.0 (steps 1, 2, then the replayed 3-6): the newest of the ties
    mta, ra = run_models(tr.run_dir, "best")
    assert mta == ra == tr.run_dir / "exports" / "step_000006" and (mta / "config.json").is_file()
    assert build_report(tr.run_dir).name == "report"


def test_the_cli_exits_4_naming_the_check(tmp_path, monkeypatch, capsys):
    import rema.train as train_pkg
    from rema.cli import main

    def unhealthy(*args, **kwargs):
        raise RunUnhealthy("health check format fired at step 5: ...")

    monkeypatch.setattr(train_pkg, "train", unhealthy)
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    assert main(["train", str(demo), "model.name=tiny-random"]) == 4
    assert "health check format fired at step 5" in capsys.readouterr().err


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_every_rank_takes_rank_0s_decision(tmp_path, strategy):
    """Two gloo processes; rank 1's guard never sees the check fire, yet it rolls back with rank 0 (the verdict
    is rank 0's, broadcast), and both end the run together; under FSDP from the sharded checkpoint."""
    out = tmp_path / "rank"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(29600 + os.getpid() % 1000),
        str(HELPERS / "guard_ddp.py"),
        str(out),
        str(tmp_path / "run"),
        strategy,
    ]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "REMA_ENGINE": "hf"}, timeout=600)
    ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)]
    assert ranks[0] == {"step": 6, "rollbacks": 1, "events": 1, "lr": 5e-3}
    assert ranks[1] == ranks[0]  # blind, yet it rolled back: rank 0's verdict
    [event] = events(tmp_path / "run")
    assert event["health/action"] == "rollback" and event["health/to_step"] == 2
