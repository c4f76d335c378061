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

BASE = ["model.name=tiny-random", "rollout.mode=single_turn", "rollout.max_tokens_per_turn=48", "rollout.max_turns=2",
        "rollout.samples_per_question=2", "train.questions_per_step=2", "train.steps=6", "train.lr=1e-2",
        "data.train=synthetic:levels=1:n=40:seed=0:word=0", "data.eval=null", "train.eval_every=0",
        "reward.mask_unfinished=false", "log.progress=false", "log.tensorboard=false", "train.save_every=1",
        "train.autocast=off", "train.sample_every=1", "train.samples_to_log=1"]


def collapsing(tmp_path, failure: str, *overrides, at: int = 4, safe_lr: float = 6e-3) -> Trainer:
    """A trainer whose policy collapses (``failure``) from step ``at`` while its learning rate is above ``safe_lr``."""
    holder: dict = {}
    cfg = load_config(None, [*BASE, f"log.run_dir={tmp_path / 'run'}", *overrides])
    tr = Trainer(cfg, correctness_fn=correct, prompts=SHORT_PROMPTS,
                 engine_factory=lambda model, tok, seed: CollapsingEngine(tok, failure, at, safe_lr, holder))
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
    "eval": (["data.eval=synthetic:levels=1:n=2:seed=1:word=0", "train.eval_every=1",
              "train.health.skip=[reward_cliff]", "train.health.eval_min_episodes=2"], "eval_cliff", 3),
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
    assert [r["step"] for r in aside] == list(range(since - 1, event["step"] + 1)) and {r["rollback"] for r in aside} == {1}
    assert [r["lr"] for r in records(tr.run_dir) if r.get("step", 0) > since - 2 and "lr" in r] == [5e-3] * (8 - since)
    assert tr.guard.rollbacks == 1 and tr.guard.firing == []
    marks = {p.name: json.loads((p / "health.json").read_text()) for p in (tr.run_dir / "checkpoints").glob("step_*")}
    assert all(m["healthy"] for m in marks.values()), marks  # the abandoned ones are gone
