"""``rema reproduce``: the paper's experiments (Table 1, Figs. 3-5) as seeded grids of runs, with figures, tables
with 95% intervals over seeds, and verdict lines (docs/reproduction.md)."""

from .command import add_parser as add_reproduce_command
from .experiments import EXPERIMENTS, Arm, Experiment, get_experiments

__all__ = ["EXPERIMENTS", "Arm", "Experiment", "add_reproduce_command", "get_experiments"]
