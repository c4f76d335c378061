"""rema's trainer vs TRL's GRPOTrainer on identical work, run alternately in one session; prints ratios.

Identical work per step: the embedded SmolLM2-135M-Instruct (fp32 weights, LoRA r=16 / alpha=32 on all linear
layers, gradient checkpointing on both sides unless ``--gradient-checkpointing off``; computing in fp32, or
with ``--dtype bf16`` in bf16 on both sides: rema's ``train.autocast=bf16`` and vLLM in bfloat16, TRL's
``bf16=True``), the VRP chat prompt (rema.prompts) on synthetic arithmetic questions,
G = 4 completions for each of 2 questions (8 per step), up to 128 new tokens, T = 1.0, top-p 1, reward =
rema's math grader (math-verify) on the completion, GRPO advantages, one optimizer step per generation, no
KL term, lr 1e-4. rema generates with its default engine (vLLM where installed); TRL with its default
(transformers ``generate``; TRL's vLLM modes need a CUDA server or colocated GPU).

Each side runs in its own process (``--worker rema|trl``), ``--rounds`` times, alternating (rema, trl, rema,
trl, ...), each for ``--steps`` steps after one untimed warm-up step (model load and engine start are not
timed). TRL needs its own environment (it is not a rema dependency), e.g.:

    python3 -m venv /tmp/trl && /tmp/trl/bin/pip install torch==2.13.0 trl "transformers==5.19.0" peft psutil \\
        math-verify==0.9.0 rich pyyaml && /tmp/trl/bin/pip install --no-deps -e .
    .venv/bin/python bench/trl_side_by_side.py --trl-python /tmp/trl/bin/python

Prints one JSON line per worker run (step seconds, completion tokens, completion tok/s, peak RSS of the
process tree) and a final line with the medians and the ratios rema / TRL.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

G, QUESTIONS, MAX_TOKENS, TEMPERATURE, LR, LORA_R, LORA_ALPHA = 4, 2, 128, 1.0, 1e-4, 16, 32
DATA = "synthetic:levels=1,2,3:n=400:seed=0:word=0"


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


class TreeRSS(threading.Thread):
    """Samples the resident memory of this process and its children (PSS) every 0.5 s; keeps the peak."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0.0
        self.stop = threading.Event()
        # imported here, not in the thread: an import there races the main thread's (trl, transformers) and a
        # partly initialised module would end the thread silently, leaving a peak of 0
        import psutil

        from rema.train.memory import children_rss_gb

        self._me, self._children = psutil.Process(), children_rss_gb

    def run(self):
        while not self.stop.wait(0.5):
            self.peak = max(self.peak, self._me.memory_info().rss / 2**30 + self._children())


def questions(n: int):
    from rema.data import resolve_dataset

    return resolve_dataset(DATA)[:n]


# -------------------------------------------------------------------------------------------- rema side


def run_rema(steps: int, out: Path, dtype: str, ckpt: bool, extra: list[str]) -> dict:
    from rema.config import load_config
    from rema.train import Trainer

    cfg = load_config(
        None,
        [
            "model.name=smollm2-135m",
            f"model.lora_r={LORA_R}",
            f"model.lora_alpha={LORA_ALPHA}",
            f"model.gradient_checkpointing={str(ckpt).lower()}",
            f"train.autocast={'bf16' if dtype == 'bf16' else 'off'}",
            f"rollout.vllm_dtype={'bfloat16' if dtype == 'bf16' else 'float32'}",
            "rollout.method=vrp",
            "rollout.mode=single_turn",
            f"rollout.samples_per_question={G}",
            f"rollout.max_tokens_per_turn={MAX_TOKENS}",
            "rollout.max_context_tokens=512",
            f"rollout.temperature={TEMPERATURE}",
            f"train.questions_per_step={QUESTIONS}",
            f"train.steps={steps + 1}",
            f"train.lr={LR}",
            "train.warmup_steps=0",
            "algo.advantage=grpo",
            "algo.ratio_level=token",
            "algo.agg=token",
            "algo.kl_coef=0",
            "reward.mask_unfinished=false",
            f"data.train={DATA}",
            "data.eval=null",
            "train.eval_every=0",
            f"train.save_every={10 * (steps + 1)}",
            f"log.run_dir={out}",
            "log.progress=false",
            "log.tensorboard=false",
            *extra,
        ],
    )
    trainer = Trainer(cfg)
    try:
        trainer.fit()
    finally:
        trainer.close()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "time/step" in r][1:]  # drop the warm-up step
    return {
        "step_s": [r["time/step"] for r in rows],
        "tokens": [r["perf/generated_tokens"] for r in rows],
        "rollout_s": [r["time/rollout"] for r in rows],
        "update_s": [r["time/update"] for r in rows],
        "engine": json.loads((out / "meta.json").read_text())["engines"]["shared"],
    }


# --------------------------------------------------------------------------------------------- TRL side


