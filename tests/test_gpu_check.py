"""bench/gpu_check.py: its FLOP and plan bookkeeping by hand, and its CPU smoke mode end to end (rema's
trainer under FSDP on a process group of one, the tiny shape, two RL steps; then separate weights, a resumed
run and the export; vLLM's sleep and the two-process run skipped, with their reasons; ~1 min on 2 cores)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # puts bench/ on sys.path for roofline
    return module


def test_update_flops_are_roofline_counts_summed_over_the_trained_rows(gpu_check) -> None:
    import roofline

    shape = roofline.Shape.of(SimpleNamespace(**roofline.SHAPES["tiny"]))
    rows = SimpleNamespace(input_ids=[[1, 2, 3, 4], [5, 6, 7]], mask=[[0, 0, 1, 1], [0, 1, 1]])
    one = roofline.update_flops(shape, 4, 2, 1)
    other = roofline.update_flops(shape, 3, 2, 1)
    model, hw = gpu_check.rows_flops(shape, [rows, rows], epochs=2)
    assert model == pytest.approx(2 * 2 * (one[0] + other[0]))
    assert hw == pytest.approx(2 * 2 * (one[1] + other[1]))


def test_phase_predictions_add_each_phase_to_what_is_always_held(gpu_check) -> None:
    from rema.plan import Line, Plan, Setup

    p = Plan("m", Setup(), lines=[Line("runtime", 1.0), Line("weights", 2.0),
                                  Line("KV cache", 0.5, phases=("rollout",)),
                                  Line("activations", 3.0, phases=("update",)),
                                  Line("optimizer step", 4.0, phases=("optimizer step",)),
                                  Line("activations with checkpointing", 9.0, phases=("info",))])
    assert gpu_check.phase_predictions(p) == {"rollout": 3.5, "update": 7.0, "runtime": 1.0}


def test_cpu_smoke_run_reports_every_figure() -> None:
    env = {**os.environ, "REMA_ENGINE": "hf", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--shape", "tiny", "--peak-tflops", "1"],
                         capture_output=True, text=True, timeout=300, env=env, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    assert all(d["bench"] == "gpu_check" for d in lines)
    parts = [d["part"] for d in lines]
    assert parts == ["device", "setup", "step", "step", "summary", "memory", "memory", "plan", "checks",
                     "path", "path", "path", "skip", "skip", "done"]
    paths = {d["path"]: d for d in lines if d["part"] in ("path", "skip")}
    assert paths["separate"]["ok"] and paths["separate"]["updated"] == [[1.0, 0.0], [0.0, 1.0]]
    assert paths["resume"]["ok"] and paths["resume"]["resumed_at_step"] == 1 and paths["resume"]["exact"]
    assert paths["export"]["ok"] and paths["export"]["max_abs_diff"] == 0.0
    assert "no sleep mode on CPU" in paths["vllm_sleep"]["reason"] and paths["two_procs"]["reason"] == "needs 2 GPUs"
    by = {d["part"]: d for d in lines}
    assert by["setup"]["strategy"] == "fsdp" and by["setup"]["master_dtypes"] == ["torch.float32"]
    steps = [d for d in lines if d["part"] == "step"]
    assert [s["warmup"] for s in steps] == [True, False]
    for s in steps:
        assert s["param_shard_frac"] == 1.0 and s["update_bf16"] == 1.0 and s["optimizer_steps"] == 1.0
        assert s["generated_tokens"] == 2 * 2 * 2 * 8  # 2 questions × 2 samples × (MTA + RA) × 8 tokens, no EOS
        assert s["update_rows"] == 8 and s["update_tokens"] > 0
        for key in ("time_rollout", "time_update", "time_sync", "update_tokens_per_s", "update_model_tflops",
                    "mfu_datasheet", "mfu_measured", "peak_rss_gib_rollout", "peak_rss_gib_update"):
            assert s[key] > 0, key
        assert 0 < s["mfu_datasheet"] < s["hfu_datasheet"]  # checkpointing recomputes the layers' forward
    assert by["summary"]["time_update"] == steps[1]["time_update"]  # the median of the measured steps
    memory = [d for d in lines if d["part"] == "memory"]
    assert [m["phase"] for m in memory] == ["rollout", "update"]
    for m in memory:
        assert m["predicted_gib"] > 0 and m["measured_gib"] > 0
        assert m["ratio"] == pytest.approx(m["measured_gib"] / m["predicted_gib"], abs=1e-3)
    assert by["plan"]["lines"]["weights"] > 0
    checks = by["checks"]
    assert checks["ok"], checks
    assert checks["compute_weight_dtypes"] == ["torch.float32"]  # CPU: fp32 shards under bf16 autocast
