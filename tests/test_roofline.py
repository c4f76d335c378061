"""The roofline benchmark's FLOP and byte counts (bench/roofline.py) against hand-computed values, and one
smoke run of the script on the tiny shape (CPU, seconds)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "roofline.py"


@pytest.fixture(scope="module")
def roofline():
    spec = importlib.util.spec_from_file_location("roofline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["roofline"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(roofline):
    return roofline.Shape.of(SimpleNamespace(**roofline.SHAPES["tiny"]))


def test_layer_weights_count_every_matmul_weight_of_a_qwen2_layer(roofline, tiny) -> None:
    # q 128x128, k and v 64x128 (1 KV head of 64), o 128x128, gate/up/down 3 x 128x256
    assert (tiny.width, tiny.layer_weights, tiny.head_weights) == (128, 147456, 512 * 128)
    assert tiny.kv_per_token(2) == 2 * 2 * 1 * 64 * 2  # layers x (K, V) x KV heads x head size x bytes
    from transformers import AutoModelForCausalLM, Qwen2Config

    model = AutoModelForCausalLM.from_config(Qwen2Config(**roofline.SHAPES["tiny"]))
    layer = model.model.layers[0]
    assert sum(p.numel() for p in layer.parameters() if p.dim() == 2) == tiny.layer_weights
    for name, real in (("0.5b", 494_032_768), ("1.5b", 1_543_714_304)):  # Qwen2.5's published counts
        s = roofline.Shape.of(SimpleNamespace(**roofline.SHAPES[name]))
        matmuls = s.layers * s.layer_weights + s.head_weights
        assert 0.99 < matmuls / real < 1.0  # all but norms and biases


def test_forward_and_update_flops_by_hand(roofline, tiny) -> None:
    # 3 tokens, head on 1, 6 attended pairs: 2*2*147456*3 + 2*65536*1 + 4*2*128*6
    assert roofline.forward_flops(tiny, 3, 1, 6) == 1769472 + 131072 + 6144
    # one row of 4 tokens, 2 trained: forward 2*2*147456*4 + 2*65536*2 + 4*2*128*10 = 2631680; the backward
    # doubles it; checkpointing recomputes the layers' part (2631680 - 262144)
    assert roofline.update_flops(tiny, 4, 2, 1) == (3 * 2631680, 3 * 2631680 + 2369536)


def test_decode_roofline_takes_the_slower_of_memory_and_compute_per_forward(roofline, tiny) -> None:
    weights = (2 * 147456 + 65536) * 2  # bytes read by every forward
    # memory-bound (1 MB/s, 1 GFLOP/s): the prefill reads the weights; row 0 decodes two more tokens with 3
    # and 4 tokens of context (512 bytes of KV each), row 1 stops after the prefill's token
    memory = roofline.decode_roofline(tiny, 2, [3, 1], 2, peak_flops=1e9, bandwidth=1e6)
    assert memory == pytest.approx((weights + weights + 512 * 3 + weights + 512 * 4) / 1e6)
    # compute-bound (1 MFLOP/s): prefill of 2 x 2 tokens (head on 2, 6 pairs): 2359296 + 262144 + 6144;
    # then 1 token over 3 and over 4 pairs: 589824 + 131072 + 3072 and + 4096
    compute = roofline.decode_roofline(tiny, 2, [3, 1], 2, peak_flops=1e6, bandwidth=1e12)
    assert compute == pytest.approx((2627584 + 723968 + 724992) / 1e6)


def test_script_runs_on_the_tiny_shape() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--shapes",
            "tiny",
            "--device",
            "cpu",
            "--batches",
            "2",
            "--new",
            "4",
            "--prompt",
            "8",
            "--rows",
            "2",
            "--row-len",
            "16",
            "--repeats",
            "1",
            "--ceiling-size",
            "128",
            "--copy-mib",
            "4",
            "--peak-tflops",
            "1",
            "--bandwidth-gbs",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    lines = {d["part"]: d for d in map(json.loads, out.splitlines())}
    assert lines["ceilings"]["datasheet_tflops"] == 1 and lines["ceilings"]["measured_tflops"] > 0
    decode = lines["decode"]
    assert decode["tokens"] == 2 * 4 and decode["of_roofline_datasheet"] > 0  # no EOS: every row runs to --new
    assert decode["roofline_tok_per_s_datasheet"] > decode["tok_per_s"]
    update = lines["update"]
    # HFU counts the recomputed forward too, so HFU >= MFU (equal once both are rounded on a slow machine)
    assert update["trained"] == 12 and 0 < update["mfu_datasheet"] <= update["hfu_datasheet"]
