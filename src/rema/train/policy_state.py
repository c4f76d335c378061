"""The policies' part of a checkpoint: each one's schedule and engine state in ``state.pt``, its weights and
optimizer there too (replicated strategies) or in shard files that every process writes its part of (sharded
ones). The run's own counters, the data cursor and the file layout are the trainer's
(:meth:`rema.train.trainer.Trainer.save`, :mod:`rema.runtime.checkpoints`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..runtime.checkpoints import load_trainable_state, partial_folder, trainable_state
from .distributed import Dist
from .policy import Policy, sync_engine
from .strategy import Strategy, load_shards, save_shards


def policies_state(policies: list[Policy], strategy: Strategy, dist: Dist) -> dict:
    """Each policy's entry of ``state.pt``, by name: its schedule (None: frozen), every rank's engine state (a
    collective), and unless the strategy shards them its trainable weights and optimizer."""
    states = {}
    for p in policies:
        states[p.name] = {
            "scheduler": p.scheduler.state_dict() if p.scheduler else None,  # None: frozen
            "engine": dist.gather(p.engine.state_dict()),
        }  # one per rank
        if not strategy.sharded:
            states[p.name].update(
                model=trainable_state(p.model), optimizer=p.optimizer.state_dict() if p.optimizer else None
            )
    return states


def save_policy_shards(policies: list[Policy], ckpt_root: Path, step: int, dist: Dist) -> Path:
    """Every process's shards of the weights and optimizers, written into step ``step``'s hidden folder (made
    afresh by rank 0), which is returned for :func:`~rema.runtime.checkpoints.save_checkpoint` to rename."""
    partial = partial_folder(ckpt_root, step)
    if dist.is_main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    dist.barrier()
    save_shards({p.name: (p.model, p.optimizer) for p in policies}, partial / "shards")
    dist.barrier()
    return partial


def restore_policies(policies: list[Policy], states: dict, path: Path, strategy: Strategy, dist: Dist) -> None:
    """Load checkpoint ``path``'s weights, optimizers, schedules and this rank's engine states (``states``: its
    ``state.pt``'s entries by policy) into ``policies``, then sync each engine with its weights. An agent frozen
    when the checkpoint was written gets a fresh optimizer; a checkpoint written by another number of processes
    is refused."""
    if strategy.sharded:
        load_shards({p.name: (p.model, p.optimizer) for p in policies}, path / "shards")
    for p in policies:
        s = states[p.name]
        if not strategy.sharded:
            load_trainable_state(p.model, s["model"])
            if p.optimizer is not None and s["optimizer"] is not None:  # an agent frozen before starts afresh
                p.optimizer.load_state_dict(s["optimizer"])
        if p.scheduler is not None and s["scheduler"] is not None:
            p.scheduler.load_state_dict(s["scheduler"])
        engines = s["engine"]
        if len(engines) != dist.world:
            raise RuntimeError(f"checkpoint was written by {len(engines)} process(es); resume with the same number")
        p.engine.load_state_dict(engines[dist.rank])
        sync_engine(p)
