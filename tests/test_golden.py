"""The restructured trainer computes what the trainer before it did: the same seed gives the same metrics,
samples and final weights on eight short runs of the tiny model that cover every update path (single and
multi turn, GRPO / RLOO / REINFORCE++, KL as loss and in the reward, entropy, epochs × mini-batches with π_old
recomputed or from the sampler, separate weights, LoRA under bf16 autocast with checkpointing, the cold start).

``tests/data/golden_runs.json`` was written by the code before the restructure (its ``_captured_on`` names the
commit); the runs use one thread so the reduction order does not depend on the machine's size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
GOLDEN = json.loads((HERE / "data" / "golden_runs.json").read_text())
ADDED = {
    "dist/param_shard_frac",
    "train/updated/mta",
    "train/updated/ra",
    *(f"{split}/degenerate/{k}" for split in ("train", "eval", "base_eval") for k in ("repetitive", "non_text")),
}
"""Metrics logged since the golden runs were captured (new keys, not changed values)."""


@pytest.mark.slow
def test_same_seed_gives_the_same_runs_as_before_the_restructure():
    captured = GOLDEN["_captured_on"]
    if torch.backends.cpu.get_cpu_capability() != captured["cpu_capability"]:
        pytest.skip(
            f"golden runs were captured on a {captured['cpu_capability']} CPU; this one is "
            f"{torch.backends.cpu.get_cpu_capability()} (other kernels round differently)"
        )
    out = subprocess.run(
        [sys.executable, str(HERE / "helpers" / "golden_run.py")],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "REMA_ENGINE": "hf"},
    )
    now = json.loads(out.stdout.splitlines()[-1])
    for name, want in GOLDEN.items():
        if name.startswith("_"):
            continue
        got = now[name]
        assert len(got["metrics"]) == len(want["metrics"]), name
        for step, (g, w) in enumerate(zip(got["metrics"], want["metrics"])):
            assert g.keys() - ADDED == w.keys(), (name, step, sorted((g.keys() - ADDED) ^ w.keys()))
            diff = {k: (w[k], g[k]) for k in w if g[k] != w[k]}
            assert not diff, f"{name} record {step}: {diff}"
        assert got["samples"] == want["samples"], name
        assert got["weights"] == want["weights"], name
