"""Training: batch building, the RL loop, the SFT cold start, checkpoints, metrics."""

from .trainer import Trainer, TrainingDiverged, sft, train

__all__ = ["Trainer", "TrainingDiverged", "sft", "train"]
