"""`rema report`: plots and the self-contained HTML dialogue browser, from a fake run folder."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from rema.config import Config
from rema.eval.html import embed_json, select_samples
from rema.eval.report import build_report, ema, make_plots, series
from rema.rollout.episode import Episode, Turn

ALL_PLOTS = {
    "reward.png",
    "accuracy.png",
    "turns.png",
    "tokens_per_turn.png",
    "end_codes.png",
    "optimization.png",
    "actions_by_level.png",
}
MTA_PLAN = "Let's split this. First, find how many eggs are left after breakfast and baking."
RA_STEP = "Eggs left: 16 - 3 - 4 = 9. Each sells for $2, so she makes 9 * 2 = 18 dollars."
MTA_DONE = "The arithmetic checks out: 16 - 7 = 9 and 9 * 2 = 18. [FINISH]"
RA_FINAL = "Janet sells 9 eggs at $2 each, so she makes \\boxed{18} dollars."
QUESTION = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
    "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
    "per fresh duck egg. How much in dollars does she make every day at the farmers' market?"
)


def _turn(agent: str, index: int, text: str, *, length: bool = False, **kw) -> Turn:
    n = max(1, len(text) // 4)
    return Turn(
        agent=agent,
        index=index,
        text=text,
        token_ids=list(range(n)),
        logprobs=[-0.3] * n,
        finish_reason="length" if length else "stop",
        context_len=100 + 40 * index,
        **kw,
    )


def fake_episode(step: int, k: int, *, split: str, correct: bool, single_turn_actions: bool = False) -> dict:
    """One two-agent dialogue record as the trainer writes it (Episode.to_dict() + step + split)."""
    ep = Episode(
        episode_id=k,
        problem_id=f"gsm8k/{k}",
        question=QUESTION if k % 2 == 0 else f"What is {k} + {step}?",
        answer="18" if k % 2 == 0 else str(k + step),
        sample_index=0,
        method="rema-actions" if single_turn_actions else "rema-multi",
    )
    if single_turn_actions:
        ep.turns = [
            _turn(
                "mta",
                0,
                json.dumps({"action": "DECOMPOSE", "content": "1. eggs left 2. times price"}),
                action="DECOMPOSE",
                format_ok=True,
            ),
            _turn("ra", 0, RA_FINAL),
        ]
        ep.end_code = "finished"
    elif correct:
        ep.turns = [
            _turn("mta", 0, MTA_PLAN),
            _turn("ra", 0, RA_STEP),
            _turn("mta", 1, MTA_DONE),
            _turn("ra", 1, RA_FINAL),
        ]
        ep.end_code = "finished"
    else:
        ep.turns = [
            _turn("mta", 0, MTA_PLAN),
            _turn("ra", 0, "16 - 3 = 13 eggs " * 12, length=True),
            _turn("mta", 1, "Check the muffins too."),
            _turn("ra", 1, "13 - 4 = 9, so \\boxed{9}"),
        ]
        ep.end_code = "max_turns"
    ep.reward = {"mta": float(correct), "ra": float(correct)}
    ep.reward_parts = {
        a: {"correct": float(correct), "timed_out": 0.0, "unfinished": float(not correct), "masked": float(not correct)}
        for a in ("mta", "ra")
    }
    ep.meta = {"correct": correct, "extracted": "18" if correct else "9", "level": 1 + k % 5}
    return {**ep.to_dict(), "step": step, "split": split}


def make_fake_run(root: Path, *, steps: int = 40, actions: bool = True) -> Path:
    """A run folder with config.yaml, meta.json, metrics.jsonl (every key the trainer logs) and samples.jsonl."""
    run = root / "fake-run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(Config().to_dict(), sort_keys=False))
    (run / "meta.json").write_text(
        json.dumps(
            {
                "prompts_version": "2026.11.1",
                "start_time": "2026-11-21T10:00:00",
                "model": {"class": "LlamaForCausalLM", "params": 134515008},
                "command": "rema train configs/demo.yaml",
            }
        )
    )
    rng = random.Random(0)
    rows = []
    for step in range(steps):
        p = step / max(1, steps - 1)
        acc = 0.1 + 0.5 * p + rng.uniform(-0.05, 0.05)
        fin = min(1.0, 0.3 + 0.6 * p)
        row = {
            "step": step,
            "time": 1000.0 + 30 * step,
            "train/acc": acc,
            "train/reward/mta": acc * fin,
            "train/reward/ra": acc * fin,
            "train/end/finished": fin,
            "train/end/max_turns": (1 - fin) * 0.7,
            "train/end/context_exceeded": (1 - fin) * 0.2,
            "train/end/truncated": (1 - fin) * 0.1,
            "train/turns/mean": 4 - 2 * p,
            "train/tokens_per_turn/mta": 60 - 20 * p,
            "train/tokens_per_turn/ra": 180 + 40 * p,
            "train/boxed_rate": 0.5 + 0.4 * p,
            "train/leak_rate": 0.1,
            "loss/policy": -0.01,
            "loss/kl": 0.001 * step,
            "loss/entropy": 1.2 - 0.3 * p,
            "stats/clip_frac": 0.05 + 0.02 * math.sin(step),
            "stats/approx_kl": 0.002,
            "stats/entropy": 1.2 - 0.3 * p,
            "stats/kl": 0.001 * step,
            "stats/grad_norm": 0.8 + rng.random(),
            "lr": 1e-6,
            "time/rollout": 20.0,
            "time/reward": 1.0,
            "time/update": 8.0,
            "perf/tokens_per_s": 900.0,
        }
        for lv in range(1, 6):
            row[f"train/acc/level_{lv}"] = max(0.0, acc - 0.08 * lv)
            if actions:
                empty = 0.2 + 0.5 * p * (5 - lv) / 4
                dec = (1 - empty) * (0.4 + 0.1 * lv)
                row[f"train/actions/DECOMPOSE/level_{lv}"] = dec
                row[f"train/actions/REWRITE/level_{lv}"] = 1 - empty - dec
                row[f"train/actions/EMPTY/level_{lv}"] = empty
        if actions:
            row["train/actions/DECOMPOSE"], row["train/actions/REWRITE"], row["train/actions/EMPTY"] = 0.4, 0.2, 0.4
        if step % 10 == 0 or step == steps - 1:
            row.update(
                {
                    "eval/acc": acc - 0.05,
                    "eval/reward/mta": acc - 0.05,
                    "eval/reward/ra": acc - 0.05,
                    "eval/turns/mean": 3.5 - p,
                    "eval/acc/level_1": acc,
                    "eval/acc/level_2": acc - 0.1,
                }
            )
        rows.append(row)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = []
    for step in range(0, steps, 10):
        for k in range(4):
            samples.append(fake_episode(step, k, split="train", correct=k % 2 == 0))
        samples.append(fake_episode(step, 10, split="eval", correct=True))
        if actions:
            samples.append(fake_episode(step, 11, split="train", correct=True, single_turn_actions=True))
    with open(run / "samples.jsonl", "w") as fh:
        fh.write("".join(json.dumps(s) + "\n" for s in samples))
        fh.write('{"step": 99, "split": "tra')  # a line cut by a crash: skipped
    return run


def test_series_skips_missing_and_nonfinite():
    rows = [{"step": 0, "a": 1.0}, {"step": 1}, {"step": 2, "a": float("nan")}, {"step": 3, "a": 2}]
    assert series(rows, "a") == ([0, 3], [1.0, 2.0])
    assert ema([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])  # bias-corrected: no pull towards 0


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A fake run with every metric key, and its report (built once: plotting is the slow part)."""
    run = make_fake_run(tmp_path_factory.mktemp("report"))
    return run, build_report(run)


