"""Per-question eval records (``records/<bench>.jsonl``): building them from episodes, writing them
crash-safely, reading them back for resume, and summarising a benchmark from them.

One line per question (math) or per judged pair (judge task). A math record::

    {"id", "bench", "task": "math", "question", "answer", "level",
     "correct", "extracted", "end_code", "tokens"     # of sample 0 (the greedy answer when n = 1)
     "n", "n_correct", "stats": {"pass@1", "pass@4", "maj@4", ...}, "majority": {...} (n > 1),
     "samples": [{"extracted", "correct", "end_code", "turns", "tokens", "reward", "episode": Episode.to_dict()}],
     "seconds"}                                       # wall time of the chunk / questions in it

A judge record holds the same sample lists for both orders (``original``: A/B as given; ``swapped``) plus
``verdict_*``, ``correct_*`` (majority verdict over the samples of that order), ``consistent``, and the pair's
``subset`` and ``family`` (``rema.rewards.judge_family``; None when the benchmark names no parts).

Summaries are recomputed from the records (not from in-memory state), so a resumed eval reports exactly
what a single uninterrupted run would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..rewards import judge_family, last_verdict
from ..rollout.episode import Episode
from ..scoring import episode_metrics
from .metrics import (
    aggregate_questions,
    default_ks,
    episode_from_dict,
    judge_family_summary,
    judge_summary,
    majority_vote,
    question_stats,
    swap_consistent,
    token_counts,
)


def sample_record(ep: Episode, *, task: str) -> dict:
    """What is kept of one scored episode (the dialogue plus the fields tables are built from)."""
    extracted = last_verdict(ep.final_response) if task == "judge" else ep.meta.get("extracted")
    return {
        "extracted": extracted,
        "correct": bool(ep.meta.get("correct")),
        "end_code": ep.end_code,
        "turns": ep.n_rounds,
        "tokens": token_counts(ep),
        "reward": dict(ep.reward),
        "timed_out": bool(ep.reward_parts.get("ra", {}).get("timed_out", 0.0)),
        "episode": ep.to_dict(),
    }


def math_record(problem, episodes: Sequence[Episode], *, bench: str, seconds: float) -> dict:
    """One question's record from its ``n`` scored episodes (sample order kept)."""
    samples = [sample_record(ep, task="math") for ep in episodes]
    answers = [s["extracted"] for s in samples]
    correct = [s["correct"] for s in samples]
    n = len(samples)
    rec = {
        "id": str(problem.id),
        "bench": bench,
        "task": "math",
        "question": problem.question,
        "answer": str(problem.answer),
        "level": (problem.meta or {}).get("level"),
        "correct": correct[0],
        "extracted": answers[0],
        "end_code": samples[0]["end_code"],
        "tokens": samples[0]["tokens"],
        "n": n,
        "n_correct": sum(correct),
        "stats": question_stats(answers, correct, default_ks(n)),
    }
    if n > 1:
        answer, ok, votes = majority_vote(answers, correct)
        rec["majority"] = {"answer": answer, "correct": ok, "votes": votes}
    rec["samples"] = samples
    rec["seconds"] = seconds
    return rec


def _order_summary(episodes: Sequence[Episode]) -> tuple[list[dict], str | None, bool]:
    samples = [sample_record(ep, task="judge") for ep in episodes]
    verdict, ok, _ = majority_vote([s["extracted"] for s in samples], [s["correct"] for s in samples])
    return samples, verdict, ok


def judge_record(
    problem, original: Sequence[Episode], swapped: Sequence[Episode], *, bench: str, seconds: float
) -> dict:
    """One pair's record from the episodes of both orders."""
    s_o, v_o, c_o = _order_summary(original)
    s_s, v_s, c_s = _order_summary(swapped)
    subset = (problem.meta or {}).get("subset")
    return {
        "id": str(problem.id),
        "bench": bench,
        "task": "judge",
        "question": problem.question,
        "answer": str(problem.answer),
        "label": problem.answer,
        "subset": subset,
        "family": judge_family(subset),
        "verdict_original": v_o,
        "verdict_swapped": v_s,
        "correct_original": c_o,
        "correct_swapped": c_s,
        "correct": c_o,
        "consistent": swap_consistent(v_o, v_s),
        "n": len(s_o),
        "original": s_o,
        "swapped": s_s,
        "seconds": seconds,
    }


