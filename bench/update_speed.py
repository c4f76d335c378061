"""Update speed and memory: the trainer's own update (``rema.train.update.update_policy``) on the embedded
model, per setting.

The work of one demo step's update (configs/demo.yaml): 48 rows (24 episodes × 2 agents) of ~300-400 tokens,
a third of each row trained, LoRA r=16 on all linear layers, AdamW. Rows are random token ids with random
rewards (speed does not depend on the values), GRPO advantages, the turn-level PPO loss with trajectory
aggregation, micro-batches of at most ``micro_batch_tokens`` padded tokens, one optimizer step: exactly what
the trainer runs. Settings vary
gradient checkpointing, the micro-batch size and the compute dtype: ``:bf16`` = ``torch.autocast`` to
bfloat16 with LoRA's frozen weights stored in bf16, as the trainer does under ``train.autocast=bf16``;
``:bf16cast`` = the same autocast over fp32 weights (cast at every matmul, as before 2026-12-01); fp32
otherwise. ``:autograd`` sends the LM head through autograd (the path an entropy bonus needs) instead of rema's
hand-written head function. ``:share`` packs each group's rows around their common prefix (``train.share_prefix``):
with ``--group-size G --prefix P`` the rows come in groups of G that share their first P tokens, as a GRPO group's
rows share the prompt. With ``:share`` the packs' attention runs per segment (``rema.train.packed_attention``, as
the trainer does), with ``:share:dense`` under one dense mask per pack. ``:peft`` runs the LoRA layers through
peft's own forward instead of rema's fused one (``model.lora_fused=false``). ``:bf16attn`` keeps every per-segment
attention in bf16 on CPU (by default small segments compute in fp32, which sdpa's CPU flash kernel runs faster:
``rema.train.packed_attention.CPU_FP32_MAX_SCORES``). ``ckpt:...:layers0.5``
checkpoints half of the layers (``model.checkpoint_layers``; ``ckpt`` alone: all, ``nockpt``: none).

With ``--profile N`` each setting's last repeat runs under ``torch.profiler`` and its N costliest ops (self CPU time)
are printed (the profiler adds overhead: read the shares, not the seconds).

Prints one JSON line per setting: update tokens/s (all row tokens, as the trainer's
``perf/update_tokens_per_s``), trained tokens/s, seconds, and the peak RSS of the update (``VmHWM`` reset
before it). Usage:

    python bench/update_speed.py [--rows 48] [--repeats 2] [--settings ckpt:2048,ckpt:2048:bf16,nockpt:2048]
    python bench/update_speed.py --rows 8 --min-len 130 --max-len 160 \
        --settings ckpt:4096:bf16cast:autograd,ckpt:4096:bf16cast,ckpt:4096:bf16   # the TRL side-by-side's rows
    python bench/update_speed.py --rows 8 --group-size 4 --prefix 43 --min-len 100 --max-len 171 \
        --settings ckpt:8192:bf16,ckpt:8192:bf16:share --repeats 3                  # ... with their prompts
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import time

import torch


def main() -> None:
    import rema.train.packed_attention as packed_attention_module
    from rema.config import AlgoConfig, TrainConfig
    from rema.models import LoraSpec, enable_checkpointing, load_model, store_frozen_weights
    from rema.models.lora import fuse_lora_layers, unfuse_lora_layers
    from rema.train import Forward, update_policy
    from rema.train.batch import Rows
    from rema.train.memory import PhasePeak, release_freed_memory
    from rema.train.packed_attention import use_packed_attention

    default_fp32_scores = packed_attention_module.CPU_FP32_MAX_SCORES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--settings", default="ckpt:4096,ckpt:2048,ckpt:1024,nockpt:2048,ckpt:2048:bf16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-len", type=int, default=280, help="shortest row (tokens)")
    ap.add_argument("--max-len", type=int, default=420, help="longest row (tokens)")
    ap.add_argument("--group-size", type=int, default=1, help="rows per group (sharing their first --prefix tokens)")
    ap.add_argument("--prefix", type=int, default=0, help="tokens the rows of a group share (their prompt)")
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile each setting's last repeat with torch.profiler; print its N costliest ops",
    )
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(args.seed)
    lengths = torch.randint(args.min_len, args.max_len + 1, (args.rows,), generator=gen).tolist()
    model, tok = load_model("smollm2-135m", lora=LoraSpec(r=16, alpha=32))
    low = False  # whether the loaded model keeps its frozen weights in bf16 (one model in memory at a time)
    vocab = model.config.vocab_size
    ids = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]
    for i in range(len(ids)):  # a group's rows start with its prompt
        lead = i - i % args.group_size
        ids[i][: args.prefix] = ids[lead][: args.prefix]
    # the agent's own messages: after the prompt, or the last two thirds of the row
    masks = [[0.0] * max(args.prefix, n // 3) + [1.0] * (n - max(args.prefix, n // 3)) for n in lengths]
    rewards = torch.rand(len(ids), generator=gen).tolist()
    rows = Rows(
        ids,
        masks,
        [[0.0] * n for n in lengths],
        [[0] * n for n in lengths],
        ["a"] * len(ids),
        [(str(i // max(args.group_size, 2)), "a") for i in range(len(ids))],
        rewards,
        list(range(len(ids))),
    )
    algo = AlgoConfig()  # GRPO, turn-level ratio, trajectory aggregation: the defaults
    peak = PhasePeak()
    for setting in args.settings.split(","):
        kind, size, *rest = setting.split(":")
        if ("bf16" in rest) != low:
            del model
            gc.collect()
            release_freed_memory()
            model, _ = load_model("smollm2-135m", lora=LoraSpec(r=16, alpha=32))
            low = "bf16" in rest
            if low:
                store_frozen_weights(model, torch.bfloat16)
        (unfuse_lora_layers if "peft" in rest else fuse_lora_layers)(model)
        segmented = "share" in rest and "dense" not in rest
        packed_attention_module.CPU_FP32_MAX_SCORES = 0 if "bf16attn" in rest else default_fp32_scores
        if segmented:
            use_packed_attention(model)
        else:
            model.get_base_model().set_attn_implementation("sdpa")
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-6)
        model.config.use_cache = False
        train = TrainConfig(micro_batch_tokens=int(size), share_prefix="share" in rest)
        fwd = Forward(
            torch.device("cpu"),
            bf16="bf16" in rest or "bf16cast" in rest,
            entropy_grad="autograd" in rest,
            micro_batch_tokens=int(size),
            share_prefix="share" in rest,
        )
        if kind == "ckpt":  # :layersF checkpoints that share of the layers (model.checkpoint_layers)
            share = next((float(x[len("layers") :]) for x in rest if x.startswith("layers")), 1.0)
            enable_checkpointing(model, share)
        else:
            model.gradient_checkpointing_disable()
        times = []
        for repeat in range(args.repeats):
            peak.reset()
            prof = torch.profiler.profile() if args.profile and repeat == args.repeats - 1 else contextlib.nullcontext()
            prof.__enter__()
            t0 = time.perf_counter()
            total = sum(sum(m) for m in masks)
            update_policy(model, opt, rows, algo=algo, train=train, fwd=fwd, pad_id=tok.pad_token_id, step=repeat)
            times.append(time.perf_counter() - t0)
            prof.__exit__(None, None, None)
            if args.profile and repeat == args.repeats - 1:
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile), flush=True)
        s = statistics.median(times)
        print(
            json.dumps(
                {
                    "bench": "update_speed",
                    "setting": setting,
                    "rows": len(lengths),
                    "tokens": sum(lengths),
                    "trained_tokens": int(total),
                    "seconds": round(s, 2),
                    "update_tokens_per_s": round(sum(lengths) / s, 1),
                    "trained_tokens_per_s": round(total / s, 1),
                    "peak_rss_gib": round(peak.read_gb(), 2),
                    "threads": torch.get_num_threads(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
