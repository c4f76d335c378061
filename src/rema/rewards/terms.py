"""Episode reward terms: the pure pieces that ``rema.scoring.score_episodes`` composes into each agent's reward.

    reward[agent] = unfinished_mask(correctness) + sum of the shaping terms the config selects

1. Correctness, one number per episode shared by both agents and every turn (docs/design.md §2):
   ``math_correctness`` of the grader's verdict on the RA's final response, ``judge_verdict`` for judge data,
   or a user's ``correctness_fn``.
2. ``unfinished_mask``: an episode not ended ``finished`` scores 0 (``reward.mask_unfinished``).
3. Shaping terms, registered in ``TERMS`` with one signature ``fn(episode, agent, *, penalty) -> (value, parts)``
   and added to one agent's reward: ``format`` (single-turn format terms; ``judge_format`` for the judge task,
   whose reasoner ends with a verdict, not a box), ``plan_leak`` (the MTA's first
   message gives the answer away), ``action_format`` (the MTA's action-set choice is not valid JSON) and
   ``restatement`` (the episode's first message does not restate the question as an expression worth the answer).
   :func:`register_term` adds one; ``reward.extra_terms`` selects it by name (docs/extending.md).

Every function returns ``(value, parts)``, and ``parts`` already carry the names they are logged under in
``episode.reward_parts[agent]`` (so metrics show them as ``reward_parts/<agent>/<name>``).
"""

from __future__ import annotations

from collections.abc import Callable

from ..rollout.episode import END_CODES, Episode
from .format_terms import mta_format, ra_format, ra_verdict_format
from .math_grader import MathGrade
from .restatement import restates_answer

Term = Callable[..., tuple[float, dict[str, float]]]
"""A shaping term: ``fn(episode, agent, *, penalty) -> (value, parts)``, ``value`` added to that agent's reward."""


def _b(flag: bool) -> float:
    return 1.0 if flag else 0.0


def math_correctness(grade: MathGrade, *, unboxed_credit: float) -> tuple[float, dict[str, float]]:
    """Correctness reward of one graded final response: 1 for a right boxed answer, ``unboxed_credit`` for a
    right answer found elsewhere (a ``####`` line, "the answer is ...", the last expression), else 0.

    grade: the grader's verdict (``rewards.grade_math_batch``); a timeout is wrong, hence 0.
    unboxed_credit: in [0, 1]; 1 = the authors' lenient grading (any extraction counts).
    parts: correct (0/1, the answer is right however it was given), boxed (0/1, it came from a box),
    timed_out (0/1).
    """
    boxed = grade.source == "boxed"
    reward = float(grade.correct) * (1.0 if boxed else unboxed_credit)
    return reward, {"correct": float(grade.correct), "boxed": _b(boxed), "timed_out": float(grade.timed_out)}


def unfinished_mask(reward: float, end_code: str, *, enabled: bool = True) -> tuple[float, dict[str, float]]:
    """Zero the reward of an episode that did not end 'finished' (multi-turn default, docs/design.md §2).

    end_code: one of ``END_CODES``; an unknown code is a bug upstream: ValueError.
    parts: unfinished (0/1, independent of ``enabled``), masked (1 if the mask applied, i.e. enabled and unfinished).
    """
    if end_code not in END_CODES:
        raise ValueError(f"unknown episode end code {end_code!r}; valid: {', '.join(END_CODES)}")
    unfinished = end_code != "finished"
    masked = enabled and unfinished
    return (0.0 if masked else float(reward)), {"unfinished": _b(unfinished), "masked": _b(masked)}


def single_turn_format(ep: Episode, agent: str, *, penalty: float) -> tuple[float, dict[str, float]]:
    """Single-turn format term of one agent: ``mta_format`` of the MTA's messages (joined by spaces, checked
    against the gold answer), ``ra_format`` of the final response for any other agent.

    penalty: the term on a violation (negative).
    parts: ``format/<part>`` for each part of the text term, then ``format`` (the term itself).
    """
    if agent == "mta":
        term, parts = mta_format(" ".join(t.text for t in ep.turns_of(agent)), gold=ep.answer, penalty=penalty)
    else:
        term, parts = ra_format(ep.final_response, penalty=penalty)
    return term, {**{f"format/{k}": float(v) for k, v in parts.items()}, "format": term}


