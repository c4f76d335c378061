"""Rewards for ReMA: math correctness (verifier with a hard timeout), format terms, judge verdicts.

Every reward returns ``(reward: float, parts: dict[str, float])``; log every part.

=====================  =========================================================================
module                 what it holds
=====================  =========================================================================
``math_grader``        ``grade_math`` / ``grade_math_batch``: answer extraction + math-verify in a
                       worker pool with a hard per-item timeout (``MathGrade`` verdicts)
``format_terms``       text-level rewards: ``mta_format`` (the plan leaks no answer), ``ra_format``
                       (exactly one final box), ``judge_verdict`` (the last [[A]]/[[B]] is right)
``judge_families``     ``judge_family``: the family a judge benchmark's part counts toward (accuracy
                       per family: RewardBench's sections, JudgeBench's sources)
``terms``              episode-level terms that ``rema.scoring.score_episodes`` composes:
                       ``math_correctness`` (with ``unboxed_credit``), ``unfinished_mask``, and the
                       shaping terms registered in ``TERMS`` (``format``, ``plan_leak``,
                       ``action_format``; ``register_term`` adds one)
``tasks``              ``rollout.task`` by name: the grader of the final responses (``math``,
                       ``judge``; ``register_task`` adds one)
=====================  =========================================================================

``terms`` and ``tasks`` read episode records (``rema.rollout.episode``), so they are imported from their
modules, not here: the grader and the text rewards stay importable without the rollout layer.
"""

from __future__ import annotations

from .format_terms import judge_verdict, last_verdict, mta_format, ra_format
from .judge_families import judge_family
from .math_grader import MathGrade, close, grade_math, grade_math_batch, pool_respawns, summarize

__all__ = [
    "MathGrade",
    "close",
    "grade_math",
    "grade_math_batch",
    "judge_family",
    "judge_verdict",
    "last_verdict",
    "mta_format",
    "pool_respawns",
    "ra_format",
    "summarize",
]
