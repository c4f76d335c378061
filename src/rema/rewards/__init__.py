"""Rewards for ReMA: math correctness (verifier with a hard timeout), format terms, judge verdicts.

Every reward returns ``(reward: float, parts: dict[str, float])``; log every part. Rewards selectable
from configs are in ``REWARDS`` with one signature ``fn(text, reference, **kwargs)``:

=============  ===================================  =========================================
name           reference                            reward
=============  ===================================  =========================================
math           gold answer (LaTeX / text)           1 if equivalent, else 0 (timeouts score 0)
judge          label 'A' or 'B'                     1 if the last [[A]]/[[B]] matches
mta_format     gold answer or None                  0, or penalty if the plan leaks the answer
ra_format      unused                               0, or penalty unless exactly one final box
=============  ===================================  =========================================

``unfinished_mask`` is applied after the reward (multi-turn episodes not ending 'finished' get 0).
For many responses use ``math_correctness_batch`` / ``grade_math_batch`` (parallel worker pool).
"""

from __future__ import annotations

from typing import Callable, Sequence

from .format_terms import END_CODES, judge_verdict, mta_format, ra_format, unfinished_mask
from .math_grader import MathGrade, close, grade_math, grade_math_batch, pool_respawns, summarize

RewardFn = Callable[..., tuple[float, dict[str, float]]]


def _parts(g: MathGrade) -> tuple[float, dict[str, float]]:
    r = 1.0 if g.correct else 0.0
    return r, {
        "correct": r,
        "timed_out": float(g.timed_out),
        "failed": float(g.error is not None and not g.timed_out),
        "no_answer": float(g.extracted is None and g.error is None),
    }


def math_correctness(response: str, gold: str, *, timeout_s: float = 5.0) -> tuple[float, dict[str, float]]:
    """1.0 if the response's final answer equals ``gold`` (see ``grade_math``), else 0.0.

    parts: correct, timed_out, failed (an error other than timeout), no_answer (nothing extracted).
    """
    return _parts(grade_math(response, gold, timeout_s=timeout_s))


def math_correctness_batch(responses: Sequence[str], golds: Sequence[str], *, timeout_s: float = 5.0,
                           workers: int | None = None) -> list[tuple[float, dict[str, float]]]:
    """``math_correctness`` for many items at once, graded in parallel; order preserved."""
    return [_parts(g) for g in grade_math_batch(responses, golds, timeout_s=timeout_s, workers=workers)]


REWARDS: dict[str, RewardFn] = {
    "math": math_correctness,
    "judge": judge_verdict,
    "mta_format": mta_format,
    "ra_format": ra_format,
}


def get_reward(name: str) -> RewardFn:
    """The reward registered as ``name``; an unknown name fails listing the valid ones."""
    try:
        return REWARDS[name]
    except KeyError:
        raise KeyError(f"unknown reward {name!r}; valid: {', '.join(sorted(REWARDS))}") from None


__all__ = [
    "END_CODES", "MathGrade", "REWARDS", "RewardFn", "close", "get_reward", "grade_math", "grade_math_batch",
    "judge_verdict", "math_correctness", "math_correctness_batch", "mta_format", "pool_respawns",
    "ra_format", "summarize", "unfinished_mask",
]
