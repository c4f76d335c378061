"""Training: batch building, the policy update, the RL loop, the SFT cold start, checkpoints, metrics,
the health guard."""

from .guard import RunUnhealthy
from .run import sft, train
from .trainer import Trainer, TrainingDiverged
from .update import Forward, update_policy

__all__ = ["Forward", "RunUnhealthy", "Trainer", "TrainingDiverged", "sft", "train", "update_policy"]
