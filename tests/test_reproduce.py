"""rema reproduce: the statistics and verdict rules by hand, and the grid run end to end on the tiny model (finished
runs reused after a kill -9, stale ones rerun)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rema.reproduce import EXPERIMENTS, get_experiments
from rema.reproduce.analysis import Run, collapse_step, compare, fig4, fig5_ablation, table1
from rema.reproduce.grid import REPO_CONFIGS, plan_grid
from rema.reproduce.stats import direction, estimate, paired_difference, t95

ROOT = Path(__file__).resolve().parents[1]


def test_estimate_by_hand():
    e = estimate([0.5, 0.6, 0.7])  # mean 0.6, sd 0.1, half = 4.303 * 0.1 / sqrt(3)
    assert e.mean == pytest.approx(0.6)
    assert e.half == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert e.fmt() == "60.0% ± 24.8"
    assert estimate([0.25]).fmt() == "25.0%" and math.isnan(estimate([0.25]).half)
    assert estimate([]).fmt() == "n/a"
    assert t95(2) == 4.303 and t95(11) == 2.228 and t95(100) == 1.96


def test_direction_words():
    assert direction(paired_difference([0.6, 0.7, 0.8], [0.4, 0.5, 0.6])) == "agrees"  # +0.2 every seed: sd 0
    assert direction(paired_difference([0.4, 0.5, 0.6], [0.6, 0.7, 0.8])) == "contradicts"
    assert direction(paired_difference([0.6, 0.4, 0.5], [0.5, 0.5, 0.5])) == "inconclusive"
    assert direction(estimate([0.1])) == "leans yes (1 seed)"
    assert direction(estimate([-0.1])) == "leans no (1 seed)"
    # a margin: +2 points every seed is not "+5 points"
    assert direction(paired_difference([0.52, 0.52], [0.5, 0.5]), margin=0.05) != "agrees"


def _run(arm: str, seed: int, rows: list[dict], evals=("id.jsonl", "ood.jsonl"), q=4, g=6) -> Run:
    cfg = {"data": {"eval": list(evals)}, "train": {"questions_per_step": q}, "rollout": {"samples_per_question": g}}
    return Run(arm, seed, Path("."), rows, cfg)


def test_table1_verdict_from_hand_made_runs():
    def runs(arm, ood):
        return [
            _run(arm, s, [{"step": 8, "eval/id/acc": 0.5, "eval/ood/acc": v, "eval/ood/boxed_rate": 1.0}])
            for s, v in enumerate(ood)
        ]

    results = {
        "vrp_rl": runs("vrp_rl", [0.20, 0.30, 0.25]),
        "rema_multi": runs("rema_multi", [0.30, 0.40, 0.35]),
        "rema_single": runs("rema_single", [0.0, 0.0, 0.0]),
        "vrp_rl_reduce": runs("vrp_rl_reduce", [0.40, 0.30, 0.35]),
    }
    a = table1(results)
    control = a.numbers["rema_vs_vrp_rl_reduce_ood"]  # the single agent taught the same moves does as well
    assert control["diff"] == pytest.approx(0.0) and control["verdict"] == "inconclusive"
    assert any(v.startswith("Control: the gain is the second agent's") for v in a.verdicts)
    n = a.numbers["rema_vs_vrp_rl_ood"]
    assert n["a"] == "rema_multi" and n["diff"] == pytest.approx(0.10) and n["verdict"] == "agrees"
    assert any("Goal" in v and "**met**" in v for v in a.verdicts)
    assert a.numbers["rema_vs_vrp_rl_id"]["verdict"] == "inconclusive"  # equal in distribution: sd 0, diff 0
    assert "| rema_multi | 50.0% ± 0.0 | 35.0% ± 12.4 |" in a.markdown()


@pytest.mark.parametrize(
    "rema, vrp_rl, word",
    [
        ([0.30, 0.40, 0.35], [0.20, 0.30, 0.25], "**met** (+10.0 points;"),  # +10 every seed: interval clear of zero
        ([0.50, 0.45, 0.40], [0.40, 0.40, 0.42], "**not met** (+4.3 points;"),  # below 5 points, whatever the interval
        ([0.51, 0.49, 0.40], [0.40, 0.40, 0.42], "**met by the mean only** (+6.0 points, but its 95% interval"),
        ([0.40, 0.40, 0.40], [0.38, 0.38, 0.38], "**not met** (+2.0 points;"),
        ([0.45], [0.38], "**met by the mean only** (+7.0 points, one seed: no interval;"),
    ],
)
def test_goal_line_says_whether_the_interval_backs_the_mean(rema, vrp_rl, word):
    def runs(arm, ood):
        return [_run(arm, s, [{"step": 8, "eval/id/acc": 0.5, "eval/ood/acc": v}]) for s, v in enumerate(ood)]

    goal = next(
        v
        for v in table1({"vrp_rl": runs("vrp_rl", vrp_rl), "rema_multi": runs("rema_multi", rema)}).verdicts
        if v.startswith("Goal")
    )
    assert word in goal


def test_compare_pairs_by_seed():
    a = [_run("a", s, [{"step": 1, "x": v}]) for s, v in enumerate([0.1, 0.9])]
    b = [_run("b", s, [{"step": 1, "x": v}]) for s, v in enumerate([0.0, 0.8])]
    _, n = compare({"a": a, "b": b}, "a", "b", lambda r: r.final("x"), what="x", claim="c")
    assert n["diff"] == pytest.approx(0.1) and n["low"] == pytest.approx(0.1)  # the seeds' spread cancels out


def test_collapse_step_rule():
    steps = list(range(1, 11))
    assert collapse_step(steps, [0.1, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]) is None
    # falls to 0 from step 6 and stays: smoothed (3-step mean) first below half its best at step 7
    assert collapse_step(steps, [0.4, 0.5, 0.6, 0.6, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0]) == 7
    # a dip that recovers is no collapse
    assert collapse_step(steps, [0.6, 0.6, 0.6, 0.0, 0.0, 0.6, 0.6, 0.6, 0.6, 0.6]) is None
    assert collapse_step(steps, [0.05, 0.0] * 5) is None  # never reached the minimum best


def test_fig4_collapse_and_difficulty():
    rows = [
        {
            "step": s,
            "train/actions/EMPTY": e,
            "train/actions/DECOMPOSE": 1 - e,
            "train/action_level/DECOMPOSE/mean": 3.0,
            "train/action_level/EMPTY/mean": 1.5,
        }
        for s, e in enumerate([0.2, 0.5, 0.9, 0.9, 0.9], start=1)
    ]
    a = fig4({"actions": [_run("actions", 0, rows)]})
    assert a.numbers["collapsed"] and a.numbers["empty_share_end"] == pytest.approx(0.9)
    assert "collapsed to EMPTY" in a.verdicts[0] and "a difference of 1.5 levels over 1 seed(s)" in a.verdicts[1]
    assert a.verdicts[1].endswith("**leans yes (1 seed)**")
    # two seeds that disagree (+1.5 and -1.0 levels): the interval straddles 0, as for any other claim
    flipped = [{**r, "train/action_level/EMPTY/mean": 4.0} for r in rows]
    two = fig4({"actions": [_run("actions", 0, rows), _run("actions", 1, flipped)]})
    assert "a difference of 0.2 levels ± 15.9 over 2 seed(s)" in two.verdicts[1]
    assert two.verdicts[1].endswith("**inconclusive**")
    assert two.numbers["decompose_minus_empty_level"] == pytest.approx(0.25)
    invalid = [{"step": s, "train/actions/INVALID": 1.0, "train/actions/EMPTY": 0.0} for s in range(1, 6)]
    b = fig4({"actions": [_run("actions", 0, invalid)]})
    assert not b.numbers["collapsed"] and "inconclusive: 100.0% of its messages are no valid action" in b.verdicts[0]


def test_fig5_ablation_reads_clip_fraction():
    def arm(name, accs, clip):
        return [
            _run(
                name,
                0,
                [{"step": i + 1, "train/acc": v, "stats/clip_frac": clip} for i, v in enumerate(accs)],
                evals=(),
            )
        ]

    results = {
        "shared_turn_mb4": arm("shared_turn_mb4", [0.2, 0.4, 0.6], 0.1),
        "shared_token_mb4": arm("shared_token_mb4", [0.2, 0.3, 0.4], 0.05),
    }
    a = fig5_ablation(results)
    assert a.numbers["shared_turn_mb4_vs_shared_token_mb4"]["diff"] == pytest.approx(0.4 - 0.3)
    assert "10.0%" in a.markdown()


def test_every_arm_config_loads_and_budgets_match(tmp_path):
    """Every CPU-scale arm config loads; within an experiment every trained arm has the same question budget."""
    for exp in EXPERIMENTS.values():
        runs = plan_grid(exp, scale="cpu", seeds=(0,), out=tmp_path, overrides=[])
        budgets = {
            (r.cfg.train.steps * r.cfg.train.questions_per_step * r.cfg.rollout.samples_per_question)
            for r in runs
            if r.cfg.train.steps > 0
        }
        assert len(budgets) == 1, (exp.name, budgets)
        assert {len(r.cfg.data.eval_specs) for r in runs} == ({2} if exp.ood else {len(runs[0].cfg.data.eval_specs)})
    with pytest.raises(KeyError, match="choose one of"):
        get_experiments("table2")


def test_ood_replaces_the_second_eval_set(tmp_path):
    [exp] = get_experiments("table1")
    runs = plan_grid(exp, scale="cpu", seeds=(0, 1), out=tmp_path, overrides=[], ood="mine.jsonl")
    assert all(r.cfg.data.eval_specs[1] == "mine.jsonl" for r in runs)
    assert sum(r.arm.name == "vrp" for r in runs) == 1  # prompting only: one run stands for every seed
    assert (REPO_CONFIGS / "cpu" / "table1" / "vrp.yaml").is_file()


TINY = [
    "model.name=tiny-random",
    "rollout.engine=hf",
    "model.gradient_checkpointing=false",
    "sft.questions=4",
    "sft.epochs=1",
    "train.steps=1",
    "data.eval_limit=4",
    "train.questions_per_step=2",
    "rollout.samples_per_question=2",
    "rollout.max_tokens_per_turn=16",
    "sft.over_limit=truncate",  # the tiny tokenizer spells the teacher's messages out past 16 tokens
]


def _reproduce(out: Path, *extra: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "rema.cli", "reproduce", "table1", "--seeds", "0", "--out", str(out), *TINY, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


@pytest.mark.slow
def test_kill_then_rerun_reuses_finished_runs(tmp_path):
    """kill -9 of rema reproduce mid-grid: the trainer child dies with it, the finished runs are reused on the next
    start, the cut one is resumed or restarted, and the verdicts are written once every run is done."""
    out = tmp_path / "rp"
    first = _reproduce(out)
    done = out / "table1" / "runs" / "vrp-seed0" / "reproduce.json"
    deadline = time.time() + 300
    while not done.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.5)
    assert done.exists(), first.communicate()[0] if first.poll() is not None else "vrp run did not finish"
    stamp = json.loads(done.read_text())["finished"]
    time.sleep(2.0)  # into the next run
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(1.0)
    ps = subprocess.run(["pgrep", "-f", str(out / "table1" / "configs")], capture_output=True, text=True)
    assert ps.stdout.strip() == "", "a trainer outlived its killed rema reproduce"
    second = _reproduce(out)
    text = second.communicate(timeout=600)[0]
    assert second.returncode == 0, text
    assert "1 finished already (reused)" in text
    assert json.loads(done.read_text())["finished"] == stamp
    summary = json.loads((out / "table1" / "summary.json").read_text())
    assert not summary["missing"] and summary["verdicts"] and (out / "table1" / "figure.png").stat().st_size > 1000
    # a changed override makes every finished run stale: rerun, not reused
    plan = subprocess.run(
        [
            sys.executable,
            "-m",
            "rema.cli",
            "reproduce",
            "table1",
            "--seeds",
            "0",
            "--out",
            str(out),
            "--dry-run",
            *TINY,
            "train.lr=1e-5",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    runs = int(re.search(r"seeds 0; (\d+) runs", plan.stdout).group(1))
    assert plan.returncode == 0 and runs > 1 and plan.stdout.count("stale") == runs, plan.stdout + plan.stderr


def test_core_groups_split_the_cores_and_refuse_more_jobs_than_cores(monkeypatch):
    from rema.reproduce import grid

    monkeypatch.setattr(grid.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert grid.core_groups(1) == [(0, 1, 2, 3)]
    assert grid.core_groups(2) == [(0, 1), (2, 3)]
    assert grid.core_groups(3) == [(0,), (1,), (2,)]
    with pytest.raises(ValueError, match="--jobs 5: this process may use 4 core"):
        grid.core_groups(5)


def test_jobs_run_side_by_side_on_disjoint_cores_seed_by_seed(tmp_path, monkeypatch):
    """run_grid(jobs=2): two runs at a time, never on the same cores, seed 0 of every arm before seed 1 (so a
    seed's cold start is cached before the next seed of the arm asks for it)."""
    import threading

    from rema.reproduce import command, grid

    monkeypatch.setattr(grid.os, "sched_getaffinity", lambda pid: {0, 1})
    [exp] = get_experiments("table1")
    runs = plan_grid(exp, scale="cpu", seeds=(0, 1), out=tmp_path, overrides=[])
    lock, busy, started, peak = threading.Lock(), set(), [], [0]

    def fake_execute(run, *, cpus=None, **kw):
        with lock:
            assert cpus not in busy
            busy.add(cpus)
            started.append(run.name)
            peak[0] = max(peak[0], len(busy))
        time.sleep(0.05)
        with lock:
            busy.discard(cpus)
        return 0.0

    monkeypatch.setattr(command, "execute", fake_execute)
    assert command.run_grid(exp, runs, keep_weights=False, jobs=2) == 0
    assert peak[0] == 2 and len(started) == len(runs)
    seeds = [int(name.rsplit("seed", 1)[1]) for name in started]
    assert seeds == sorted(seeds)


def test_cold_starts_are_shared_through_the_grid_cache(tmp_path):
    """Every run with a cold start points sft.cache at OUT/cold_starts with a fixed sft.seed; where the cache is
    does not change a run's hash (so moving it does not make finished runs stale)."""
    import dataclasses

    for exp in EXPERIMENTS.values():
        for r in plan_grid(exp, scale="cpu", seeds=(0, 1), out=tmp_path, overrides=[]):
            if r.cfg.sft.cold_start:
                assert r.cfg.sft.cache == str(tmp_path / "cold_starts") and r.cfg.sft.seed == 0, r.name
                moved = dataclasses.replace(
                    r, cfg=dataclasses.replace(r.cfg, sft=dataclasses.replace(r.cfg.sft, cache="x"))
                )
                assert moved.digest == r.digest
            else:
                assert r.cfg.sft.cache is None


def test_a_finished_run_stays_done_when_rema_adds_an_option_at_its_default(tmp_path):
    """reproduce.json records the run's settings: a key it lacks (an option added since) at its default keeps the
    run done, the same key set otherwise makes it stale, and so does a changed value of a recorded key."""
    import dataclasses

    from rema.reproduce.grid import DONE

    [exp] = get_experiments("table1")
    run = next(r for r in plan_grid(exp, scale="cpu", seeds=(0,), out=tmp_path, overrides=[]) if r.arm.name == "vrp_rl")
    run.run_dir.mkdir(parents=True)

    def finish(settings: dict) -> str:
        (run.run_dir / DONE).write_text(json.dumps({"config_hash": "written by an older rema", "settings": settings}))
        return run.status()

    def replaced(r, **train):
        return dataclasses.replace(r, cfg=dataclasses.replace(r.cfg, train=dataclasses.replace(r.cfg.train, **train)))

    older = {k: v for k, v in run.settings().items() if k != "train.fsdp_cpu_offload"}
    assert run.cfg.train.fsdp_cpu_offload == type(run.cfg.train)().fsdp_cpu_offload  # the arm leaves it at its default
    assert finish(older) == "done"
    assert replaced(run, fsdp_cpu_offload=not run.cfg.train.fsdp_cpu_offload).status() == "stale"
    assert finish({**run.settings(), "train.lr": 3e-4}) == "stale"
    assert finish({**run.settings(), "a.key.rema.dropped": 1}) == "done"
    assert finish(None) == "stale"  # a marker from before settings were recorded, with another hash


def test_a_finished_run_copied_into_another_out_folder_stays_done(tmp_path):
    """The hash leaves out log.run_dir: runs/ copied into another --out is reused there, and a marker written by an
    older rema (whose hash held the run folder) still counts."""
    import shutil

    from rema.reproduce.grid import DONE, _hash, _plain

    [exp] = get_experiments("table1")

    def vrp_rl(out: Path):
        return next(r for r in plan_grid(exp, scale="cpu", seeds=(0,), out=out, overrides=[]) if r.arm.name == "vrp_rl")

    first = vrp_rl(tmp_path / "a")
    first.run_dir.mkdir(parents=True)
    (first.run_dir / DONE).write_text(json.dumps({"config_hash": first.digest}))
    shutil.copytree(tmp_path / "a" / "table1" / "runs", tmp_path / "b" / "table1" / "runs")
    moved = vrp_rl(tmp_path / "b")
    assert moved.digest == first.digest and moved.status() == "done"
    assert vrp_rl(tmp_path / "c").status() == "new"
    older = _plain(moved.cfg)
    older["log"]["run_dir"] = str(moved.run_dir)
    (moved.run_dir / DONE).write_text(json.dumps({"config_hash": _hash(older)}))
    assert moved.status() == "done"
    older["train"]["lr"] = 1.0
    (moved.run_dir / DONE).write_text(json.dumps({"config_hash": _hash(older)}))
    assert moved.status() == "stale"


def test_dry_run_with_arms_lists_only_those_arms(tmp_path, capsys):
    from rema.reproduce.command import dry_run

    plans = []
    for exp in get_experiments("all"):
        plans.append((exp, (0, 1), plan_grid(exp, scale="cpu", seeds=(0, 1), out=tmp_path, overrides=[])))
    dry_run(plans, "cpu", arms={"vrp_rl"})
    text = capsys.readouterr().out
    listed = re.findall(r"^  new +(\S+)", text, re.M)
    assert listed == ["vrp_rl-seed0", "vrp_rl-seed1"], text
    assert text.startswith("table1:") and "runs of other arms left out" in text
    assert "fig3:" not in text  # no arm of that name: the experiment is not listed


def test_dry_run_counts_a_cold_start_already_in_the_cache_as_done(tmp_path, capsys):
    """--dry-run: an arm whose cold start the cache folder already holds is estimated without it (and says so); a
    half-written entry (no metrics.json) still counts as to be trained."""
    from rema.reproduce.command import dry_run
    from rema.runtime.cold_starts import cold_start_key

    [exp] = get_experiments("table1")
    runs = plan_grid(exp, scale="cpu", seeds=(0,), out=tmp_path, overrides=[])

    def minutes(name: str) -> tuple[float, bool]:
        capsys.readouterr()
        dry_run([(exp, (0,), runs)], "cpu")
        line = next(x for x in capsys.readouterr().out.splitlines() if f" {name} " in x)
        return float(line.split("~")[1].split(" min")[0]), "(cold start cached)" in line

    multi = next(r for r in runs if r.name == "rema_multi-seed0")
    entry = tmp_path / "cold_starts" / cold_start_key(multi.cfg)
    entry.mkdir(parents=True)
    fresh, noted = minutes("rema_multi-seed0")
    assert not noted
    (entry / "metrics.json").write_text("{}")
    cached, noted = minutes("rema_multi-seed0")
    assert noted and cached < fresh


def test_table1_plans_at_both_scales_and_its_control_is_cpu_only(tmp_path):
    """The paper scale plans offline from configs/reproduce/paper; table1's control arm (built on the synthetic
    program teacher) runs at CPU scale only."""
    exp = EXPERIMENTS["table1"]
    for scale in ("cpu", "paper"):
        runs = {r.arm.name: r for r in plan_grid(exp, scale=scale, seeds=(0,), out=tmp_path, overrides=[])}
        assert set(runs) == {a.name for a in exp.arms if scale in a.scales}
        assert ("vrp_rl_reduce" in runs) == (scale == "cpu") and "rema_multi" in runs
        if scale == "cpu":
            control = runs["vrp_rl_reduce"].cfg
            assert control.sft.teacher_style == "reduce" and control.rollout.method == "vrp"


def test_an_arm_that_repeats_another_is_drawn_dashed_and_named_in_the_legend(tmp_path):
    """fig5-turns' 3 x 96 and 3 x 48 budgets give the same runs when no message reaches 48 tokens: the second is
    drawn dashed over the first and its legend says which one it repeats."""
    import matplotlib.pyplot as plt

    from rema.reproduce.analysis import Run
    from rema.reproduce.figures import _curves

    def runs(arm, values):
        return [
            Run(arm, seed, tmp_path, [{"step": s, "m": v + seed} for s, v in enumerate(values)], {}) for seed in (0, 1)
        ]

    results = {"a": runs("a", [0.1, 0.5]), "b": runs("b", [0.1, 0.5]), "c": runs("c", [0.2, 0.4])}
    fig, ax = plt.subplots()
    _curves(ax, results, lambda r: "m")
    means = [line for line in ax.get_lines() if line.get_label()[0] != "_"]
    assert [line.get_label() for line in means] == ["a (2 seeds)", "b (2 seeds) = a", "c (2 seeds)"]
    assert [line.get_linestyle() for line in means] == ["-", "--", "-"]
    plt.close(fig)
