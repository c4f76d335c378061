"""Entry points behind ``rema train`` and ``rema sft``: a config in, a finished (or resumable) run out."""

from __future__ import annotations

from pathlib import Path

from ..config import load_config
from .metrics import print_before_after
from .strategy import launcher_overrides
from .trainer import Trainer


def train(config: str | Path | None, overrides: list[str] | None = None, *, resume: str | Path | None = None,
          max_steps: int | None = None) -> Trainer:
    """Build a Trainer from a YAML file and dotted overrides (or resume a run directory) and fit."""
    if resume is not None:
        cfg = load_config(Path(resume) / "config.yaml", overrides)
        trainer = Trainer(cfg, resume, resume=True)
    else:  # an accelerate FSDP config speaks first; the command line's overrides win
        cfg = load_config(config, [*launcher_overrides(), *(overrides or [])])
        trainer = Trainer(cfg)
    try:
        trainer.fit(max_steps=max_steps)
    finally:
        trainer.close()
    return trainer


def sft(config: str | Path | None, overrides: list[str] | None = None) -> Trainer:
    """The cold start alone (held-out evaluation before and after), then the model is exported to
    ``<run_dir>/final`` and a step-0 checkpoint is kept, so ``rema train --resume RUN_DIR`` continues with RL."""
    cfg = load_config(config, [*launcher_overrides(), *(overrides or [])])
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
