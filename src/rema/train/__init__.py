"""Training: batch building, the RL loop, checkpoints, metrics."""

from .trainer import Trainer, TrainingDiverged, train

__all__ = ["Trainer", "TrainingDiverged", "train"]