def test_report_writes_every_plot_and_a_self_contained_page(built):
    run, out = built
    assert out == run / "report"
    assert {p.name for p in out.glob("*.png")} == ALL_PLOTS
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    page = (out / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # nothing fetched from the network
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # no external scripts/styles/images
    data = json.loads(re.search(r'<script id="rema-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert data["name"] == "fake-run"
    assert len(data["samples"]) == 24  # the truncated last line of samples.jsonl is skipped
    assert {p["file"] for p in data["plots"]} == ALL_PLOTS
    first = data["samples"][0]
    assert [t["agent"] for t in first["turns"]] == ["mta", "ra", "mta", "ra"]
    assert first["gold"] == "18" and first["extracted"] == "18" and first["end"] == "finished"
    assert first["turns"][0]["tokens"] > 0 and first["parts"]["ra"]["correct"] == 1.0
    assert any(t["truncated"] for s in data["samples"] for t in s["turns"])
    assert {s["split"] for s in data["samples"]} == {"train", "eval"}


def test_plots_skip_absent_keys(tmp_path):
    rows = [{"step": i, "train/acc": 0.1 * i, "train/actions/EMPTY": 1.0} for i in range(5)]
    assert [name for name, _ in make_plots(rows, tmp_path)] == ["accuracy.png"]  # no per-level action keys
    assert not list(tmp_path.glob("reward.png"))


def test_embedded_json_cannot_close_the_script_tag():
    text = embed_json({"t": "</script><script>alert(1)</script> & <!--"})
    assert "</script>" not in text and "<!--" not in text
    assert json.loads(text) == {"t": "</script><script>alert(1)</script> & <!--"}


def test_select_samples_keeps_every_step():
    rows = [{"step": s, "split": "train", "i": i} for s in range(10) for i in range(50)]
    kept = select_samples(rows, 100)
    assert len(kept) == 100 and {r["step"] for r in kept} == set(range(10))


def test_report_cli(tmp_path):
    from rema.cli import main

    run = make_fake_run(tmp_path)
    (run / "metrics.jsonl").unlink()  # dialogues only: the page, no plots (and fast)
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").is_file() and not list((tmp_path / "rep").glob("*.png"))
    assert main(["report", str(tmp_path / "nope")]) == 2


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (apt-get install chromium)")
def test_page_renders_the_dialogue_in_a_headless_browser(built):
    page = built[1] / "report.html"
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    # rendered by the page's script into the dialogue pane (not only present in the embedded JSON):
    assert re.search(r'class="msg mta"[^>]*>.*?Meta-thinker.*?' + re.escape(MTA_PLAN), dom, re.S)
    assert re.search(r'class="msg ra"[^>]*>.*?Reasoner.*?<span class="boxed">\\boxed\{18\}</span>', dom, re.S)
    assert 'class="finish">[FINISH]</span>' in dom
    assert re.search(r'<div class="item sel">', dom) and "24 of 24 dialogues" in dom
