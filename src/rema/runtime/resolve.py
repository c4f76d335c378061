"""A command's settings, decided once: the Config built one way, and what ``auto`` stands for on this machine.

Every command (``rema train``, ``sft``, ``chat``, ``eval``, ``serve``, ``distill``, ``plan``) builds its
``Config`` with :func:`command_config`: the base is CONFIG when given, else a training run's ``config.yaml``
when the overrides name one (``eval.run``: ``--run RUN``, ``--model RUN``), else the defaults; then the
overrides, in order. The generation engine is resolved there (:func:`resolved`): ``rollout.engine=auto``
becomes ``hf`` or ``vllm`` (``$REMA_ENGINE``, else vLLM where it is installed), so everything below reads one
concrete name, a run's ``config.yaml`` and ``meta.json`` record the engine that ran, and a resumed run keeps it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..config import Config, ConfigError, load_config
from ..rollout.factory import resolve_engine


class SetupError(RuntimeError):
    """A setup the user must fix before anything runs (a folder that is no training run, a missing
    checkpoint, an eval folder holding other settings); the message says what exists and what to give."""


def engine_of(cfg: Config) -> str:
    """The engine ``rollout.engine`` stands for here (:func:`~rema.rollout.factory.resolve_engine`: ``auto`` is
    ``$REMA_ENGINE``, else vLLM where it is installed, else ``hf``); a name the resolver refuses
    (``$REMA_ENGINE=sglang``) is a :class:`~rema.config.ConfigError`."""
    try:
        return resolve_engine(cfg.rollout.engine)
    except ValueError as err:
        raise ConfigError(f"rollout.engine: {err}") from None


def resolved(cfg: Config) -> Config:
    """``cfg`` with ``rollout.engine`` resolved (:func:`engine_of`); the same object when it names an engine
    already. A setting the resolved engine cannot take fails naming what ``auto`` became."""
    engine = engine_of(cfg)
    if engine == cfg.rollout.engine:
        return cfg
    try:
        return dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, engine=engine))
    except ConfigError as err:
        raise ConfigError(f"rollout.engine=auto is {engine} here ($REMA_ENGINE, or whether vLLM is installed), "
                          f"and then: {err}") from None


def run_base(overrides: list[str]) -> Path | None:
    """The ``config.yaml`` of the training run the overrides name with ``eval.run`` (the last one wins),
    or None; a folder without one is a :class:`SetupError`."""
    import yaml

    runs = [x.split("=", 1)[1] for x in overrides if x.split("=", 1)[0].strip() == "eval.run"]
    try:
        run = yaml.safe_load(runs[-1]) if runs else None
    except yaml.YAMLError:
        return None  # load_config reports the bad value
    if not run:
        return None
    config = Path(str(run)) / "config.yaml"
    if not config.is_file():
        raise SetupError(f"{config.parent}: not a training run folder (no config.yaml); eval.run (--run, --model "
                         "RUN) takes a folder written by `rema train`")
    return config


def command_config(config: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The Config a command runs under: ``load_config(base, overrides)`` with the engine :func:`resolved`.
    The base is ``config`` when given, else the run's ``config.yaml`` when the overrides set ``eval.run``,
    else the defaults."""
    overrides = list(overrides or [])
    base = config if config is not None else run_base(overrides)
    return resolved(load_config(base, overrides))


def device_for(name: str, local_rank: int = 0) -> torch.device:
    """The device ``model.device`` names: ``auto`` is this process's GPU (``cuda:<local rank>``) where CUDA is
    available, else the CPU; a bare ``cuda`` is this process's GPU too."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)
