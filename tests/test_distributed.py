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


def test_cold_start_two_processes_match_one(tmp_path):
    """SFT under data parallelism: each rank takes its share of a batch of dialogues (5 here, uneven), the loss
    is normalised by the global token count, and the summed gradient equals one process's."""
    import json

    turns = lambda a, b: [{"agent": "mta", "text": f"Add {a} and {b}."}, {"agent": "ra", "text": f"{a} + {b} = {a + b}."},  # noqa: E731
                          {"agent": "mta", "text": "Good. [FINISH]"}, {"agent": "ra", "text": f"\\boxed{{{a + b}}}" * (1 + a % 3)}]
    path = tmp_path / "dialogues.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {a} + {b}?", "answer": str(a + b), "turns": turns(a, b)}) + "\n"
                            for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9)]))
    runs = {}
    for procs in (1, 2):
        out = tmp_path / f"sft{procs}.pt"
        launcher = [sys.executable] + (["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                                        str(29600 + os.getpid() % 1000)] if procs > 1 else [])
        subprocess.run([*launcher, str(WORKER.parent / "ddp_sft.py"), str(out), str(tmp_path / f"run{procs}"), str(path)],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
        runs[procs] = torch.load(out)
    assert runs[1]["rows"] == runs[2]["rows"] == 10
    assert any(g.abs().sum() > 0 for g in runs[1]["grads"])
    for g1, g2 in zip(runs[1]["grads"], runs[2]["grads"]):
        assert torch.allclose(g1, g2, atol=1e-6, rtol=1e-4)
