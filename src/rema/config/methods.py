"""The methods by name: the one vocabulary of ``--method`` (``rema chat``, ``eval``, ``serve``, ``distill``, the
compare files) and of the tables that report a config's method.

A method is a setting of three rollout keys; the prompt set follows from them and the task
(:attr:`~rema.config.Config.method_name`). Single-agent methods play both roles with one model, so they set
``train.shared_weights`` too.
"""

from __future__ import annotations

from .checks import ConfigError
from .sections import Config

METHODS: dict[str, dict] = {
    "vrp": {"method": "vrp", "mode": "single_turn", "action_set": False},
    "mrp": {"method": "mrp", "mode": "single_turn", "action_set": False},
    "rema-single": {"method": "rema", "mode": "single_turn", "action_set": False},
    "rema-multi": {"method": "rema", "mode": "multi_turn", "action_set": False},
    "rema-actions": {"method": "rema", "mode": "single_turn", "action_set": True},
}
"""``--method`` name -> rollout settings (the prompt set follows from them, see ``Config.method_name``)."""


def method_overrides(name: str) -> list[tuple[str, object]]:
    """The config keys a ``--method`` name stands for; single-agent methods share one model's weights."""
    if name not in METHODS:
        raise ConfigError(f"method {name!r} is not valid; choose one of {list(METHODS)} (--method)")
    pairs = [(f"rollout.{key}", value) for key, value in METHODS[name].items()]
    return pairs + ([("train.shared_weights", True)] if METHODS[name]["method"] != "rema" else [])


def method_of(cfg: Config) -> str:
    """The ``--method`` name of a config (a single-agent method by its name alone); a config outside the
    table (the judge task's sets) by its prompt set's name."""
    r = cfg.rollout
    for name, values in METHODS.items():
        if all(getattr(r, k) == v for k, v in values.items()) or (r.method == values["method"] != "rema"):
            return name
    return cfg.method_name
