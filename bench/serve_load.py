"""Load on a running `rema serve`: the same questions one at a time, then all at once, with the `openai` client.

    rema serve RUN --port 8011 &          # wait for "Uvicorn running"
    python bench/serve_load.py --url http://127.0.0.1:8011/v1 --n 20 --sequential 5

Questions are the demo's kind ("What is 9 + 6?", levels 1-3 of the synthetic arithmetic, seeded), so a demo
run's answers can be checked: `correct` compares the `\\boxed{}` answer (the `rema.answer` field) with the sum.
Prints one JSON line per phase: wall time, requests/s, generated tokens/s (all agents' tokens, from `usage`),
latency median / p90 / max, the batch sizes the server reported, engine-call batches seen; then a `ratio`
line (concurrent over sequential throughput). The server must be idle otherwise (the figures are its own).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time


def questions(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (question, answer) pairs of the demo's synthetic levels 1-3, asked plainly."""
    from rema.data.synthetic import make_problem

    rng = random.Random(seed)
    return [(p.question, p.answer) for p in (make_problem(i % 3 + 1, rng, word=False) for i in range(n))]


async def ask(client, model: str, q: str, max_tokens: int | None) -> tuple[float, object]:
    t0 = time.perf_counter()
    kwargs = {"max_tokens": max_tokens} if max_tokens else {}
    resp = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": q}], **kwargs)
    return time.perf_counter() - t0, resp


def summary(phase: str, wall: float, results, answers: list[str]) -> dict:
    lat = sorted(t for t, _ in results)
    rema = [r.model_extra["rema"] for _, r in results]
    tokens = sum(r.usage.completion_tokens for _, r in results)
    return {
        "phase": phase,
        "requests": len(results),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(results) / wall, 3),
        "generated_tok_per_s": round(tokens / wall, 1),
        "generated_tokens": tokens,
        "latency_s": {
            "median": round(statistics.median(lat), 2),
            "p90": round(lat[int(0.9 * (len(lat) - 1))], 2),
            "max": round(lat[-1], 2),
        },
        "batch_sizes": sorted({x["batch"]["size"] for x in rema}),
        "end_codes": {c: sum(x["end_code"] == c for x in rema) for c in sorted({x["end_code"] for x in rema})},
        "correct": sum(x["answer"] == a for x, a in zip(rema, answers)),
    }


async def main() -> None:
    import openai

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--n", type=int, default=20, help="concurrent requests")
    p.add_argument("--sequential", type=int, default=5, help="requests sent one at a time first (0: skip)")
    p.add_argument("--max-tokens", type=int, default=None, help="per message (default: the server's limit)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    client = openai.AsyncOpenAI(base_url=args.url, api_key="unused", max_retries=0, timeout=3600)
    model = (await client.models.list()).data[0].id
    qa = questions(max(args.n, args.sequential), args.seed)
    lines = []
    if args.sequential:
        t0 = time.perf_counter()
        results = [await ask(client, model, q, args.max_tokens) for q, _ in qa[: args.sequential]]
        lines.append(summary("sequential", time.perf_counter() - t0, results, [a for _, a in qa[: args.sequential]]))
        print(json.dumps(lines[-1]), flush=True)
    t0 = time.perf_counter()
    results = await asyncio.gather(*[ask(client, model, q, args.max_tokens) for q, _ in qa[: args.n]])
    lines.append(summary("concurrent", time.perf_counter() - t0, results, [a for _, a in qa[: args.n]]))
    print(json.dumps(lines[-1]), flush=True)
    if len(lines) == 2:
        seq, con = lines
        print(
            json.dumps(
                {
                    "phase": "ratio",
                    "requests_per_s": round(con["requests_per_s"] / seq["requests_per_s"], 2),
                    "generated_tok_per_s": round(con["generated_tok_per_s"] / seq["generated_tok_per_s"], 2),
                }
            )
        )


if __name__ == "__main__":
    asyncio.run(main())
