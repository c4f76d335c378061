"""Decode speed against the memory-bandwidth bound and update MFU against the bf16 peak, on any device.

Models: random weights in the shapes of Qwen2.5-0.5B and Qwen2.5-1.5B (transformers' ``Qwen2Config``, built
in-process, nothing downloaded); ``tiny`` is a 2-layer shape for a quick check that the script runs.

* **Ceilings**: the device's peak bf16 matmul rate and memory bandwidth, from a table of data-sheet figures
  for known GPUs (H100, H200, A100; or ``--peak-tflops`` / ``--bandwidth-gbs``) and as measured here (a
  square bf16 matmul, a large copy). Ratios are given against both where both exist.
* **Decode**: rema's generation engines on B random prompts of P tokens, N new tokens each (no EOS: the
  model has none, so every row runs to N), bf16 weights. The roofline time of the same work is, per forward
  (the prefill, then one per new token), the larger of bytes/bandwidth and FLOPs/peak: every step reads
  all matmul weights (the tied embedding once, as the LM head) and the KV cache of every live row. The
  engine's tok/s over the roofline's is how close decoding comes to the hardware. ``hf`` = rema's
  transformers engine (one Python step per token), ``vllm`` = rema's vLLM engine where vLLM is installed.
* **Update**: the trainer's full-parameter update (fp32 weights, bf16 autocast where native, activation
  checkpointing, log-probs through ``rema.train.logprobs.token_logprobs`` on the trained positions only,
  AdamW) on R rows of L tokens. Model FLOPs = 3 × the forward's (2 per weight per token, the LM head on the
  trained positions, causal attention ``4·layers·width·n(n+1)/2`` per row); MFU = model FLOPs/s over the
  peak; HFU adds the checkpointed forward the backward recomputes.

One JSON line per figure. Usage:

    python bench/roofline.py                                     # 0.5B and 1.5B shapes, on CUDA if present
    python bench/roofline.py --device cpu --shapes 0.5b --batches 1,8 --new 32 --rows 2 --row-len 256
    python bench/roofline.py --shapes tiny --device cpu --batches 2 --new 8 --rows 2 --row-len 32  # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from types import SimpleNamespace

import torch

# shape name -> Qwen2Config fields (the real models' config.json values; weights are random)
SHAPES = {
    "0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    # head size 64: vLLM's CPU attention has no kernel for smaller ones
    "tiny": dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=512,
        tie_word_embeddings=True,
    ),
}

# data-sheet dense bf16 TFLOPS and memory GB/s, matched in order against torch.cuda.get_device_name()
DATASHEET = [
    (("H200",), 989.0, 4800.0),
    (("H100", "NVL"), 835.0, 3900.0),
    (("H100", "PCIe"), 756.0, 2000.0),
    (("H100",), 989.0, 3350.0),  # SXM ("NVIDIA H100 80GB HBM3")
    (("A100", "80GB", "PCIe"), 312.0, 1935.0),
    (("A100", "80GB"), 312.0, 2039.0),
    (("A100",), 312.0, 1555.0),
]


@dataclass(frozen=True)
class Shape:
    """What the roofline needs of a decoder: sizes of its matmuls and of its KV cache."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, config) -> Shape:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
            config.num_key_value_heads,
            head_dim,
            config.intermediate_size,
            config.vocab_size,
        )

    @property
    def width(self) -> int:
        """Attention width (heads × head size): query and output projections' size."""
        return self.heads * self.head_dim

    @property
    def layer_weights(self) -> int:
        """Matmul weights of one layer: q, k, v, o and the gated MLP's three (norms and biases left out)."""
        kv = self.kv_heads * self.head_dim
        return 2 * self.hidden * self.width + 2 * self.hidden * kv + 3 * self.hidden * self.intermediate

    @property
    def head_weights(self) -> int:
        return self.vocab * self.hidden

    def kv_per_token(self, bytes_per_value: int) -> int:
        """Bytes of K and V cached per token, all layers."""
        return self.layers * 2 * self.kv_heads * self.head_dim * bytes_per_value


def forward_flops(shape: Shape, tokens: int, head_tokens: int, attended: int) -> float:
    """FLOPs of one forward: ``tokens`` through the layers, the LM head on ``head_tokens`` of them, and
    ``attended`` (query, key) pairs in every layer's attention (a causal row of n tokens has n(n+1)/2)."""
    return (
        2.0 * shape.layers * shape.layer_weights * tokens
        + 2.0 * shape.head_weights * head_tokens
        + 4.0 * shape.layers * shape.width * attended
    )


