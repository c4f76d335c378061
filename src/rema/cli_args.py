"""One way in for every setting: the command line's front door, where flags are shorthands for dotted config keys.

Every ``rema`` command that builds a ``Config`` reads ``[CONFIG] [section.key=value ...]`` and
``--help-config`` the same way, through :func:`config_from_args`, and its flags only spell common keys shorter:
``--max-turns 2`` is the override ``rollout.max_turns=2``. A flag's default is None (not given), so each knob
has one default: its config field's. Overrides apply in this order, later wins:

1. the config file (or a training run's ``config.yaml`` when ``eval.run`` names one, or the defaults);
2. what the command implies: its presets (``rema chat`` asks vLLM for eager mode: one dialogue does not repay
   a compile), what a positional stands for (``rema serve RUN_OR_MODEL``), an accelerate FSDP config;
3. the flags, translated to keys;
4. the dotted ``section.key=value`` overrides typed on the line: explicit beats implicit.

The ``--method`` names are the config's :data:`~rema.config.METHODS`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, describe_config

Translate = Callable[[Any], list[tuple[str, Any]]]
"""A flag's value -> the ``(config key, value)`` pairs it stands for (flags that set several keys)."""


def as_override(key: str, value: Any) -> str:
    """``key=value`` with the value JSON-encoded (JSON is YAML, so ``load_config`` reads it back exactly)."""
    return f"{key}={json.dumps(value)}"


class Shorthands:
    """The flags of one command and the config keys they stand for (``dest`` -> key or translator)."""

    def __init__(self) -> None:
        self.keys: dict[str, str | Translate] = {}
        self.flags: dict[str, str] = {}
        """Option string (``--max-turns``) -> dest (``max_turns``)."""

    def add(self, group, *flags: str, key: str | Translate, help: str, **kwargs) -> None:
        """``group.add_argument(*flags, default=None, ...)``; a plain key is named at the end of the help text, and
        a key that names something takes its valid values as the flag's choices (``rema.config.choices``)."""
        from .config.choices import choices

        text = f"{help} [{key}]" if isinstance(key, str) else help
        if isinstance(key, str) and "choices" not in kwargs and choices(key) is not None:
            kwargs["choices"] = list(choices(key))
        action = group.add_argument(*flags, default=None, help=text, **kwargs)
        self.keys[action.dest] = key
        self.flags.update(dict.fromkeys(action.option_strings, action.dest))

    def pairs(self, name: str, value: Any) -> list[tuple[str, Any]]:
        """The ``(key, value)`` pairs that flag ``name`` (its dest) set to ``value`` stands for."""
        key = self.keys[name]
        return key(value) if callable(key) else [(key, value)]

    def overrides(self, args: argparse.Namespace) -> list[str]:
        """The dotted overrides of the flags that were given (not None), in registration order."""
        out: list[str] = []
        for name in self.keys:
            value = getattr(args, name, None)
            if value is not None:
                out += [as_override(k, v) for k, v in self.pairs(name, value)]
        return out


def add_generation_shorthands(sh: Shorthands, group) -> None:
    """The sampling and placement flags ``rema chat`` and ``rema eval`` share (each its config key)."""
    sh.add(group, "--top-p", type=float, key="rollout.top_p", help="nucleus sampling")
    sh.add(group, "--max-turns", type=int, key="rollout.max_turns", help="most MTA→RA rounds")
    sh.add(group, "--max-tokens", type=int, key="rollout.max_tokens_per_turn", help="token limit per message")
    sh.add(group, "--max-context", type=int, key="rollout.max_context_tokens", help="context budget per agent")
    sh.add(group, "--seed", type=int, key="eval.seed", help="sampling seed")
    sh.add(group, "--device", key="model.device", help="auto, cpu, cuda, cuda:1, ...")
    sh.add(group, "--engine", key="rollout.engine",
           help="generation backend (auto: vLLM when installed, else transformers)")


def split_config_args(items: Iterable[str]) -> tuple[str | None, list[str]]:
    """``(config file or None, dotted overrides)`` from ``[CONFIG] [section.key=value ...]`` in any order."""
    items = list(items)
    overrides = [x for x in items if "=" in x]
    configs = [x for x in items if "=" not in x]
    if len(configs) > 1:
        raise ConfigError(f"one config file expected, got {configs}; overrides look like section.key=value")
    return (configs[0] if configs else None), overrides


def config_from_args(args: argparse.Namespace, implied: Sequence[str] = (), *,
                     base: str | Path | None = None) -> Config | None:
    """The Config of a parsed command line, built one way for every command: ``[CONFIG] [section.key=value
    ...]`` (in any order, around the flags) over the command's ``implied`` overrides and its flags
    (``args.shorthands``), in the order of the module docstring; ``base`` stands in for a CONFIG not given
    (``rema train --resume RUN``: the run's ``config.yaml``). :func:`rema.runtime.command_config` builds it (a
    run's ``config.yaml`` as the base when ``eval.run`` is set; the engine resolved). None when
    ``--help-config`` was given: the Config was printed instead, and the command exits 0."""
    from .runtime import command_config

    config, explicit = split_config_args(([args.config] if args.config else []) + list(args.overrides))
    shorthands = getattr(args, "shorthands", None)
    flags = shorthands.overrides(args) if shorthands is not None else []
    cfg = command_config(config if config is not None else base, [*implied, *flags, *explicit])
    if args.help_config:
        print(describe_config(cfg))
        return None
    return cfg


def add_config_args(parser: argparse.ArgumentParser, example: str) -> None:
    """The positional ``[CONFIG] [section.key=value ...]`` and ``--help-config`` every config command takes."""
    parser.add_argument("config", nargs="?", help="YAML config, e.g. configs/demo.yaml (default: the built-in "
                                                  "defaults; see --help-config)")
    parser.add_argument("overrides", nargs="*", help=f"dotted overrides, applied after the flags, e.g. {example}")
    parser.add_argument("--help-config", action="store_true",
                        help="list every config key with its value (after the flags and overrides) and meaning")


def ra_model(value: str) -> list[tuple[str, Any]]:
    """``--ra-model``: the reasoner's own model, so separate weights."""
    return [("model.ra_name", value), ("train.shared_weights", False)]


def model_source(value: str) -> list[tuple[str, Any]]:
    """The keys a ``--model`` / ``RUN_OR_MODEL`` value stands for: a training run folder (it holds
    ``config.yaml``) is ``eval.run`` (its ``final/`` weights, its config as the base); a folder with ``mta/`` and
    ``ra/`` models is the pair with separate weights; anything else is ``model.name``."""
    from .models.folders import is_run_folder, model_folders

    if is_run_folder(value):
        return [("eval.run", value)]
    found = model_folders(value)
    if found is not None and found[0] != found[1]:
        return [("model.name", str(found[0])), ("model.ra_name", str(found[1])), ("train.shared_weights", False)]
    return [("model.name", value)]