def run_trl(steps: int, out: Path, dtype: str, ckpt: bool, extra: list[str]) -> dict:
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rema.models import LoraSpec, load_model
    from rema.prompts import get_prompt_set
    from rema.rewards import grade_math_batch

    model, tok = load_model("smollm2-135m", dtype="float32")
    system = get_prompt_set("vrp").ra
    probs = questions(QUESTIONS * (steps + 1))
    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "system", "content": system}, {"role": "user", "content": p.question}],
                "answer": p.answer,
            }
            for p in probs
        ]
    )

    def correct(completions, answer, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float(g.correct) for g in grade_math_batch(texts, answer)]

    args = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=G * QUESTIONS,
        num_generations=G,
        gradient_accumulation_steps=1,
        max_completion_length=MAX_TOKENS,
        temperature=TEMPERATURE,
        top_p=1.0,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=0.0,
        num_iterations=1,
        max_steps=steps + 1,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        gradient_checkpointing=ckpt,
        bf16=dtype == "bf16",
        fp16=False,
        use_cpu=True,
        shuffle_dataset=False,
        seed=0,
        disable_tqdm=True,
        mask_truncated_completions=False,
    )
    timings: list[dict] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            timings.append({"t0": time.perf_counter()})

        def on_step_end(self, *a, **k):
            timings[-1]["s"] = time.perf_counter() - timings[-1]["t0"]

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "completions/mean_length" in logs and timings:
                timings[-1]["tokens"] = logs["completions/mean_length"] * G * QUESTIONS

    lora = LoraSpec(r=LORA_R)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[correct],
        args=args,
        train_dataset=data,
        processing_class=tok,
        peft_config=LoraConfig(
            r=LORA_R,
            lora_alpha=LORA_ALPHA,
            lora_dropout=0.0,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        ),
        callbacks=[Clock()],
    )
    trainer.train()
    timed = timings[1:]
    return {
        "step_s": [t["s"] for t in timed],
        "tokens": [t.get("tokens", float("nan")) for t in timed],
        "engine": f"transformers generate (trl {trl.__version__})",
    }


# ----------------------------------------------------------------------------------------- orchestration


def worker(side: str, steps: int, out: Path, dtype: str, ckpt: bool, extra: list[str]) -> None:
    rss = TreeRSS()
    rss.start()
    result = (run_rema if side == "rema" else run_trl)(steps, out, dtype, ckpt, extra)
    rss.stop.set()
    steps_s, tokens = result["step_s"], result["tokens"]
    emit(
        side=side,
        **result,
        peak_rss_gib=round(rss.peak, 2),
        median_step_s=statistics.median(steps_s),
        completion_tok_s=sum(tokens) / sum(steps_s),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=["rema", "trl"])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run (after one warm-up step)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs per side")
    ap.add_argument("--trl-python", default=sys.executable, help="python of an environment with trl installed")
    ap.add_argument(
        "--dtype",
        choices=["fp32", "bf16"],
        default="fp32",
        help="compute dtype of both sides (bf16 needs a CPU with AVX-512 BF16 to be fast)",
    )
    ap.add_argument(
        "--gradient-checkpointing",
        choices=["on", "off"],
        default="on",
        help="activation checkpointing on both sides (rows here are short: off fits in memory)",
    )
    ap.add_argument(
        "--rema",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra config override for rema's side (repeatable), e.g. rollout.vllm_in_process=false",
    )
    ap.add_argument("--out", default="bench/out/trl_side_by_side")
    args = ap.parse_args()
    ckpt = args.gradient_checkpointing == "on"
    if args.worker:
        worker(args.worker, args.steps, Path(args.out), args.dtype, ckpt, args.rema)
        return
    results: dict[str, list[dict]] = {"rema": [], "trl": []}
    for r in range(args.rounds):
        for side, python in (("rema", sys.executable), ("trl", args.trl_python)):
            out = Path(args.out) / f"{side}-{r}"
            cmd = [
                python,
                __file__,
                "--worker",
                side,
                "--steps",
                str(args.steps),
                "--out",
                str(out),
                "--dtype",
                args.dtype,
                "--gradient-checkpointing",
                args.gradient_checkpointing,
                *(f"--rema={kv}" for kv in args.rema),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode or not lines:
                sys.exit(f"{side} run {r} failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
            print(lines[-1], flush=True)
            results[side].append(json.loads(lines[-1]))
    med = {
        side: {
            "completion_tok_s": statistics.median(x["completion_tok_s"] for x in runs),
            "step_s": statistics.median(x["median_step_s"] for x in runs),
            "peak_rss_gib": max(x["peak_rss_gib"] for x in runs),
        }
        for side, runs in results.items()
    }
    emit(
        summary=med,
        ratio_completion_tok_s=med["rema"]["completion_tok_s"] / med["trl"]["completion_tok_s"],
        ratio_step_time=med["trl"]["step_s"] / med["rema"]["step_s"],
        work=dict(
            G=G,
            questions=QUESTIONS,
            max_tokens=MAX_TOKENS,
            temperature=TEMPERATURE,
            lora_r=LORA_R,
            dtype=args.dtype,
            gradient_checkpointing=ckpt,
            rema_overrides=args.rema,
        ),
    )


if __name__ == "__main__":
    main()
