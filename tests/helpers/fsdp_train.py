"""Trains the tiny model (full fine-tuning unless overridden, real AdamW) for a few steps, alone or under
torchrun, for test_distributed.py: ``fsdp_train.py RUN_DIR STEPS STRATEGY [resume] [key=value ...]``. As in
ddp_step.py, every split of the batch samples the same episodes (split_invariant.py) and the reward depends
on what was written."""

import sys

from split_invariant import make_engine, upper_share  # this folder is sys.path[0] when run as a script

from rema.config import load_config
from rema.prompts import PromptSet
from rema.train import Trainer


def main(run_dir: str, steps: str, strategy: str, *rest: str) -> None:
    resume = "resume" in rest
    extra = [x for x in rest if "=" in x]
    overrides = [
        "model.name=tiny-random",
        "rollout.mode=multi_turn",
        "rollout.max_turns=2",
        "rollout.max_tokens_per_turn=6",
        "rollout.samples_per_question=4",
        "rollout.temperature=1",
        "train.questions_per_step=4",
        "train.steps=3",
        "train.lr=1e-3",
        "data.train=synthetic:levels=2:n=16:seed=0:word=0",
        "data.eval=null",
        "train.eval_every=0",
        "reward.mask_unfinished=false",
        f"log.run_dir={run_dir}",
        "log.progress=false",
        "log.tensorboard=false",
        "train.micro_batch_tokens=96",
        "train.autocast=off",
        "train.save_every=1",
        f"train.strategy={strategy}",
        "rollout.engine=hf",
        *extra,
    ]
    cfg = load_config(f"{run_dir}/config.yaml" if resume else None, [] if resume else overrides)
    tr = Trainer(
        cfg,
        run_dir,
        resume=resume,
        prompts=PromptSet("test", "plan", "solve"),
        correctness_fn=upper_share,
        engine_factory=make_engine,
    )
    try:
        tr.fit(max_steps=int(steps) - tr.step)
    finally:
        tr.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
