"""Entry points behind ``rema train`` and ``rema sft``: a config in, a finished (or resumable) run out.

The config comes from the command line's one front door (:func:`rema.cli_args.config_from_args`, through
:func:`rema.runtime.command_config`); an accelerate FSDP config's settings
(:func:`~rema.train.strategy.launcher_overrides`) are among its overrides.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from .metrics import print_before_after
from .trainer import Trainer


def train(cfg: Config, *, resume: str | Path | None = None, max_steps: int | None = None) -> Trainer:
    """Build a Trainer for ``cfg`` (continuing the run directory ``resume`` from its latest checkpoint) and fit."""
    trainer = Trainer(cfg, resume, resume=True) if resume is not None else Trainer(cfg)
    try:
        trainer.fit(max_steps=max_steps)
    finally:
        trainer.close()
    return trainer


def sft(cfg: Config) -> Trainer:
    """The cold start alone (held-out evaluation before and after), then the model is exported to
    ``<run_dir>/final`` and a step-0 checkpoint is kept, so ``rema train --resume RUN_DIR`` continues with RL."""
    trainer = Trainer(cfg)
    try:
        with trainer.graceful_stop():
            trainer.console.print(f"run dir {trainer.run_dir}; cold start from sft.data={cfg.sft.data}")
            if trainer.start(cold_start=True):
                out = trainer.export()  # every process: a sharded model is gathered
                if trainer.dist.is_main:
                    print_before_after(trainer.run_dir / "metrics.jsonl", trainer.console)
                    trainer.console.print(f"fine-tuned model: {out}  (RL from it: rema train CONFIG "
                                          f"model.name={out}, or rema train --resume {trainer.run_dir})")
    finally:
        trainer.logger.close()
        trainer.close()
    return trainer
