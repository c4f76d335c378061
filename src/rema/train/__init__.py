"""Training: batch building, the policy update, the RL loop, the SFT cold start, checkpoints, metrics."""

from .run import dry_run, sft, train, training_config
from .trainer import Trainer, TrainingDiverged
from .update import Forward, update_policy

__all__ = ["Forward", "Trainer", "TrainingDiverged", "dry_run", "sft", "train", "training_config", "update_policy"]
