"""Runs a fixed set of short training runs on the tiny random model and prints what they produce.

Used by ``tests/test_golden.py``: the restructured trainer must give the same metrics, samples and weights as
the trainer before the restructure (``tests/data/golden_runs.json`` was written by the earlier code with
``python tests/helpers/golden_run.py --write``). Timing and memory metrics (:func:`timing`) are left out.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
GOLDEN = HERE.parent / "data" / "golden_runs.json"

BASE = [
    "model.name=tiny-random",
    "rollout.max_tokens_per_turn=8",
    "rollout.max_turns=2",
    "rollout.samples_per_question=4",
    "train.questions_per_step=4",
    "train.steps=3",
    "train.lr=1e-2",
    "data.train=synthetic:levels=1:n=40:seed=0:word=0",
    "data.eval=synthetic:levels=1:n=4:seed=1:word=0",
    "train.eval_every=2",
    "reward.mask_unfinished=false",
    "log.progress=false",
    "log.tensorboard=false",
    "train.save_every=100",
    "train.samples_to_log=2",
    "train.autocast=off",
]  # the default when the runs were captured

RUNS = {
    "grpo-turn-multi": ["rollout.mode=multi_turn"],
    "grpo-token-single-format": [
        "rollout.mode=single_turn",
        "algo.ratio_level=token",
        "algo.agg=token",
        "reward.format_terms=true",
    ],
    "reinforce_pp-kl-in-reward": [
        "rollout.mode=multi_turn",
        "algo.advantage=reinforce_pp",
        "algo.kl_coef=0.05",
        "algo.kl_in_reward=true",
    ],
    "rloo-epochs-minibatches-kl-entropy": [
        "rollout.mode=multi_turn",
        "algo.advantage=rloo",
        "train.ppo_epochs=2",
        "train.mini_batches=2",
        "algo.kl_coef=0.1",
        "algo.entropy_coef=0.01",
        "train.micro_batch_tokens=64",
    ],
    "separate-weights-sampler-logp": [
        "rollout.mode=single_turn",
        "train.shared_weights=false",
        "train.switch_freq=1",
        "train.mini_batches=2",
        "train.recompute_old_logp=false",
    ],
    "lora-bf16-kl": [
        "rollout.mode=multi_turn",
        "model.lora_r=4",
        "train.autocast=bf16",
        "algo.kl_coef=0.05",
        "model.gradient_checkpointing=true",
    ],
    "vrp-baseline-plan-leak": ["rollout.method=vrp", "rollout.mode=single_turn", "reward.plan_leak_penalty=0.5"],
    "cold-start-then-rl": ["rollout.mode=multi_turn", "sft.cold_start=true", "sft.data=DIALOGUES", "sft.epochs=1"],
}

DIALOGUES = [
    {
        "question": "What is 2 + 3?",
        "answer": "5",
        "turns": [{"agent": "mta", "text": "Add the two numbers. [FINISH]"}, {"agent": "ra", "text": "\\boxed{5}"}],
    },
    {
        "question": "What is 4 + 4?",
        "answer": "8",
        "turns": [
            {"agent": "mta", "text": "Double four."},
            {"agent": "ra", "text": "4 + 4 = 8"},
            {"agent": "mta", "text": "Good. [FINISH]"},
            {"agent": "ra", "text": "\\boxed{8}"},
        ],
    },
]


def timing(key: str) -> bool:
    """Metrics that measure the machine, not the run: seconds, rates, memory."""
    return key.startswith(("time/", "perf/")) or "/time_" in key or key.endswith("tokens_per_s")


def upper_share(ep) -> float:
    ids = ep.turns_of("ra")[-1].token_ids
    return sum(64 <= t <= 89 for t in ids) / max(len(ids), 1)


def _digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run(name: str, tmp: Path) -> dict:
    from rema.config import load_config
    from rema.prompts import PromptSet
    from rema.train import Trainer

    overrides = [o.replace("DIALOGUES", str(tmp / "dialogues.jsonl")) for o in RUNS[name]]
    (tmp / "dialogues.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DIALOGUES))
    cfg = load_config(None, [*BASE, f"log.run_dir={tmp / name}", *overrides])
    prompts = None if "vrp" in name else PromptSet("test", "plan", "solve")
    tr = Trainer(cfg, correctness_fn=upper_share, prompts=prompts)
    try:
        tr.fit()
    finally:
        tr.close()
    metrics = [
        {k: v for k, v in json.loads(line).items() if not timing(k)}
        for line in (tr.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    samples = [json.loads(line) for line in (tr.run_dir / "samples.jsonl").read_text().splitlines()]
    weights = {p.name: _digest({k: v for k, v in p.model.state_dict().items()}) for p in tr.policies}
    return {"metrics": metrics, "samples": samples, "weights": weights}


def main() -> None:
    import os

    os.environ["REMA_ENGINE"] = "hf"
    torch.set_num_threads(1)  # the same reduction order on every machine size
    names = [a for a in sys.argv[1:] if not a.startswith("--")] or list(RUNS)
    with tempfile.TemporaryDirectory() as d:
        out = {n: run(n, Path(d)) for n in names}
    out["_captured_on"] = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    else:
        print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
