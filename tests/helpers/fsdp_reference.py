"""The KL reference under FSDP on two gloo processes, for test_distributed.py: ``fsdp_reference.py OUT RUN_DIR``.

Records the device of the parameters each ``fully_shard`` preparation sees (the reference's must be ``meta``:
it is sharded before it has any memory, so no process holds a whole copy), whether the sharded reference
equals the model it copies, its shard of the elements, and the KL term of one training step (0 when the
reference equals the policy being trained)."""

import sys

import torch
from split_invariant import make_engine, upper_share  # this folder is sys.path[0] when run as a script

from rema.config import load_config
from rema.models import load_model
from rema.models.export import full_tensor
from rema.prompts import PromptSet
from rema.train import Trainer
from rema.train import strategy as strategy_module


def main(out: str, run_dir: str) -> None:
    seen = []
    prepare = strategy_module.FSDP.prepare

    def recording_prepare(self, model):
        seen.append(sorted({p.device.type for p in model.parameters()}))
        return prepare(self, model)

    strategy_module.FSDP.prepare = recording_prepare
    cfg = load_config(None, [
        "model.name=tiny-random", "rollout.mode=multi_turn", "rollout.max_turns=2", "rollout.max_tokens_per_turn=6",
        "rollout.samples_per_question=4", "rollout.temperature=1", "train.questions_per_step=4", "train.steps=1",
        "data.train=synthetic:levels=1:n=16:seed=0:word=0", "data.eval=null", "train.eval_every=0",
        "reward.mask_unfinished=false", f"log.run_dir={run_dir}", "log.progress=false", "log.tensorboard=false",
        "train.micro_batch_tokens=256", "train.autocast=off", "train.strategy=fsdp", "algo.kl_coef=0.1",
        "rollout.engine=hf"])
    tr = Trainer(cfg, correctness_fn=upper_share, prompts=PromptSet("test", "plan", "solve"), engine_factory=make_engine)
    pol = tr.policies[0]
    start = load_model("tiny-random", seed=0)[0].state_dict()
    equal = all(torch.equal(full_tensor(p.detach()), start[name]) for name, p in pol.ref.named_parameters())
    local = sum(p.to_local().numel() for p in pol.ref.parameters())
    whole = sum(p.numel() for p in pol.ref.parameters())
    metrics = tr.train_step()
    if tr.dist.is_main:
        torch.save({"seen": seen, "equal": equal, "frac": local / whole, "kl": metrics["stats/kl"]}, out)
    tr.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
