"""Trains a tiny model (tp_model.py) for 2 steps under torchrun with vLLM tensor-parallel over the job's
processes, for test_distributed.py: ``tp_train.py RUN_DIR MODEL_DIR [key=value ...]``. The reward depends on
what the RA wrote (split_invariant.upper_share), so the updates move the weights and every sync must follow."""

import sys

from split_invariant import upper_share  # this folder is sys.path[0] when run as a script

from rema.config import load_config
from rema.train import Trainer


def main(run_dir: str, model_dir: str, *extra: str) -> None:
    overrides = [
        f"model.name={model_dir}",
        "rollout.engine=vllm",
        "rollout.vllm_tensor_parallel_size=2",
        "rollout.vllm_enforce_eager=true",
        "rollout.vllm_kv_cache_gib=0.1",
        "rollout.mode=multi_turn",
        "rollout.max_turns=2",
        "rollout.max_tokens_per_turn=8",
        "rollout.max_context_tokens=1024",
        "rollout.samples_per_question=4",
        "rollout.temperature=1",
        "train.questions_per_step=3",
        "train.steps=2",
        "train.lr=1e-3",
        "data.train=synthetic:levels=2:n=16:seed=0:word=0",
        "data.eval=synthetic:levels=1:n=3:seed=1",
        "train.eval_every=2",
        "reward.mask_unfinished=false",
        f"log.run_dir={run_dir}",
        "log.progress=false",
        "log.tensorboard=false",
        "train.micro_batch_tokens=512",
        "train.save_every=0",
        "train.strategy=fsdp",
        "sft.cold_start=false",
        *extra,
    ]
    tr = Trainer(load_config(None, overrides), run_dir, correctness_fn=upper_share)
    try:
        print("engine:", tr.policies[0].engine.describe(), flush=True)
        tr.fit()
    finally:
        tr.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
