"""Training-time evaluation over several held-out sets (paper Fig. 5) and the report's per-action difficulty
(paper Fig. 4): the keys logged, their average, and the curves `rema report` draws."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

import rema.eval.report as report
from rema.config import load_config
from rema.data.benchmarks import dataset_names
from rema.prompts import PromptSet
from rema.train import Trainer
from rema.train.metrics import eval_record, print_before_after


@pytest.fixture
def drawn(monkeypatch):
    """Each figure the report saves: file name -> [(label, xs, ys)] of its axes' labelled lines."""
    figures: dict[str, list[tuple[str, list, list]]] = {}
    real_save = report._save

    def save(fig, out, name, *rest):  # rest: the rows whose health events the figure marks
        figures[name] = [
            (ln.get_label(), list(ln.get_xdata()), [float(y) for y in ln.get_ydata()])
            for ax in fig.axes
            for ln in ax.get_lines()
            if not ln.get_label().startswith("_")
        ]
        return real_save(fig, out, name, *rest)

    monkeypatch.setattr(report, "_save", save)
    return figures


def test_eval_record_one_set_keeps_the_old_keys_several_add_their_average():
    one = {"acc": 0.5, "turns/mean": 2.0}
    assert eval_record({"gsm8k": one}) == {"eval/acc": 0.5, "eval/turns/mean": 2.0}
    rec = eval_record(
        {"gsm8k": {"acc": 0.5, "acc/level_1": 1.0, "episodes": 10.0}, "math500": {"acc": 0.2, "episodes": 40.0}},
        prefix="base_eval",
    )
    # each set weighs the same (0.5 + 0.2) / 2, not by its 10 / 40 questions; only shared metrics are averaged
    assert rec == {
        "base_eval/gsm8k/acc": 0.5,
        "base_eval/gsm8k/acc/level_1": 1.0,
        "base_eval/gsm8k/episodes": 10.0,
        "base_eval/math500/acc": 0.2,
        "base_eval/math500/episodes": 40.0,
        "base_eval/avg/acc": pytest.approx(0.35),
        "base_eval/avg/episodes": 25.0,
    }


def test_dataset_names():
    assert dataset_names(
        [
            "gsm8k",
            "math12k:levels=3-5",
            "synthetic:levels=1:n=4",
            "synthetic:n=9",
            "hf:openai/gsm8k:main:test",
            "data/my set.jsonl",
            "x/avg.parquet",
        ]
    ) == ["gsm8k", "math12k", "synthetic", "synthetic-2", "gsm8k-2", "my_set", "avg-2"]


def test_data_eval_takes_one_spec_or_a_list(tmp_path):
    cfg = load_config(None, ["data.eval=synthetic:levels=1,2,3:n=5"])  # commas inside one spec: still one set
    assert cfg.data.eval_specs == ["synthetic:levels=1,2,3:n=5"]
    cfg = load_config(None, ["data.eval=[gsm8k, 'synthetic:levels=1,2:n=5']"])
    assert cfg.data.eval_specs == ["gsm8k", "synthetic:levels=1,2:n=5"]
    (tmp_path / "c.yaml").write_text("data:\n  eval: [gsm8k, math500]\n")
    assert load_config(tmp_path / "c.yaml").data.eval == ["gsm8k", "math500"]
    assert load_config(None, ["data.eval=null"]).data.eval_specs == []


def test_two_eval_sets_log_each_and_their_average_and_the_report_draws_them(tmp_path, drawn):
    (tmp_path / "arith.jsonl").write_text(
        "".join(json.dumps({"problem": f"What is {k} + {k}?", "answer": str(2 * k)}) + "\n" for k in range(1, 4))
    )
    run = tmp_path / "run"
    cfg = load_config(
        None,
        [
            "model.name=tiny-random",
            "rollout.mode=single_turn",
            "rollout.max_tokens_per_turn=6",
            "rollout.samples_per_question=2",
            "train.questions_per_step=2",
            "train.steps=2",
            "train.eval_every=2",
            "data.train=synthetic:levels=1:n=8:seed=0:word=0",
            f"data.eval=[{tmp_path / 'arith.jsonl'}, 'synthetic:levels=1,2:n=4:seed=1:word=0']",
            "data.eval_limit=2",
            f"log.run_dir={run}",
            "log.progress=false",
            "log.tensorboard=false",
            "train.autocast=off",
        ],
    )
    # a grader that knows the set: every arith question right, every synthetic one wrong
    tr = Trainer(
        cfg,
        correctness_fn=lambda ep: float(ep.problem_id.startswith("arith/")),
        prompts=PromptSet("test", "plan", "solve"),
    )
    assert {k: len(v) for k, v in tr.eval_sets.items()} == {"arith": 2, "synthetic": 2}  # eval_limit: per set
    tr.fit()
    tr.close()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/avg/acc" in r]
    assert [r["step"] for r in evals] == [0, 2]
    for r in evals:
        assert (r["eval/arith/acc"], r["eval/synthetic/acc"], r["eval/avg/acc"]) == (1.0, 0.0, 0.5)
        assert r["eval/arith/episodes"] == r["eval/synthetic/episodes"] == 2.0
        assert not any(k.startswith("eval/acc") for k in r)  # no single-set keys beside the sets'
    splits = {json.loads(line)["split"] for line in (run / "samples.jsonl").read_text().splitlines()}
    assert splits == {"train", "eval/arith", "eval/synthetic"}

    out = report.build_report(run)
    assert (out / "eval_sets.png").is_file() and (out / "accuracy.png").is_file()
    lines = {label: (xs, ys) for label, xs, ys in drawn["eval_sets.png"]}
    assert lines == {
        "arith": ([0, 2], [1.0, 1.0]),
        "synthetic": ([0, 2], [0.0, 0.0]),
        "average of 2": ([0, 2], [0.5, 0.5]),
    }
    held_out = {label: ys for label, _, ys in drawn["accuracy.png"]}
    assert held_out["held-out eval (average of 2 sets)"] == [0.5, 0.5]

    console = Console(record=True, width=100)
    print_before_after(run / "metrics.jsonl", console)
    table = console.export_text()
    assert "average" in table and "arith" in table and "synthetic" in table and "50.0%" in table


def test_report_draws_the_difficulty_behind_each_action(tmp_path, drawn):
    rows = [
        {
            "step": s,
            "train/acc": 0.1,
            "train/action_level/DECOMPOSE/mean": 2.0 + 0.1 * s,
            "train/action_level/EMPTY/mean": 1.5 - 0.1 * s,
            "train/actions/DECOMPOSE/level_1": 0.5,
            "train/actions/EMPTY/level_1": 0.5,
        }
        for s in range(4)
    ]
    made = [name for name, _ in report.make_plots(rows, tmp_path)]
    assert "action_difficulty.png" in made and "eval_sets.png" not in made
    lines = {label: ys for label, _, ys in drawn["action_difficulty.png"]}
    assert lines == {"DECOMPOSE": pytest.approx([2.0, 2.1, 2.2, 2.3]), "EMPTY": pytest.approx([1.5, 1.4, 1.3, 1.2])}
