"""One training step of the tiny model, used by test_distributed.py (run alone or under torchrun).

Rollouts sample at temperature 1 with a split-invariant engine (the same episodes however questions are
split across ranks) and the reward depends on what was written, so the gradient is real; rank 0 saves the
step's gradient (whole, also when sharded) and its metrics.
"""

import sys

import torch
from recording import RecordingOptimizer  # this folder is sys.path[0] when run as a script
from split_invariant import make_engine, upper_share

from rema.config import load_config
from rema.prompts import PromptSet
from rema.train import Trainer


def main(out: str, run_dir: str, advantage: str, agg: str, ratio_level: str, *extra: str) -> None:
    cfg = load_config(
        None,
        [
            "model.name=tiny-random",
            "rollout.mode=multi_turn",
            "rollout.max_turns=2",
            "rollout.max_tokens_per_turn=6",
            "rollout.samples_per_question=4",
            "rollout.temperature=1",
            "train.questions_per_step=4",
            "train.steps=1",
            "data.train=synthetic:levels=1:n=16:seed=0:word=0",
            "data.eval=null",
            "train.eval_every=0",
            "reward.mask_unfinished=false",
            f"log.run_dir={run_dir}",
            "log.progress=false",
            "log.tensorboard=false",
            f"algo.advantage={advantage}",
            f"algo.agg={agg}",
            f"algo.ratio_level={ratio_level}",
            "train.micro_batch_tokens=256",
            "train.autocast=off",
            *extra,
        ],
    )
    tr = Trainer(
        cfg, correctness_fn=upper_share, prompts=PromptSet("test", "plan", "solve"), engine_factory=make_engine
    )
    pol = tr.policies[0]
    pol.optimizer = RecordingOptimizer(p for p in pol.model.parameters() if p.requires_grad)
    metrics = tr.train_step()
    if tr.dist.is_main:
        torch.save({"grads": pol.optimizer.grads[0], "rows": metrics["train/rows"], "metrics": metrics}, out)
    tr.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
