"""Does it learn? VRP_RL, MRP_RL and ReMA (single- and multi-turn) on the demo's budget, seeds side by side.

Every method trains the embedded SmolLM2-135M-Instruct with the demo's settings (``configs/demo.yaml``:
synthetic arithmetic levels 1-3, 4 questions × 6 samples per step, T = 0.6, LoRA r = 16, lr 3e-4, the same
steps, and the demo's cold start: SFT on the model's own correct episodes, each method in its own format)
and only the method differs. ``base/*`` is the method's prompting baseline without training (VRP, MRP, ReMA
prompting), ``before/*`` the model RL starts from (after the cold start), ``after/*`` the model after RL.
Per run it prints a JSON line: held-out accuracy per level, the reasoner's ``\\boxed{}`` rate, the
meta-thinker's answer-leak rate, the share of episodes that ended ``finished``, and the wall time; then a
summary line per method (mean and spread over seeds).

    python bench/learning.py                                  # all methods, seed 0 (10-25 min each here)
    python bench/learning.py --methods rema-multi,vrp --seeds 0,1,2 --steps 8
    python bench/learning.py sft.cold_start=false             # RL from the untrained model

Runs go to ``bench/out/learning/<method>-seed<k>`` (each a normal run directory: ``rema report`` works); an
existing one is replaced, unless ``--reuse`` keeps it when it finished the same number of steps.
vLLM's processes: this script runs under ``__main__`` like anything that creates a vLLM engine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "vrp": ["rollout.method=vrp", "rollout.mode=single_turn"],
    "mrp": ["rollout.method=mrp", "rollout.mode=single_turn"],
    "rema-single": ["rollout.method=rema", "rollout.mode=single_turn"],
    "rema-multi": [],  # the demo itself
}
KEYS = ("acc", "acc/level_1", "acc/level_2", "acc/level_3", "boxed_rate", "leak_rate", "plan_leak_rate", "end/finished")


def _evals(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in rows if "eval/acc" in r]


def run(method: str, seed: int, steps: int, out: Path, extra: list[str], *, reuse: bool = False) -> dict:
    run_dir = out / f"{method}-seed{seed}"
    evals = _evals(run_dir)
    if reuse and evals and evals[-1].get("step") == steps:
        done = run_dir / "learning.json"
        minutes = json.loads(done.read_text()).get("minutes") if done.exists() else None
        return _result(method, seed, steps, minutes, run_dir)
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # a fresh run each time: an independent re-run, not a resume
    # each run in its own process: no memory or engine left over from the previous one skews time or RSS
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--seeds",
        str(seed),
        "--steps",
        str(steps),
        "--out",
        str(out),
        *extra,
    ]
    if subprocess.run(cmd).returncode:
        sys.exit(f"{method} seed {seed} failed; its run directory: {run_dir}")
    return json.loads((run_dir / "learning.json").read_text())


def worker(method: str, seed: int, steps: int, out: Path, extra: list[str]) -> None:
    from rema.config import load_config
    from rema.train import Trainer

    run_dir = out / f"{method}-seed{seed}"
    cfg = load_config(
        ROOT / "configs" / "demo.yaml",
        [
            *METHODS[method],
            f"train.seed={seed}",
            f"train.steps={steps}",
            f"train.eval_every={steps}",
            f"train.save_every={steps}",
            f"log.run_dir={run_dir}",
            f"log.name=learning-{method}",
            "log.progress=false",
            *extra,
        ],
    )
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    try:
        trainer.fit()
    finally:
        trainer.close()
    result = _result(method, seed, steps, round((time.perf_counter() - t0) / 60, 1), run_dir)
    (run_dir / "learning.json").write_text(json.dumps(result) + "\n")


def _result(method: str, seed: int, steps: int, minutes: float | None, run_dir: Path) -> dict:
    """The run's held-out metrics at its first and last evaluation (and before the cold start, ``base/*``,
    when the run had one), its wall time and peak memory."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/acc" in r]
    before, after = evals[0], evals[-1]
    peak = {
        k: max((r[k] for r in rows if k in r), default=None)
        for k in ("perf/peak_rss_gb/update", "perf/peak_rss_gb/rollout", "perf/engine_rss_gb")
    }
    return {
        "method": method,
        "seed": seed,
        "steps": steps,
        "minutes": minutes,
        **peak,
        **{f"base/{k}": before.get(f"base_eval/{k}") for k in KEYS if f"base_eval/{k}" in before},
        **{f"before/{k}": before.get(f"eval/{k}") for k in KEYS},
        **{f"after/{k}": after.get(f"eval/{k}") for k in KEYS},
        "run_dir": str(run_dir),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="vrp,mrp,rema-single,rema-multi")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "learning"))
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep runs already finished under --out (same method, seed, steps) instead of redoing them",
    )
    ap.add_argument("--worker", metavar="METHOD", help=argparse.SUPPRESS)  # one run, in a child process
    ap.add_argument("overrides", nargs="*", help="extra config overrides for every run (key=value)")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, int(args.seeds), args.steps, Path(args.out), args.overrides)
        return
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for method in methods:
            result = run(method, seed, args.steps, Path(args.out), args.overrides, reuse=args.reuse)
            print(json.dumps(result), flush=True)
            results.append(result)
    for method in methods:
        mine = [r for r in results if r["method"] == method]
        gains = [r["after/acc"] - r["before/acc"] for r in mine]
        summary = {
            "summary": method,
            "seeds": len(mine),
            "gain_mean": round(statistics.mean(gains), 4),
            "gain_min": round(min(gains), 4),
            "gain_max": round(max(gains), 4),
            "before_acc_mean": round(statistics.mean(r["before/acc"] for r in mine), 4),
            "after_acc_mean": round(statistics.mean(r["after/acc"] for r in mine), 4),
        }
        if all("base/acc" in r for r in mine):  # cold start: base model -> after SFT ("before") -> after RL
            summary["base_acc_mean"] = round(statistics.mean(r["base/acc"] for r in mine), 4)
            total = [r["after/acc"] - r["base/acc"] for r in mine]
            summary.update(
                {
                    "total_gain_mean": round(statistics.mean(total), 4),
                    "total_gain_min": round(min(total), 4),
                    "total_gain_max": round(max(total), 4),
                }
            )
        minutes = [r["minutes"] for r in mine if r["minutes"] is not None]
        if minutes:
            summary["minutes_mean"] = round(statistics.mean(minutes), 1)
        for key in KEYS[1:]:
            vals = [r[f"after/{key}"] for r in mine if r[f"after/{key}"] is not None]
            if vals:
                summary[f"after_{key.replace('acc/', '')}_mean"] = round(statistics.mean(vals), 4)
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
