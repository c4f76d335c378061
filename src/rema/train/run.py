"""Entry points behind ``rema train`` and ``rema sft``: a config in, a finished (or resumable) run out.

The config comes from the command line's one front door (:func:`rema.cli_args.config_from_args`, through
:func:`rema.runtime.command_config`); an accelerate FSDP config's settings
(:func:`~rema.train.strategy.launcher_overrides`) are among its overrides, and the command refuses what only a
training run must (:func:`~rema.config.check_training`). Before a model loads or the run directory exists, every
input is read (:func:`rema.preflight.check_training_inputs`: data sets, a dialogue file, the tokenizer, the turn
budget), so a mistake costs seconds and leaves nothing behind; :func:`dry_run` stops there and returns the plan.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..preflight import FIRST_ROWS, check_training_inputs, training_plan
from .metrics import print_before_after
from .trainer import Trainer


def dry_run(cfg: Config, *, command: str) -> list[str]:
    """``rema train|sft --dry-run``: the checks a run makes before loading weights, on the first rows of every data
    set, and the plan (:func:`rema.preflight.training_plan`); writes nothing."""
    cold_start = command == "sft" or cfg.sft.cold_start
    inputs = check_training_inputs(cfg, cold_start=cold_start, limit=FIRST_ROWS, materialize=False)
    return training_plan(cfg, inputs, command=command, cold_start=cold_start)


def train(cfg: Config, *, resume: str | Path | None = None, max_steps: int | None = None) -> Trainer:
    """Build a Trainer for ``cfg`` (continuing the run directory ``resume`` from its latest checkpoint) and fit. A new
    run reads its inputs first (a resumed one continues under the settings it started with)."""
    if resume is None:
        check_training_inputs(cfg, cold_start=cfg.sft.cold_start)
    trainer = Trainer(cfg, resume, resume=True) if resume is not None else Trainer(cfg)
    try:
        trainer.fit(max_steps=max_steps)
    finally:
        trainer.close()
    return trainer


def sft(cfg: Config) -> Trainer:
    """The cold start alone (held-out evaluation before and after), then the model is exported to
    ``<run_dir>/final`` and a step-0 checkpoint is kept, so ``rema train --resume RUN_DIR`` continues with RL."""
    check_training_inputs(cfg, cold_start=True)
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
