"""A finished grid's final models on a new question set: accuracy per arm over seeds, and each arm against one.

``rema reproduce`` evaluates each run on the sets in its config; a new out-of-distribution set (``--ood``) there
means training the grid again, although training never reads it. This script reads instead the
``summary.json`` of ``rema eval --run RUN --checkpoint latest --out DIR`` on the new set, one per run, labelled
``ARM/SEED``. It prints one JSON line per arm: the mean accuracy over seeds and the half-width of its 95%
interval (``_ci95``), per level too. With ``--against ARM``, one line per other arm: the difference paired by
seed, its interval and the verdict word of ``rema reproduce`` ("agrees": the arm is ahead; "contradicts";
"inconclusive"). An arm with one label (an unseeded arm) stands for every seed of the other.

    python bench/rescore.py vrp_rl/0=DIR rema_multi/0=DIR ... --against vrp_rl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from rema.reproduce.stats import direction, estimate, paired_difference


def accuracies(folder: Path) -> dict[str, float]:
    """``{"acc": ..., "acc/level_4": ...}`` of the one benchmark in a ``rema eval --out`` folder."""
    path = folder / "summary.json"
    if not path.is_file():
        raise SystemExit(f"{folder}: no summary.json; give the --out folder of a finished `rema eval`")
    benches = json.loads(path.read_text())["benchmarks"]
    if len(benches) != 1:
        raise SystemExit(f"{folder}: {len(benches)} benchmarks; evaluate one set per folder")
    [scores] = benches.values()
    return {k: v for k, v in scores.items() if k == "acc" or k.startswith("acc/level_")}


def _paired_seeds(a: dict, b: dict) -> list[int]:
    """The seeds two arms are compared on: those both have, or all of one when the other has a single run."""
    return sorted(set(a) | set(b)) if min(len(a), len(b)) == 1 else sorted(set(a) & set(b))


def _at(by_seed: dict, seed: int) -> dict[str, float]:
    """An arm's scores at ``seed`` (its one run when it has only one)."""
    return by_seed[seed] if seed in by_seed else next(iter(by_seed.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="ARM/SEED=EVAL_DIR")
    ap.add_argument("--against", metavar="ARM", help="compare every other arm with this one, paired by seed")
    args = ap.parse_args()
    arms: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for item in args.runs:
        label, _, folder = item.partition("=")
        arm, _, seed = label.partition("/")
        if not folder or not seed.isdigit():
            raise SystemExit(f"{item!r}: write ARM/SEED=EVAL_DIR, e.g. rema_multi/0=evals/rema_multi-seed0")
        arms[arm][int(seed)] = accuracies(Path(folder))
    for arm, by_seed in arms.items():
        keys = sorted({k for scores in by_seed.values() for k in scores})
        line = {"arm": arm, "seeds": sorted(by_seed)}
        for k in keys:
            e = estimate([s[k] for s in by_seed.values() if k in s])
            line[k] = round(e.mean, 4)
            line[f"{k}_ci95"] = None if e.n < 2 else round(e.half, 4)
        print(json.dumps(line))
    if args.against:
        if args.against not in arms:
            raise SystemExit(f"--against {args.against}: no such arm; arms: {sorted(arms)}")
        base = arms[args.against]
        for arm, by_seed in arms.items():
            if arm == args.against:
                continue
            seeds = _paired_seeds(by_seed, base)
            diff = paired_difference([_at(by_seed, s)["acc"] for s in seeds], [_at(base, s)["acc"] for s in seeds])
            print(
                json.dumps(
                    {
                        "arm": arm,
                        "against": args.against,
                        "seeds": seeds,
                        "diff": round(diff.mean, 4),
                        "low": round(diff.low, 4),
                        "high": round(diff.high, 4),
                        "verdict": direction(diff),
                    }
                )
            )


if __name__ == "__main__":
    main()
