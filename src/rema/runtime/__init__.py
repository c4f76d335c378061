"""The runtime: the layer every command stands on, config → models → engines, each decided once.

- :mod:`.resolve`: a command's ``Config`` built one way (CONFIG, else a run's ``config.yaml``, then the
  overrides) with the generation engine resolved (``auto`` → ``hf`` / ``vllm``); the device ``auto`` names;
- :mod:`.engines`: the model(s) a config names (a run's ``final/``, one of its checkpoints, or model names)
  and their engines, for the commands that only generate;
- :mod:`.runs`: a run's checkpoints as ``save_pretrained`` folders (``rema export``, ``rema eval --checkpoint``);
- :mod:`.checkpoints`: the atomic checkpoint format the trainer writes and resumes from.
"""

from .engines import load_engines, resolve_models
from .resolve import SetupError, command_config, device_for, engine_of, resolved
from .runs import CheckpointError, export_checkpoint, parse_step

__all__ = [
    "CheckpointError",
    "SetupError",
    "command_config",
    "device_for",
    "engine_of",
    "export_checkpoint",
    "load_engines",
    "parse_step",
    "resolve_models",
    "resolved",
]