def decode_roofline(
    shape: Shape, prompt: int, new: list[int], bytes_per_param: int, peak_flops: float, bandwidth: float
) -> float:
    """Seconds the hardware needs at least to generate ``new[i]`` tokens after a ``prompt``-token prompt for
    every row i: the prefill, then one forward per step over the rows still running, each bounded by
    ``max(bytes / bandwidth, FLOPs / peak)``. A step reads every matmul weight once and the live rows' KV
    cache; the prefill reads the weights and computes the prompts (its logits only at the last position)."""
    weight_bytes = (shape.layers * shape.layer_weights + shape.head_weights) * bytes_per_param
    kv = shape.kv_per_token(bytes_per_param)
    rows = len(new)
    prefill = forward_flops(shape, rows * prompt, rows, rows * prompt * (prompt + 1) // 2)
    total = max(weight_bytes / bandwidth, prefill / peak_flops)
    for step in range(1, max(new, default=0)):  # token `step` (0-based) comes from the step-th decode forward
        live = [prompt + step for n in new if n > step]  # context of each live row, the new token included
        flops = forward_flops(shape, len(live), len(live), sum(live))
        total += max((weight_bytes + kv * sum(live)) / bandwidth, flops / peak_flops)
    return total


def update_flops(shape: Shape, row_len: int, trained: int, rows: int) -> tuple[float, float]:
    """(model FLOPs, hardware FLOPs) of a full-parameter update over ``rows`` rows of ``row_len`` tokens with
    the loss on ``trained`` positions of each: backward = 2 × forward; checkpointing recomputes the layers'
    forward once more (not the LM head's)."""
    fwd = forward_flops(shape, rows * row_len, rows * trained, rows * row_len * (row_len + 1) // 2)
    layers_fwd = fwd - 2.0 * shape.head_weights * rows * trained
    return 3 * fwd, 3 * fwd + layers_fwd


def datasheet(device: torch.device) -> tuple[float, float] | None:
    """(peak bf16 FLOP/s, bandwidth B/s) from the table, for a CUDA device it knows."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for keys, tflops, gbs in DATASHEET:
        if all(k in name for k in keys):
            return tflops * 1e12, gbs * 1e9
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_ceilings(device: torch.device, size: int, copy_mib: int) -> tuple[float, float]:
    """(bf16 matmul FLOP/s, copy bandwidth B/s) measured: best of 5 timed runs each."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    src = torch.empty(copy_mib * 2**20 // 4, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    best_mm = best_copy = float("inf")
    for _ in range(6):  # the first of each is a warm-up
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best_mm = min(best_mm, time.perf_counter() - t0) if _ else best_mm
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best_copy = min(best_copy, time.perf_counter() - t0) if _ else best_copy
    return 2.0 * size**3 / best_mm, 2.0 * src.numel() * 4 / best_copy  # a copy reads and writes


def random_model(name: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        **SHAPES[name], max_position_embeddings=32768, bos_token_id=None, eos_token_id=None, pad_token_id=0
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device)
    model.generation_config.eos_token_id = None
    return model


def make_engine(kind: str, model, device: torch.device, max_len: int):
    if kind == "hf":
        from rema.rollout.hf_engine import HFEngine

        return HFEngine(model, SimpleNamespace(eos_token_id=None, pad_token_id=0), device=device)
    from rema.models import load_tokenizer
    from rema.rollout.vllm_engine import VLLMEngine

    # a byte-level tokenizer for the served folder: ids go in and come out, text is never decoded. Its EOS
    # may be sampled, so tok/s and the roofline use the lengths actually generated.
    return VLLMEngine(model, load_tokenizer("tiny-random"), dtype="bfloat16", max_model_len=max_len, verify_sync=False)


def emit(**fields) -> None:
    print(json.dumps({"bench": "roofline", **fields}), flush=True)


def bench_decode(args, name, shape, device, peak, bandwidth, ceil_label) -> None:
    from rema.rollout.engine import SamplingParams

    model = random_model(name, device, torch.bfloat16).eval()
    gen = torch.Generator().manual_seed(0)
    for kind in args.engines.split(","):
        engine = make_engine(kind, model, device, args.prompt + args.new + 8)
        for batch in [int(b) for b in args.batches.split(",")]:
            prompts = torch.randint(1, shape.vocab, (batch, args.prompt), generator=gen).tolist()
            params = [SamplingParams(max_tokens=args.new, temperature=1.0)] * batch
            engine.generate(prompts[:1], [SamplingParams(max_tokens=2, temperature=1.0)])  # warm-up
            times, lengths = [], []
            for _ in range(args.repeats):
                sync(device)
                t0 = time.perf_counter()
                out = engine.generate(prompts, params)
                sync(device)
                times.append(time.perf_counter() - t0)
                lengths = [len(c.token_ids) for c in out]
            s = statistics.median(times)
            tok_s = sum(lengths) / s
            fields = dict(
                part="decode",
                shape=name,
                engine=kind,
                batch=batch,
                prompt=args.prompt,
                new=args.new,
                tokens=sum(lengths),
                seconds=round(s, 3),
                tok_per_s=round(tok_s, 1),
            )
            for label, (pk, bw) in (("datasheet", (peak, bandwidth)), (ceil_label, args.measured)):
                if pk and bw:
                    bound = sum(lengths) / decode_roofline(shape, args.prompt, lengths, 2, pk, bw)
                    fields[f"roofline_tok_per_s_{label}"] = round(bound, 1)
                    fields[f"of_roofline_{label}"] = round(tok_s / bound, 4)
            emit(**fields)
        if hasattr(engine, "close"):
            engine.close()
    del model


def bench_update(args, name, shape, device, peak, ceil_label) -> None:
    from rema.models import native_bf16
    from rema.train.logprobs import token_logprobs

    model = random_model(name, device, torch.float32)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    bf16 = native_bf16(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=device.type == "cuda")
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, shape.vocab, (args.rows, args.row_len), generator=gen).to(device)
    trained = int(args.row_len * args.trained)
    mask = torch.zeros(args.rows, args.row_len, device=device)
    mask[:, args.row_len - trained :] = 1.0
    attn = torch.ones_like(ids)
    per_micro = max(1, args.micro_batch_tokens // args.row_len)
    times = []
    for repeat in range(args.repeats + 1):  # the first is a warm-up
        sync(device)
        t0 = time.perf_counter()
        for i in range(0, args.rows, per_micro):
            sl = slice(i, i + per_micro)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logp, _ = token_logprobs(model, ids[sl], attn[sl], positions=mask[sl])
            (-(logp * mask[sl]).sum() / mask.sum()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if repeat:
            times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    model_flops, hw_flops = update_flops(shape, args.row_len, trained, args.rows)
    fields = dict(
        part="update",
        shape=name,
        params=sum(p.numel() for p in model.parameters()),
        rows=args.rows,
        row_len=args.row_len,
        trained=trained,
        micro_batch_tokens=min(per_micro, args.rows) * args.row_len,
        autocast_bf16=bf16,
        seconds=round(s, 3),
        tok_per_s=round(args.rows * args.row_len / s, 1),
        model_tflops=round(model_flops / s / 1e12, 3),
    )
    for label, pk in (("datasheet", peak), (ceil_label, args.measured[0])):
        if pk:
            fields[f"mfu_{label}"] = round(model_flops / s / pk, 4)
            fields[f"hfu_{label}"] = round(hw_flops / s / pk, 4)
    emit(**fields)
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", default="0.5b,1.5b", help=f"comma-separated, of {sorted(SHAPES)}")
    ap.add_argument("--parts", default="decode,update")
    ap.add_argument("--engines", default="hf", help="hf and/or vllm (needs vLLM installed)")
    ap.add_argument("--batches", default="1,32,128", help="decode batch sizes")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens per row")
    ap.add_argument("--new", type=int, default=256, help="new tokens per row")
    ap.add_argument("--rows", type=int, default=16, help="update rows")
    ap.add_argument("--row-len", type=int, default=1024, help="tokens per update row")
    ap.add_argument("--trained", type=float, default=0.75, help="fraction of each row under the loss")
    ap.add_argument("--micro-batch-tokens", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOPS (else the table)")
    ap.add_argument("--bandwidth-gbs", type=float, default=None, help="memory bandwidth GB/s (else the table)")
    ap.add_argument(
        "--ceiling-size",
        type=int,
        default=None,
        help="matmul size for the measured peak (default 8192 on CUDA, 2048 on CPU)",
    )
    ap.add_argument(
        "--copy-mib",
        type=int,
        default=None,
        help="buffer for the measured bandwidth (default 2048 on CUDA, 512 on CPU)",
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    table = datasheet(device) or (None, None)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else table[0]
    bandwidth = args.bandwidth_gbs * 1e9 if args.bandwidth_gbs else table[1]
    args.measured = measured_ceilings(
        device, args.ceiling_size or (8192 if cuda else 2048), args.copy_mib or (2048 if cuda else 512)
    )
    emit(
        part="ceilings",
        device=torch.cuda.get_device_name(device) if cuda else "cpu",
        threads=torch.get_num_threads(),
        datasheet_tflops=peak and peak / 1e12,
        datasheet_gbs=bandwidth and bandwidth / 1e9,
        measured_tflops=round(args.measured[0] / 1e12, 3),
        measured_gbs=round(args.measured[1] / 1e9, 1),
    )
    for name in args.shapes.split(","):
        shape = Shape.of(SimpleNamespace(**SHAPES[name]))
        if "decode" in args.parts:
            bench_decode(args, name, shape, device, peak, bandwidth, "measured")
        if "update" in args.parts:
            bench_update(args, name, shape, device, peak, "measured")


if __name__ == "__main__":
    main()
