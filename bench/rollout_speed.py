"""Rollout speed: the transformers engine vs the vLLM engine on identical work, side by side in one process.

Work: 8 GSM8K questions (``../shared/data/gsm8k_test.jsonl``) in the VRP chat prompt × 4 samples × up to 128
new tokens at T = 1.0 (EOS may end a row early; tok/s counts the tokens actually generated). The engines run
alternately (hf, vllm, hf, vllm, ...) so machine noise hits both alike; each figure is the median of the
repeats. Then the vLLM weight sync is timed on real updates (weights nudged between syncs) with its
log-prob check, and the peak resident memory of the whole process tree (this process + vLLM's engine-core
and worker processes) is sampled throughout.

Prints one JSON line per figure. Usage:

    python bench/rollout_speed.py [--repeats 3] [--vllm-dtypes float32,bfloat16] [--syncs 3]
                                  [--hf-threads 1] [--kv-cache-gib 1] [--threads-bind 0-1] [--compile] [--no-hf]
                                  [--separate-processes]

vLLM spawns processes: this script, like anything creating a VLLMEngine, runs under ``__main__``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_test.jsonl"


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


class TreeRSS:
    """Samples the resident memory of this process and its children in a thread; keeps the peaks (GiB)."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak, self.peak_self = interval, 0.0, 0.0
        self.overall, self.overall_self = 0.0, 0.0  # never reset
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> tuple[float, float]:
        """(tree, own) in GiB: RSS of this process, plus PSS of the children (so pages they share with each
        other, like torch's libraries, are counted once)."""
        from rema.train.memory import children_rss_gb

        own = psutil.Process().memory_info().rss / 2**30
        return own + children_rss_gb(), own

    def _run(self) -> None:
        while not self._stop.is_set():
            total, own = self.now()
            self.peak, self.peak_self = max(self.peak, total), max(self.peak_self, own)
            self.overall, self.overall_self = max(self.overall, total), max(self.overall_self, own)
            time.sleep(self.interval)

    def start(self) -> TreeRSS:
        self._thread.start()
        return self

    def reset(self) -> None:
        self.peak, self.peak_self = self.now()


def gsm8k_prompts(tokenizer, n: int) -> list[list[int]]:
    from rema.prompts import get_prompt_set
    from rema.rollout import ChatCodec

    codec, system = ChatCodec(tokenizer), get_prompt_set("vrp").ra
    rows = [json.loads(line) for line in DATA.read_text().splitlines()[:n]]
    return [codec.start(system, row["problem"]) for row in rows]


