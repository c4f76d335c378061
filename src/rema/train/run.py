"""Entry points behind ``rema train`` and ``rema sft``: a config in, a finished (or resumable) run out.

Before a model loads or the run directory exists, the config is checked (:func:`training_config`) and every input
is read (:func:`rema.preflight.check_training_inputs`: data sets, a dialogue file, the tokenizer, the turn budget),
so a mistake costs seconds and leaves nothing behind; ``dry_run`` stops there and returns the plan.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config, check_training, load_config
from ..preflight import FIRST_ROWS, check_training_inputs, training_plan
from .metrics import print_before_after
from .strategy import launcher_overrides
from .trainer import Trainer


def training_config(config: str | Path | None, overrides: list[str] | None = None) -> Config:
    """The config of a new run: the YAML file, an accelerate FSDP config's settings, then the command line's
    overrides (they win); validated, and checked for what only a training run refuses
    (:func:`~rema.config.check_training`)."""
    cfg = load_config(config, [*launcher_overrides(), *(overrides or [])])
    check_training(cfg)
    return cfg


def dry_run(cfg: Config, *, command: str) -> list[str]:
    """``rema train|sft --dry-run``: the checks a run makes before loading weights, on the first rows of every data
    set, and the plan (:func:`rema.preflight.training_plan`); writes nothing."""
    cold_start = command == "sft" or cfg.sft.cold_start
    inputs = check_training_inputs(cfg, cold_start=cold_start, limit=FIRST_ROWS, materialize=False)
    return training_plan(cfg, inputs, command=command, cold_start=cold_start)


def train(config: str | Path | None, overrides: list[str] | None = None, *, resume: str | Path | None = None,
          max_steps: int | None = None) -> Trainer:
    """Build a Trainer from a YAML file and dotted overrides (or resume a run directory) and fit."""
    if resume is not None:  # the run continues under the settings it started with
        cfg = load_config(Path(resume) / "config.yaml", overrides)
        trainer = Trainer(cfg, resume, resume=True)
    else:
        cfg = training_config(config, overrides)
        check_training_inputs(cfg, cold_start=cfg.sft.cold_start)
        trainer = Trainer(cfg)
    try:
        trainer.fit(max_steps=max_steps)
    finally:
        trainer.close()
    return trainer


def sft(config: str | Path | None, overrides: list[str] | None = None) -> Trainer:
    """The cold start alone (held-out evaluation before and after), then the model is exported to
    ``<run_dir>/final`` and a step-0 checkpoint is kept, so ``rema train --resume RUN_DIR`` continues with RL."""
    cfg = training_config(config, overrides)
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
