"""False alarms and detection delay of the health checks (``train.health``) on simulated small-batch runs.

Each simulated step draws a batch like the demo's: ``--questions`` questions, each with its own success rate
``p ~ Beta(3 m, 3 (1 - m))`` around the run's level ``m``, sampled ``--samples`` times; the step's share is the
mean. A healthy run keeps ``m`` for ``--steps`` steps; a collapsing one drops it at step 20 (to 0.02 for a
falling share, to 0.99 for a rising one). The real check functions (``rema.train.health``, default thresholds)
judge the history after every step, as the guard does. One JSON line per (check, level):

    {"check": "reward_cliff", "level": 0.5, "false_alarm_runs": 0.0, "runs": 40, "steps": 500,
     "detected": 1.0, "delay_mean": 3.1}

``false_alarm_runs``: the share of healthy runs in which the check fired at least once in ``--steps`` steps;
``detected``: the share of collapsing runs it caught within 20 steps of the collapse; ``delay_mean``: steps from
the collapse to the firing.

    python bench/health_noise.py [--runs 40] [--steps 500] [--questions 4] [--samples 6]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics

from rema.config import HealthConfig
from rema.train.health import CHECKS

SCENARIOS = {  # check: (metric key, levels of the healthy run, the level after the collapse)
    "reward_cliff": ("train/acc", (0.3, 0.5, 0.7), 0.02),
    "format": ("train/end/finished", (0.6, 0.75, 0.8, 0.9), 0.02),
    "turns_pinned": ("train/end/max_turns", (0.2, 0.4, 0.5), 0.99),
    "degenerate": ("train/degenerate/repetitive", (0.05, 0.1, 0.2), 0.99),
}


def share(rng: random.Random, level: float, questions: int, samples: int) -> float:
    """One step's share over a batch of unequal questions."""
    rates = [rng.betavariate(3 * level, 3 * (1 - level)) for _ in range(questions)]
    return sum(sum(rng.random() < p for _ in range(samples)) / samples for p in rates) / questions


def first_firing(check: str, key: str, levels: list[float], seed: int, args) -> int | None:
    """The step at which ``check`` first fires on a run whose level at step ``s`` is ``levels[s - 1]``."""
    rng, cfg, history = random.Random(seed), HealthConfig(), []
    for step, level in enumerate(levels, start=1):
        history.append({"step": step, key: share(rng, level, args.questions, args.samples)})
        del history[: -(cfg.window + cfg.patience + cfg.smooth)]
        if CHECKS[check](history, cfg) is not None:
            return step
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--questions", type=int, default=4)
    ap.add_argument("--samples", type=int, default=6)
    args = ap.parse_args()
    for check, (key, levels, collapsed) in SCENARIOS.items():
        for level in levels:
            alarms = [first_firing(check, key, [level] * args.steps, seed, args) for seed in range(args.runs)]
            caught = [
                first_firing(check, key, [level] * 19 + [collapsed] * 20, 10_000 + seed, args)
                for seed in range(args.runs)
            ]
            delays = [s - 20 for s in caught if s is not None and s >= 20]
            print(
                json.dumps(
                    {
                        "check": check,
                        "level": level,
                        "false_alarm_runs": sum(a is not None for a in alarms) / args.runs,
                        "runs": args.runs,
                        "steps": args.steps,
                        "detected": len(delays) / args.runs,
                        "delay_mean": round(statistics.mean(delays), 2) if delays else None,
                    }
                )
            )


if __name__ == "__main__":
    main()
