"""Configuration: one dataclass per concern, YAML files, dotted command-line overrides.

Every field carries a docstring (the string literal right after it); that text is the single source of
truth and is what ``rema train --help-config`` prints. ``load_config("configs/x.yaml", ["algo.clip_eps=0.1"])``
reads the YAML, applies overrides, and validates; an unknown key fails naming the key and the nearest valid
ones.

- :mod:`.sections`: the dataclasses (``model``, ``rollout``, ``reward``, ``algo``, ``train`` and its nested
  ``train.health``, ``data``, ``sft``, ``log``, ``eval``, ``serve``) and :class:`Config`;
- :mod:`.checks`: :func:`validate`, :func:`check_training` (what a training run refuses on top) and
  :class:`ConfigError`;
- :mod:`.choices`: the valid values of every key that names something, from the registries;
- :mod:`.files`: :func:`load_config`, :func:`save_config`, :func:`describe_config`, :func:`field_docs`;
- :mod:`.methods`: the methods by name (``METHODS``, the ``--method`` vocabulary) and the keys each sets.
"""

from .checks import ConfigError, check_training, validate
from .files import describe_config, field_docs, load_config, save_config
from .methods import METHODS, method_of, method_overrides
from .sections import (
    AlgoConfig,
    Config,
    DataConfig,
    EvalConfig,
    HealthConfig,
    LogConfig,
    ModelConfig,
    RewardConfig,
    RolloutConfig,
    ServeConfig,
    SFTConfig,
    TrainConfig,
)

__all__ = [
    "METHODS", "AlgoConfig", "Config", "ConfigError", "DataConfig", "EvalConfig", "HealthConfig", "LogConfig",
    "ModelConfig", "RewardConfig", "RolloutConfig", "ServeConfig", "SFTConfig", "TrainConfig", "describe_config",
    "field_docs", "check_training", "load_config", "method_of", "method_overrides", "save_config", "validate",
]
