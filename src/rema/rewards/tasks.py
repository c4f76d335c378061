"""Tasks by name (``rollout.task``): how the RA's final responses are graded into the shared correctness reward.

A task's grader takes a batch of final responses with their reference answers and returns, per response, the
shared reward, its components (logged as ``reward_parts/<agent>/<part>``; ``correct`` is 1 when the answer is
right: accuracy, and what a cold start keeps) and the answer read from the response (None when none was found).
It grades a whole batch at once, so a grader can fan out (the math grader runs a worker pool with a hard
timeout per item; a ``timed_out`` part is counted in ``grader/timeouts``).

Built in: ``math`` (the math verifier, with ``reward.unboxed_credit``) and ``judge`` (the last ``[[A]]``/``[[B]]``
against the label). :func:`register_task` adds one (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..config import ConfigError, RewardConfig
from .format_terms import judge_verdict, last_verdict
from .math_grader import grade_math_batch
from .terms import math_correctness

Graded = tuple[float, dict[str, float], str | None]
"""One graded response: (reward, parts with ``correct`` among them, the extracted answer or None)."""

TaskGrader = Callable[[Sequence[str], Sequence[str], RewardConfig], list[Graded]]
"""``grader(responses, answers, reward_cfg) -> [(reward, parts, extracted), ...]``, one per response, in order."""

TASKS: dict[str, TaskGrader] = {}


def register_task(name: str) -> Callable[[TaskGrader], TaskGrader]:
    """Decorator: register ``grader`` as the task ``name`` (``rollout.task=name``). A name already taken fails."""

    def deco(fn: TaskGrader) -> TaskGrader:
        if name in TASKS:
            raise ValueError(f"task {name!r} is already registered")
        TASKS[name] = fn
        return fn

    return deco


def get_task(name: str) -> TaskGrader:
    """The grader of the task ``name``; an unknown name fails naming ``rollout.task`` and the registered tasks."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(
            f"rollout.task={name!r} is not a registered task; choose one of {sorted(TASKS)} or "
            "register one with rema.rewards.tasks.register_task (docs/extending.md)"
        ) from None


@register_task("math")
def grade_math_task(responses: Sequence[str], answers: Sequence[str], cfg: RewardConfig) -> list[Graded]:
    """The math verifier on the whole batch (worker pool, ``reward.grader_timeout_s`` per item); a right answer
    outside ``\\boxed{}`` earns ``reward.unboxed_credit``."""
    grades = grade_math_batch(
        list(responses), list(answers), timeout_s=cfg.grader_timeout_s, workers=cfg.grader_workers
    )
    return [(*math_correctness(g, unboxed_credit=cfg.unboxed_credit), g.extracted) for g in grades]


@register_task("judge")
def grade_judge_task(responses: Sequence[str], answers: Sequence[str], cfg: RewardConfig) -> list[Graded]:
    """LLM-as-a-judge: 1 when the response's last ``[[A]]``/``[[B]]`` equals the label (A or B)."""
    return [(*judge_verdict(r, a), last_verdict(r)) for r, a in zip(responses, answers)]
