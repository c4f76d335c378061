"""A grid's held-out accuracy at every evaluated step, per arm over seeds, and each arm against one, step by step.

``rema reproduce`` reads each run's last evaluation. Run with ``train.eval_every`` below ``train.steps``, a grid
also holds the evaluations on the way, in each run's ``metrics.jsonl``; this script lines them up, to see whether
a gap between arms opens or closes with more RL. It prints one JSON line per arm and step: the mean accuracy over
seeds and the half-width of its 95% interval (``_ci95``) on each held-out set of the runs' configs
(``eval/<set>/acc``), and with ``--against ARM`` the difference paired by seed on each set (``_vs_ARM``), its
interval and the verdict word of ``rema reproduce``.

    python bench/over_steps.py reproduce/table1 --against vrp_rl
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from pathlib import Path

from rema.reproduce.stats import direction, estimate, paired_difference

_ACC = re.compile(r"^eval/(?!avg/)([^/]+)/acc$")


def _num(x: float) -> float | None:
    """``x`` to 4 places for JSON; None where one seed gives no interval (NaN)."""
    return None if math.isnan(x) else round(x, 4)


def curves(folder: Path) -> dict[str, dict[int, dict[int, dict[str, float]]]]:
    """``{arm: {step: {seed: {set: accuracy}}}}`` from ``folder/runs/ARM-seedS/metrics.jsonl``."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    runs = sorted((folder / "runs").glob("*-seed*/metrics.jsonl"))
    if not runs:
        raise SystemExit(f"{folder}: no runs/ARM-seedS/metrics.jsonl; give an experiment folder of `rema reproduce`")
    for path in runs:
        arm, seed = path.parent.name.rsplit("-seed", 1)
        for row in map(json.loads, path.read_text().splitlines()):
            accs = {m.group(1): v for k, v in row.items() if (m := _ACC.match(k))}
            if accs:
                out[arm][int(row["step"])][int(seed)] = accs
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="an experiment folder of rema reproduce (OUT/table1)")
    p.add_argument("--against", help="an arm to compare every other arm with, seed by seed")
    args = p.parse_args(argv)
    data = curves(args.folder)
    if args.against and args.against not in data:
        raise SystemExit(f"--against {args.against}: no such arm; the folder has {sorted(data)}")
    for arm, steps in data.items():
        for step, seeds in sorted(steps.items()):
            sets = sorted({s for accs in seeds.values() for s in accs})
            line = {"arm": arm, "step": step, "seeds": sorted(seeds)}
            for s in sets:
                e = estimate([accs.get(s, float("nan")) for accs in seeds.values()])
                line[s], line[f"{s}_ci95"] = _num(e.mean), _num(e.half)
            base = data[args.against].get(step) if args.against and arm != args.against else None
            if base:
                common = sorted(set(base) & set(seeds))
                for s in sets:
                    d = paired_difference(
                        [seeds[k].get(s, float("nan")) for k in common], [base[k].get(s, float("nan")) for k in common]
                    )
                    line[f"{s}_vs_{args.against}"], line[f"{s}_vs_{args.against}_ci95"] = _num(d.mean), _num(d.half)
                    line[f"{s}_verdict"] = direction(d)
            print(json.dumps(line))


if __name__ == "__main__":
    main()
