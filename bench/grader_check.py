"""Check the math grader on benchmark data: accept rate on matched pairs, accept rate on mismatched pairs.

For every dataset in ../shared/data (beside the repo) it grades
  matched:    each row's reference response against its own answer (should be accepted, target >= 99%);
  mismatched: each response against the NEXT row's answer (should be rejected, target < 1%), skipping
              pairs whose two answers are the same after string normalisation (really the same answer).
Reference responses are the dataset's `solution` (GSM8K ends with `#### N`, MATH with `\\boxed{}`); AIME24's
`solution` is raw AoPS text where some rows never state the answer, so it is reported both in full and
restricted to rows with a box. `*_synth` rows wrap the answer in rotating answer styles (boxed, fbox,
"final answer is", "Answer:", "####", multiple boxes) to exercise every extraction rule.

Prints one JSON line per dataset: n, accept, mismatch_n, mismatch_accept, timeouts, errors, items_per_s;
first a line with the pool's round-trip overhead on trivial items.
Usage: python bench/grader_check.py [--data DIR] [--workers N] [--timeout S] [--limit N] [--examples K]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from rema.rewards import MathGrade, close, grade_math, grade_math_batch

TEMPLATES = [
    "Working through the algebra carefully we get the result. So the answer is $\\boxed{%s}$.",
    "Let us check small cases first; the answer is $\\boxed{0}$? No, recomputing: $\\boxed{%s}$.",
    "Final Answer: The final answer is $%s$. I hope it is correct.",
    "After simplifying, we conclude.\nAnswer: $%s$",
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### %s",
    "Therefore the result is \\fbox{%s}.",
]


def norm_answer(s: str) -> str:
    """String normalisation deciding whether two gold answers are 'the same' (those pairs are skipped)."""
    s = re.sub(r"\\text\{([^{}]*)\}|\\textbf\{([^{}]*)\}|\\mbox\{([^{}]*)\}", r"\1\2\3", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("^\\circ", "").replace("^{\\circ}", "")
    return re.sub(r"\\left|\\right|\\!|\\,|\s|\$", "", s).rstrip(".").lower()


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check(name: str, responses: list[str], golds: list[str], args: argparse.Namespace) -> dict:
    n = len(responses)
    shifted = [(i, (i + 1) % n) for i in range(n) if norm_answer(golds[i]) != norm_answer(golds[(i + 1) % n])]
    t0 = time.perf_counter()
    matched = grade_math_batch(responses, golds, timeout_s=args.timeout, workers=args.workers)
    mism = grade_math_batch(
        [responses[i] for i, _ in shifted], [golds[j] for _, j in shifted], timeout_s=args.timeout, workers=args.workers
    )
    dt = time.perf_counter() - t0
    all_grades: list[MathGrade] = matched + mism
    for i, g in enumerate(matched):
        if not g.correct and args.examples > 0:
            args.examples -= 1
            print(f"[{name}] REJECTED gold={golds[i]!r} extracted={g.extracted!r} error={g.error}", file=sys.stderr)
    for (i, j), g in zip(shifted, mism):
        if g.correct:
            print(
                f"[{name}] MISMATCH ACCEPTED gold={golds[j]!r} own={golds[i]!r} extracted={g.extracted!r}",
                file=sys.stderr,
            )
    return {
        "dataset": name,
        "n": n,
        "accept": round(sum(g.correct for g in matched) / n, 4),
        "mismatch_n": len(shifted),
        "mismatch_accept": round(sum(g.correct for g in mism) / max(1, len(mism)), 4),
        "timeouts": sum(g.timed_out for g in all_grades),
        "errors": sum(g.error is not None and not g.timed_out for g in all_grades),
        "items_per_s": round(len(all_grades) / dt, 1),
        "workers": args.workers,
    }


def overhead(args: argparse.Namespace) -> dict:
    """Round-trip cost of the pool on trivial items: per-call latency (1 worker) and batch throughput."""
    n = 300
    t0 = time.perf_counter()
    grades = [grade_math(f"\\boxed{{{i}}}", str(i), timeout_s=args.timeout) for i in range(n)]
    single_ms = (time.perf_counter() - t0) / n * 1e3
    worker_ms = sum(g.seconds for g in grades) / n * 1e3  # time spent grading inside the worker
    t0 = time.perf_counter()
    grade_math_batch([f"\\boxed{{{i}}}" for i in range(n)], [str(i) for i in range(n)], workers=args.workers)
    return {
        "dataset": "overhead_trivial_items",
        "grade_math_ms_per_call": round(single_ms, 3),
        "ipc_overhead_ms_per_call": round(single_ms - worker_ms, 3),
        "batch_items_per_s": round(n / (time.perf_counter() - t0), 1),
        "workers": args.workers,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--limit", type=int, default=0, help="rows per dataset (0 = all)")
    ap.add_argument("--examples", type=int, default=10, help="rejected matched pairs to print to stderr")
    args = ap.parse_args()
    grade_math_batch(["\\boxed{1}"] * args.workers, ["1"] * args.workers, workers=args.workers)  # start pool
    print(json.dumps(overhead(args)), flush=True)
    for fname in ("math500_test", "gsm8k_test", "aime24", "amc23"):
        path = args.data / f"{fname}.jsonl"
        if not path.exists():
            continue
        rows = load(path)[: args.limit or None]
        golds = [r["answer"] for r in rows]
        if all("solution" in r for r in rows):
            print(json.dumps(check(fname, [r["solution"] for r in rows], golds, args)), flush=True)
            if fname == "aime24":
                boxed = [r for r in rows if "\\boxed" in r["solution"]]
                res = check("aime24_boxed_only", [r["solution"] for r in boxed], [r["answer"] for r in boxed], args)
                print(json.dumps(res), flush=True)
        synth = [TEMPLATES[i % len(TEMPLATES)] % g for i, g in enumerate(golds)]
        print(json.dumps(check(f"{fname}_synth", synth, golds, args)), flush=True)
    close()


if __name__ == "__main__":
    main()