# --- files ----------------------------------------------------------------------------------------------


def append_records(path: Path, records: Iterable[dict]) -> None:
    """Append records as JSON lines in one write, flushed and fsynced (a crash loses at most this batch)."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def read_records(path: Path, *, repair: bool = True) -> list[dict]:
    """Records of a file (empty if absent). Lines that do not parse — a write cut by a crash — are dropped,
    and with ``repair`` the file is rewritten without them so the next append starts on a clean line."""
    if not path.is_file():
        return []
    good: list[str] = []
    bad = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        good.append(line)
    if bad and repair:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in good), encoding="utf-8")
        os.replace(tmp, path)
    return [json.loads(line) for line in good]


# --- summaries ------------------------------------------------------------------------------------------


def _episodes(records: Sequence[dict]) -> list[Episode]:
    eps = []
    for r in records:
        for key in ("samples", "original", "swapped"):
            eps += [episode_from_dict(s["episode"]) for s in r.get(key, [])]
    return eps


_KEEP_EPISODE_KEYS = (
    "end/",
    "turns/mean",
    "tokens_per_turn/",
    "boxed_rate",
    "leak_rate",
    "plan_leak_rate",
    "actions/",
    "action_level/",
    "reward/",
)


def summarize_bench(records: Sequence[dict]) -> dict[str, float]:
    """Benchmark figures from its records: ``score`` (the headline accuracy), pass@k / maj@k (math) or
    order accuracies and consistency (judge), ``acc/strict`` (correct *and* ended ``finished``), and
    ``episode_metrics`` of every sample (end codes, turns, tokens per turn, rewards).

    ``acc`` grades the RA's last message whatever the episode's end code, like the paper's evaluation and
    ``episode_metrics``; under unfinished masking a training reward would be 0 for the unfinished ones.
    """
    if not records:
        return {"questions": 0}
    task = records[0].get("task", "math")
    out: dict[str, float] = {"questions": float(len(records))}
    if task == "judge":
        out.update(judge_summary(records))
        out["score"] = out["acc"]
        out.update(judge_family_summary(records))
    else:
        out.update(aggregate_questions([r["stats"] for r in records]))
        out["acc"] = out["pass@1"]
        out["score"] = out["acc"]
        out.update({f"acc/level_{lv}": v for lv, v in _level_acc(records).items()})
    eps = _episodes(records)
    out["samples"] = float(len(eps))
    strict = [bool(ep.meta.get("correct")) and ep.end_code == "finished" for ep in eps]
    out["acc/strict"] = sum(strict) / max(1, len(strict))
    m = episode_metrics(eps)
    out.update({k: v for k, v in m.items() if k.startswith(_KEEP_EPISODE_KEYS)})
    out["tokens/mean"] = sum(token_counts(ep)["total"] for ep in eps) / max(1, len(eps))
    out["grader/timeouts"] = float(sum(s.get("timed_out", False) for r in records for s in r.get("samples", [])))
    out["wall_s"] = float(sum(r.get("seconds", 0.0) for r in records))
    return out


def _level_acc(records: Sequence[dict]) -> dict:
    by: dict[object, list[float]] = {}
    for r in records:
        if r.get("level") is not None:
            by.setdefault(r["level"], []).append(r["stats"]["pass@1"])
    return {lv: sum(v) / len(v) for lv, v in sorted(by.items(), key=lambda kv: str(kv[0]))}


def average_benches(benches: dict[str, dict]) -> dict[str, float]:
    """Unweighted mean over benchmarks (as in the paper's Avg. column) of the keys every benchmark has."""
    rows = [b for b in benches.values() if b.get("questions")]
    if not rows:
        return {}
    keys = [
        k
        for k in rows[0]
        if all(k in b for b in rows)
        and (k in ("score", "acc", "wall_s", "questions") or k.startswith(("pass@", "maj@", "end/")))
    ]
    avg = {k: sum(b[k] for b in rows) / len(rows) for k in keys}
    avg["wall_s"] = sum(b.get("wall_s", 0.0) for b in rows)
    avg["questions"] = sum(b["questions"] for b in rows)
    return avg
