"""Training, behind ``rema train`` and ``rema sft``: batch building, the policy update, the RL loop, the SFT cold
start, metrics, the health guard. Checkpoints are written in :mod:`rema.runtime.checkpoints`'s format; the config
comes from the runtime (:func:`rema.runtime.command_config`)."""

from .guard import RunUnhealthy
from .run import dry_run, sft, train
from .trainer import Trainer, TrainingDiverged
from .update import Forward, update_policy

__all__ = ["Forward", "RunUnhealthy", "Trainer", "TrainingDiverged", "dry_run", "sft", "train", "update_policy"]
