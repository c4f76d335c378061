"""Data parallel: two CPU processes (gloo) give the same gradient as one process on the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).parent / "helpers" / "ddp_step.py"


def _run(tmp_path: Path, procs: int, *args: str) -> dict:
    out = tmp_path / f"grads{procs}.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable]
    if procs > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                     "--master_port", str(29500 + os.getpid() % 1000)]
    subprocess.run([*launcher, str(WORKER), str(out), str(tmp_path / f"run{procs}"), *args],
                   check=True, env=env, timeout=600)
    return torch.load(out)


@pytest.mark.parametrize("advantage,agg,ratio_level", [("grpo", "trajectory", "turn"),
                                                       ("reinforce_pp", "token", "token")])
def test_two_processes_match_one(tmp_path, advantage, agg, ratio_level):
    one = _run(tmp_path, 1, advantage, agg, ratio_level)
    two = _run(tmp_path, 2, advantage, agg, ratio_level)
    assert one["rows"] == two["rows"]  # the same global batch, split across ranks
    assert any(g.abs().sum() > 0 for g in one["grads"])
    for g1, g2 in zip(one["grads"], two["grads"]):
        assert torch.allclose(g1, g2, atol=1e-6, rtol=1e-4)
