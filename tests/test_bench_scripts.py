"""The analysis scripts of bench/ on hand-written `rema eval` folders: restatements.py (the class of a first
restatement against hand-read questions), rescore.py (an arm over seeds, paired differences) and over_steps.py (the
same, step by step, from a reproduce folder)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "restatements.py"


@pytest.fixture(scope="module")
def rs():
    spec = importlib.util.spec_from_file_location("restatements", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "first, expression, answer, kind",
    [
        ("In numbers: (2 + 4) × 3.\nFirst, add 2 and 4.", "(2 + 4) * 3", "18", "right"),
        ("The question asks for 3 × 2 + 8.\nBegin here: multiply 3 by 2.", "2 * 3 + 8", "14", "right"),
        ("As an expression: 2 × 4 + 3.\n2 × 4 = 8, so it is 8 + 3.", "(2 + 3) * 4", "20", "wrong"),
        ("We need 6 × 3.\nCompute 6 × 3 first.", "6 * 3 + 6", "24", "dropped"),
        ("In numbers: 3 × 3.\nCompute 3 × 3 first.", "(2 + 4) * 3", "18", "dropped"),
        ("Add 2 and 4 first.", "(2 + 4) * 3", "18", "none"),
        ("In numbers: 2 + four.\nAdd them.", "2 + 4", "6", "wrong"),
        ("In numbers: 2+4+3.", "2 + 4 + 3", "9", "right"),
    ],
)
def test_each_first_message_falls_in_its_class(rs, first, expression, answer, kind):
    assert rs.classify(first, expression, answer) == kind


def test_the_script_counts_classes_per_level_and_averages_seeds(tmp_path):
    def record(level, expression, answer, first, correct, reply="I compute it."):
        turns = [{"agent": "mta", "text": first}, {"agent": "ra", "text": reply}]
        episode = {"turns": turns, "meta": {"expression": expression}}
        return {"level": level, "answer": answer, "correct": correct, "samples": [{"episode": episode}]}

    rows = {
        "arm/s0": [
            record(4, "(2 + 4) * 3", "18", "In numbers: (2 + 4) × 3.\nFirst, add 2 and 4.", True),
            record(4, "6 * 3 + 6", "24", "We need 6 × 3.\nCompute 6 × 3 first.", False),
            record(1, "2 + 4", "6", "In numbers: 2 + 4.", True),
        ],
        "arm/s1": [
            record(4, "(2 + 4) * 3", "18", "In numbers: (2 + 4) × 3.\nFirst, add 2 and 4.", False),
            record(4, "6 * 3 + 6", "24", "In numbers: 6 × 3 + 6.\nFirst, multiply 6 by 3.", True),
        ],
        "other/solver": [  # reduce_solver: the MTA asks, the RA's first reply restates
            record(
                4,
                "6 * 3 + 6",
                "24",
                "Write the question as an expression, then work out its first operation.",
                True,
                reply="In numbers: 6 × 3 + 6.\n6 × 3 = 18.",
            ),
            record(
                4,
                "(2 + 4) * 3",
                "18",
                "Put the question into numbers as one expression.",
                False,
                reply="In numbers: 4 × 3.\n4 × 3 = 12.",
            ),
        ],
    }
    args = []
    for label, recs in rows.items():
        folder = tmp_path / label.replace("/", "-")
        (folder / "records").mkdir(parents=True)
        (folder / "records" / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        args.append(f"{label}={folder}")
    out = subprocess.run([sys.executable, str(SCRIPT), *args, "--levels", "4"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    labels = [(x["label"], x["level"]) for x in lines]
    assert labels == [("arm/s0", 4), ("arm/s1", 4), ("other/solver", 4), ("arm/mean", 4)]
    assert (lines[2]["right"], lines[2]["dropped"], lines[2]["right_correct"]) == (1, 1, 1)
    del lines[2]
    assert (lines[0]["right"], lines[0]["dropped"], lines[0]["right_correct"], lines[0]["accuracy"]) == (1, 1, 1, 0.5)
    assert (lines[1]["right"], lines[1]["right_correct"]) == (2, 1)
    assert (lines[2]["right"], lines[2]["dropped"], lines[2]["accuracy"], lines[2]["seeds"]) == (1.5, 0.5, 0.5, 2)


def test_rescore_gives_each_arm_over_seeds_and_the_paired_difference(tmp_path):
    """bench/rescore.py on hand-written `rema eval` summaries: means, a t interval by hand, pairing by seed, and
    an unseeded arm standing for every seed."""
    script = SCRIPT.parent / "rescore.py"
    accs = {"base/0": 0.4, "base/1": 0.5, "base/2": 0.6, "arm/0": 0.6, "arm/1": 0.75, "arm/2": 0.9, "prompt/0": 0.1}
    args = []
    for label, acc in accs.items():
        folder = tmp_path / label.replace("/", "-")
        folder.mkdir()
        scores = {"acc": acc, "acc/level_4": acc / 2, "questions": 10.0}
        (folder / "summary.json").write_text(json.dumps({"benchmarks": {"set": scores}}))
        args.append(f"{label}={folder}")
    out = subprocess.run([sys.executable, str(script), *args, "--against", "base"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = {(x["arm"], x.get("against")): x for x in map(json.loads, out.stdout.splitlines())}
    base, arm = lines[("base", None)], lines[("arm", None)]
    assert base["acc"] == 0.5 and base["acc/level_4"] == 0.25 and "questions" not in base
    # sd of (0.4, 0.5, 0.6) is 0.1; t(2 df) = 4.303; half = 4.303 * 0.1 / sqrt(3) = 0.2484
    assert base["acc_ci95"] == pytest.approx(0.2484, abs=1e-4)
    diff = lines[("arm", "base")]  # paired differences 0.2, 0.25, 0.3: mean 0.25, sd 0.05, half 0.1242
    assert diff["seeds"] == [0, 1, 2] and diff["diff"] == pytest.approx(0.25) and diff["verdict"] == "agrees"
    assert diff["low"] == pytest.approx(0.25 - 0.1242, abs=1e-4)
    prompt = lines[("prompt", "base")]  # 0.1 against 0.4, 0.5, 0.6
    assert prompt["seeds"] == [0, 1, 2] and prompt["diff"] == pytest.approx(-0.4) and prompt["verdict"] == "contradicts"
    assert arm["acc"] == pytest.approx(0.75)


def test_over_steps_lines_up_each_arm_step_by_step(tmp_path):
    """bench/over_steps.py on hand-written metrics of a reproduce folder: one line per arm and step, the mean over
    seeds with a t interval by hand, and the difference paired by seed against another arm."""
    script = SCRIPT.parent / "over_steps.py"
    evals = {  # (arm, seed): {step: (in-distribution, out-of-distribution)}
        ("base", 0): {0: (0.5, 0.4), 8: (0.6, 0.4)},
        ("base", 1): {0: (0.5, 0.4), 8: (0.7, 0.5)},
        ("base", 2): {0: (0.5, 0.4), 8: (0.8, 0.6)},
        ("arm", 0): {0: (0.6, 0.5), 8: (0.7, 0.6)},
        ("arm", 1): {0: (0.6, 0.5), 8: (0.8, 0.75)},
        ("arm", 2): {0: (0.6, 0.5), 8: (0.9, 0.9)},
    }
    for (arm, seed), steps in evals.items():
        run = tmp_path / "runs" / f"{arm}-seed{seed}"
        run.mkdir(parents=True)
        rows = [{"step": 0, "sft/loss_last": 0.2}]  # a row without an evaluation is skipped
        rows += [
            {"step": k, "eval/id/acc": a, "eval/ood/acc": b, "eval/avg/acc": (a + b) / 2, "eval/ood/acc/level_4": 0.0}
            for k, (a, b) in steps.items()
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--against", "base"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = {(x["arm"], x["step"]): x for x in map(json.loads, out.stdout.splitlines())}
    assert sorted(lines) == [("arm", 0), ("arm", 8), ("base", 0), ("base", 8)]
    base = lines[("base", 8)]
    assert base["seeds"] == [0, 1, 2] and "avg" not in base and "ood_vs_base" not in base
    # sd of (0.6, 0.7, 0.8) is 0.1; t(2 df) = 4.303; half = 4.303 * 0.1 / sqrt(3) = 0.2484
    assert base["id"] == pytest.approx(0.7) and base["id_ci95"] == pytest.approx(0.2484, abs=1e-4)
    arm = lines[("arm", 8)]  # OOD differences 0.2, 0.25, 0.3: mean 0.25, sd 0.05, half 0.1242
    assert arm["ood_vs_base"] == pytest.approx(0.25) and arm["ood_vs_base_ci95"] == pytest.approx(0.1242, abs=1e-4)
    assert arm["ood_verdict"] == "agrees"
    assert lines[("arm", 0)]["id_vs_base"] == pytest.approx(0.1)  # every seed the same: no spread
    wrong = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--against", "nope"], capture_output=True, text=True
    )
    assert wrong.returncode != 0 and "no such arm" in wrong.stderr