def timed_generate(engine, prompts, params) -> tuple[float, int]:
    t0 = time.perf_counter()
    outs = engine.generate(prompts, params)
    return time.perf_counter() - t0, sum(len(o.token_ids) for o in outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vllm-dtypes", default="float32", help="comma list: one vLLM engine per dtype")
    ap.add_argument("--threads-bind", default=None, help="VLLM_CPU_OMP_THREADS_BIND, e.g. 0-1 (default: vLLM's)")
    ap.add_argument("--compile", action="store_true", help="let vLLM compile (enforce_eager=False; slow start)")
    ap.add_argument("--syncs", type=int, default=3)
    ap.add_argument("--kv-cache-gib", type=float, default=None, help="vLLM KV-cache budget (default: the engine's)")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument(
        "--separate-processes",
        action="store_true",
        help="vLLM's engine in two processes of its own (rollout.vllm_in_process=false), not in this one",
    )
    ap.add_argument(
        "--hf-threads",
        type=int,
        default=1,
        help="torch threads for the transformers engine (on 2 shared cores 1 thread measured 2.7x faster "
        "than 2: OpenMP spins under oversubscription; vLLM's CPU worker also runs 1 thread)",
    )
    args = ap.parse_args()

    from rema.models import load_model
    from rema.rollout import HFEngine, SamplingParams
    from rema.rollout.vllm_engine import VLLMEngine

    torch.set_num_threads(args.hf_threads)
    rss = TreeRSS().start()
    model, tok = load_model(args.model, dtype="float32")
    prompts = [p for p in gsm8k_prompts(tok, args.questions) for _ in range(args.samples)]
    params = [SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature)] * len(prompts)
    work = dict(
        prompts=len(prompts),
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        prompt_tokens=sum(map(len, prompts)),
        hf_threads=args.hf_threads,
        cpus=os.cpu_count(),
    )
    emit(figure="setup", model=args.model, **work, load_avg_1m=os.getloadavg()[0])
    base_total, base_self = rss.now()
    emit(figure="rss_gib", stage="trainer model loaded", tree=round(base_total, 3), main=round(base_self, 3))

    engines: dict[str, object] = {} if args.no_hf else {"hf-float32": HFEngine(model, tok, seed=0)}
    for dtype in args.vllm_dtypes.split(","):
        rss.reset()
        t0 = time.perf_counter()
        eng = VLLMEngine(
            model,
            tok,
            seed=0,
            dtype=dtype,
            max_model_len=2048,
            enforce_eager=not args.compile,
            cpu_threads_bind=args.threads_bind,
            kv_cache_gib=args.kv_cache_gib,
            in_process=not args.separate_processes,
        )
        emit(
            figure="vllm_start_s",
            engine=f"vllm-{dtype}",
            total=round(time.perf_counter() - t0, 2),
            write=round(eng.write_s, 2),
            llm=round(eng.load_s, 2),
            start_check_max_abs_diff=eng.start_check.get("sync_check_max_abs_diff"),
        )
        total, own = rss.now()
        emit(
            figure="rss_gib",
            stage=f"vllm-{dtype} started",
            tree=round(total, 3),
            main=round(own, 3),
            added_by_engine=round(total - base_total, 3),
        )
        base_total = total
        engines[f"vllm-{dtype}"] = eng

    for eng in engines.values():  # warm-up: first calls pay one-off costs (kernel setup, allocator growth)
        eng.generate(prompts[:2], [SamplingParams(max_tokens=8, temperature=1.0)] * 2)

    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in engines}
    peaks: dict[str, float] = {name: 0.0 for name in engines}
    for r in range(args.repeats):
        for name, eng in engines.items():
            rss.reset()
            runs[name].append(timed_generate(eng, prompts, params))
            peaks[name] = max(peaks[name], rss.peak)
            s, n = runs[name][-1]
            print(f"# repeat {r} {name}: {n} tokens in {s:.1f}s = {n / s:.1f} tok/s", file=sys.stderr, flush=True)
    tok_s = {}
    for name, rs in runs.items():
        tok_s[name] = statistics.median(n / s for s, n in rs)
        emit(
            figure="rollout_tok_s",
            engine=name,
            median=round(tok_s[name], 1),
            runs=[round(n / s, 1) for s, n in rs],
            tokens=[n for _, n in rs],
            seconds=[round(s, 2) for s, _ in rs],
            peak_tree_rss_gib=round(peaks[name], 3),
        )
    if "hf-float32" in tok_s:
        for name in tok_s:
            if name.startswith("vllm"):
                emit(
                    figure="rollout_speedup",
                    engine=name,
                    vs="hf-float32",
                    ratio=round(tok_s[name] / tok_s["hf-float32"], 2),
                )

    for name, eng in engines.items():
        if not name.startswith("vllm") or args.syncs <= 0:
            continue
        metrics = []
        for _ in range(args.syncs):
            with torch.no_grad():  # a small real update, as an optimizer step would make
                for p in model.parameters():
                    p.add_(torch.randn_like(p), alpha=1e-4)
            rss.reset()
            metrics.append(eng.sync_weights(model))
        med = {k: round(statistics.median(m[k] for m in metrics), 6) for k in metrics[0]}
        emit(
            figure="sync_s",
            engine=name,
            median=med["sync_s"],
            write=med["sync_write_s"],
            reload=med["sync_reload_s"],
            check=med["sync_check_s"],
            check_max_abs_diff=max(m["sync_check_max_abs_diff"] for m in metrics),
            check_mean_abs_diff=max(m["sync_check_mean_abs_diff"] for m in metrics),
            tolerance=[eng.sync_tolerance, eng.sync_mean_tolerance],
            peak_tree_rss_gib=round(rss.peak, 3),
        )
    emit(
        figure="peak_rss_gib",
        tree=round(rss.overall, 3),
        main=round(rss.overall_self, 3),
        note="tree = RSS of this process + PSS of vLLM's engine-core and worker processes; sampled every 0.5 s",
    )
    for eng in engines.values():
        if hasattr(eng, "close"):
            eng.close()


if __name__ == "__main__":
    main()
