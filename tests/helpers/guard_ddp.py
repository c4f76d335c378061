"""A run whose scripted policy collapses, under torchrun, used by test_guard.py: rank 1's guard is made blind
(it never sees a check fire), so only rank 0's broadcast verdict can make it roll back with rank 0. Each rank
writes where it ended: step, rollbacks, learning rate, the guard's events; under ``fsdp`` the rollback reads
the sharded checkpoint back on every rank."""

import json
import sys

from collapse import CollapsingEngine, correct  # this folder is sys.path[0] when run as a script

from rema.config import load_config
from rema.prompts import PromptSet
from rema.train import Trainer


def main(out: str, run_dir: str, strategy: str) -> None:
    cfg = load_config(
        None,
        [
            "model.name=tiny-random",
            "rollout.mode=single_turn",
            "rollout.max_tokens_per_turn=48",
            "rollout.samples_per_question=2",
            "train.questions_per_step=2",
            "train.steps=6",
            "train.lr=1e-2",
            "data.train=synthetic:levels=1:n=40:seed=0:word=0",
            "data.eval=null",
            "train.eval_every=0",
            "reward.mask_unfinished=false",
            f"log.run_dir={run_dir}",
            "log.progress=false",
            "log.tensorboard=false",
            "train.save_every=1",
            "train.autocast=off",
            "train.micro_batch_tokens=512",
            f"train.strategy={strategy}",
        ],
    )
    holder: dict = {}
    tr = Trainer(
        cfg,
        correctness_fn=correct,
        prompts=PromptSet("test", "plan", "solve"),
        engine_factory=lambda model, tok, seed: CollapsingEngine(tok, "degenerate", 4, 6e-3, holder),
    )
    holder["trainer"] = tr
    if tr.dist.rank == 1:
        tr.guard.observe = lambda step, metrics: None  # blind: only rank 0's verdict can move it
    tr.fit()
    with open(f"{out}.{tr.dist.rank}", "w") as f:
        json.dump(
            {
                "step": tr.step,
                "rollbacks": tr.guard.rollbacks,
                "events": len(tr.guard.events),
                "lr": tr.policies[0].optimizer.param_groups[0]["lr"],
            },
            f,
        )
    tr.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
