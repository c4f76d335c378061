"""Training: batch building, the policy update, the RL loop, the SFT cold start, checkpoints, metrics."""

from .run import sft, train
from .trainer import Trainer, TrainingDiverged
from .update import Forward, update_policy

__all__ = ["Forward", "Trainer", "TrainingDiverged", "sft", "train", "update_policy"]
