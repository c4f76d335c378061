"""One cold-start (SFT) step of the tiny model on a dialogue file, used by test_distributed.py (alone or under
torchrun); rank 0 saves the step's gradient."""

import sys

import torch
from recording import RecordingOptimizer  # this folder is sys.path[0] when run as a script

from rema.config import load_config
from rema.data.dialogues import load_dialogues
from rema.prompts import PromptSet
from rema.train import Trainer
from rema.train.sft import dialogue_rows, sft_train


def main(out: str, run_dir: str, dialogues: str) -> None:
    cfg = load_config(
        None,
        [
            "model.name=tiny-random",
            "rollout.mode=multi_turn",
            "rollout.max_turns=2",
            "train.autocast=off",
            "data.eval=null",
            "data.train=synthetic:levels=1:n=4:seed=0:word=0",
            f"log.run_dir={run_dir}",
            "log.progress=false",
            "log.tensorboard=false",
        ],
    )
    tr = Trainer(cfg, prompts=PromptSet("test", "plan", "solve"))
    pol = tr.policies[0]
    rows = dialogue_rows(
        load_dialogues(dialogues, two_agents=True, multi_turn=True, max_turns=2),
        cfg,
        tr.prompts,
        pol.tokenizer,
        ("mta", "ra"),
    )
    opt = RecordingOptimizer(p for p in pol.model.parameters() if p.requires_grad)
    sft_train(
        pol.model,
        rows,
        opt,
        epochs=1,
        batch_dialogues=5,
        micro_batch_tokens=128,
        pad_id=pol.tokenizer.pad_token_id,
        device=torch.device("cpu"),
        strategy=tr.strategy,
    )
    if tr.dist.is_main:
        torch.save({"grads": opt.grads[0], "rows": len(rows)}, out)
    tr.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
