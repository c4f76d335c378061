"""The learning-rate schedule, counted in each agent's own updates.

1. ``train.lr_schedule`` is ``constant`` or ``cosine`` after a linear warm-up (:data:`LR_SCHEDULES`); the
   factor at a policy's k-th optimizer update is :func:`lr_lambda` (k counted from 0).
2. Under separate weights the two agents take turns: agent 0 (the MTA) is updated on steps where
   ``(step // switch_freq) % 2 == 0``, agent 1 (the RA) on the others (:func:`updates_agent`); each agent's
   scheduler only steps when it is updated. So its schedule is laid over its *own* updates: the warm-up and
   the total are the number of its updates among the first ``train.warmup_steps`` and ``train.steps`` RL
   steps (:func:`own_steps`), and a cosine reaches 0 at the run's end for both agents instead of half way.
   With shared weights, or one agent frozen, every step updates the trained policy: own steps = RL steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

LR_SCHEDULES = ("constant", "cosine")
"""The valid values of ``train.lr_schedule``."""


def lr_lambda(warmup: int, total: int, schedule: str) -> Callable[[int], float]:
    """The learning-rate factor at a policy's ``step``-th update: linear warm-up over ``warmup`` updates, then
    constant or cosine decay to 0 at ``total`` updates."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; choose one of {list(LR_SCHEDULES)}")

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return f


def updates_agent(step: int, agent: int, *, switch_freq: int) -> bool:
    """Separate weights with both agents trained: whether RL step ``step`` updates agent ``agent`` (0 = MTA,
    1 = RA): they alternate every ``switch_freq`` steps, the MTA first."""
    return (step // switch_freq) % 2 == agent


def own_steps(steps: int, agent: int | None, *, switch_freq: int) -> int:
    """How many of the first ``steps`` RL steps update ``agent``: all of them when ``agent`` is None (shared
    weights, or the only trained agent), else those :func:`updates_agent` gives it."""
    if agent is None:
        return steps
    return sum(updates_agent(s, agent, switch_freq=switch_freq) for s in range(steps))