def judge_single_turn_format(ep: Episode, agent: str, *, penalty: float) -> tuple[float, dict[str, float]]:
    """The single-turn format term of a judge episode: the MTA's as in :func:`single_turn_format`, the reasoner's
    ``ra_verdict_format`` (one ``[[A]]``/``[[B]]`` at the end) instead of a box.

    parts: ``format/<part>`` for each part of the text term, then ``format`` (the term itself).
    """
    if agent == "mta":
        return single_turn_format(ep, agent, penalty=penalty)
    term, parts = ra_verdict_format(ep.final_response, penalty=penalty)
    return term, {**{f"format/{k}": float(v) for k, v in parts.items()}, "format": term}


def plan_leak(ep: Episode, agent: str, *, penalty: float) -> tuple[float, dict[str, float]]:
    """The MTA's plan-leak term: ``penalty`` when its first message gives the answer away (``mta_format``: a
    box, an answer statement, or a closing "= gold"), else 0. One term per episode, on the message written
    before the RA has worked, so it cannot be farmed turn by turn (docs/design.md §2).

    penalty: the term on a leak (negative).
    parts: plan_leak (0/1), plan_leak_term (the term). For another agent, or an MTA that never spoke: (0, {}).
    """
    first = ep.turns_of("mta")
    if agent != "mta" or not first:
        return 0.0, {}
    term, parts = mta_format(first[0].text, gold=ep.answer, penalty=penalty)
    return term, {"plan_leak": float(parts["leak"]), "plan_leak_term": term}


def action_format(ep: Episode, agent: str, *, penalty: float) -> tuple[float, dict[str, float]]:
    """The MTA's action-set format term: ``penalty`` when a message it wrote in action-set mode was not the JSON
    choice the prompt asks for (``Turn.format_ok`` False: no object, unparsable, or an unknown action), else 0.
    Without it an invalid choice costs nothing: the RA then simply gets no guidance.

    penalty: the term on an invalid choice (negative).
    parts: action_invalid (0/1), action_format (the term). For another agent, or messages that carry no choice
    (not action-set mode): (0, {}).
    """
    choices = [t.format_ok for t in ep.turns_of("mta") if t.format_ok is not None]
    if agent != "mta" or not choices:
        return 0.0, {}
    invalid = not all(choices)
    term = penalty if invalid else 0.0
    return term, {"action_invalid": _b(invalid), "action_format": term}


def restatement(ep: Episode, agent: str, *, penalty: float) -> tuple[float, dict[str, float]]:
    """The reading term: ``penalty`` when the episode's first message, written by ``agent``, does not restate the
    question as an expression whose value is the reference answer ("In numbers: (6 + 9) × 2 - 18." for 12;
    ``rewards.restatement``), else 0. It credits the reading apart from the arithmetic that follows: the
    meta-thinker that read the question right is not blamed for the reasoner's slip, and one that dropped a term is
    blamed even when the reasoner's guess lands. For cold starts in ``sft.teacher_style=reduce`` (ReMA multi-turn:
    the meta-thinker's first message; VRP: the single agent's response). One term per episode, on the first
    message only, so it cannot be farmed turn by turn; a message that restates nothing fires it, so it cannot be
    dodged by not restating.

    penalty: the term when the reading is wrong or missing (negative).
    parts: restated_right (0/1), restatement_term (the term). For another agent, an episode with no message, or
    an answer that is not a number: (0, {}).
    """
    if not ep.turns or ep.turns[0].agent != agent:
        return 0.0, {}
    right = restates_answer(ep.turns[0].text, ep.answer)
    if right is None:
        return 0.0, {}
    term = 0.0 if right else penalty
    return term, {"restated_right": _b(right), "restatement_term": term}


TERMS: dict[str, Term] = {
    "format": single_turn_format,
    "judge_format": judge_single_turn_format,
    "plan_leak": plan_leak,
    "action_format": action_format,
    "restatement": restatement,
}


def register_term(name: str) -> Callable[[Term], Term]:
    """Decorator: register a shaping term ``fn(episode, agent, *, penalty) -> (value, parts)`` under ``name``, for
    ``reward.extra_terms`` to select (``{name: penalty}``). A name already taken fails."""

    def deco(fn: Term) -> Term:
        if name in TERMS:
            raise ValueError(f"reward term {name!r} is already registered")
        TERMS[name] = fn
        return fn

    return deco


def get_term(name: str) -> Term:
    """The shaping term registered as ``name``; an unknown name fails listing the valid ones."""
    try:
        return TERMS[name]
    except KeyError:
        raise KeyError(f"unknown reward term {name!r}; valid: {', '.join(sorted(TERMS))}") from None
