"""A program teacher for the synthetic arithmetic domain: exact cold-start dialogues written from each problem's
expression, with no model sampling (``sft.data: teacher``).

The ReMA paper's cold start used a strong teacher (GPT-4o) to convert worked solutions into ~800 dialogues (what
``rema distill`` does with any teacher model). For the synthetic levels of :mod:`rema.data.synthetic` the
generator already knows the solution: :func:`~rema.data.synthetic.arithmetic_steps` gives every step
(``3 + 4 = 7``, then ``7 × 5 = 35``). This module writes them in the format of each method, so every method's
"RL from SFT" starts from the same teacher's knowledge (the same steps and numbers), each in its own format:

* ``rema`` multi-turn: one MTA instruction per step ("First, add 3 and 4."), the RA computes just that step ("3 + 4
  = 7."), and so on; then the MTA closes with ``[FINISH]`` and the RA answers in ``\\boxed{}``. A problem of ``k``
  steps takes ``k + 1`` rounds, which ``rollout.max_turns`` must allow. With ``sft.teacher_style=plan`` (the
  config's default) the MTA's first message lists the whole plan, numbered, before its first instruction ("Step 1:
  add 3 and 4."); each later instruction names its step, and the MTA finishes once the plan's last step is done, so
  the decision to stop is read off its own plan instead of guessed afresh each round. With ``reduce`` the MTA first
  restates the question as an expression ("In numbers: (6 + 9) × 2 - 18. First, add 6 and 9."), then each round
  restates what is left with the RA's result in place ("Now it is 15 × 2 - 18. Next, multiply 15 by 2."), and
  finishes when one number is left: the same move at every depth, so nothing in it counts steps. With
  ``reduce_solver`` the MTA's first message asks for the expression and its first operation, and the RA writes both.
  With ``reduce_givens`` the MTA's first message opens on the question's numbers, in the order it gives them
  ("Given: 5, 3 and 8."), before the expression of ``reduce``.
* ``rema`` single-turn: the MTA's plan lists the steps without any result (it passes the plan-leak check,
  :func:`rema.rewards.mta_format`); the RA computes them one by one and boxes the answer.
* ``rema`` single-turn with ``rollout.action_set``: the MTA's JSON action, drawn uniformly (:func:`_action`).
* ``vrp``: one message, step by step, boxed (with ``reduce``: the expression, then each step and what it leaves;
  with ``reduce_givens``: the question's numbers first).
  ``mrp``: one message, ``Plan:`` (the steps, no results) then ``Solution:`` (the computation, boxed), as the MRP
  prompt asks.

Each message kind has several phrasings, picked by the ``rng`` passed in (``teacher_dialogues`` seeds one per
problem from the run's seed and the problem's id), so the meta-thinker does not learn one template.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence

from ..config import ConfigError
from ..prompts import ACTIONS, FINISH_MARKER
from ..rewards.restatement import RESTATEMENT_HEADS
from ..runtime.cold_starts import TEACHER_NAME, sft_seed
from .dialogues import Dialogue
from .problems import Problem, stable_int
from .synthetic import Step, arithmetic_steps

__all__ = ["cold_start_questions", "teacher_dialogue", "teacher_dialogues"]


# What to do in one step, with its numbers ({l} op {r}); lower case, to go after a lead-in.
_DO: dict[str, tuple[str, ...]] = {
    "+": ("add {l} and {r}", "compute {l} + {r}", "find the sum of {l} and {r}", "work out {l} + {r}"),
    "-": ("subtract {r} from {l}", "compute {l} - {r}", "take {r} away from {l}", "work out {l} - {r}"),
    "×": ("multiply {l} by {r}", "compute {l} × {r}", "find the product of {l} and {r}", "work out {l} × {r}"),
}
# A later step of a plan, whose left side is the previous result (never named: a plan states no result).
_DO_NEXT: dict[str, tuple[str, ...]] = {
    "+": ("add {r} to the result", "add {r} to that", "increase the result by {r}", "add {r} to the previous result"),
    "-": (
        "subtract {r} from the result",
        "take {r} away from that",
        "decrease the result by {r}",
        "subtract {r} from the previous result",
    ),
    "×": (
        "multiply the result by {r}",
        "multiply that by {r}",
        "take the result {r} times",
        "multiply the previous result by {r}",
    ),
}
_MTA_ONLY = ("{Do}.", "Work this out: {do}.", "This takes one operation: {do}.", "Solve it in one step: {do}.")
_MTA_FIRST = (
    "First, {do}.",
    "Let's go one step at a time. First, {do}.",
    "Start with the first step: {do}.",
    "Break it into steps. Begin by working out this: {do}.",
)
_MTA_NEXT = ("Now {do}.", "Next, {do}.", "Good. Now {do}.", "That is right. Next step: {do}.")
_MTA_LAST = ("Finally, {do}.", "Now the last step: {do}.", "Good. To finish, {do}.", "Right. Last, {do}.")
_PLAN_HEAD = ("Plan:", "My plan:", "The steps:", "Here is the plan:")
_MTA_STEP_ONE = ("Step 1: {do}.", "Step 1. {Do}.", "Start with step 1: {do}.", "Step 1 of {k}: {do}.")
_MTA_STEP = ("Step {i}: {do}.", "Step {i}. {Do}.", "Now step {i}: {do}.", "Step {i} of {k}: {do}.")
_MTA_PLAN_DONE = (
    "That was the last step of the plan. ",
    "All {k} steps are done. ",
    "The plan is complete. ",
    "Step {k} was the last one, so we are done. ",
)
_MTA_FINISH = (
    "That is the answer. ",
    "Your result is correct. ",
    "That answers the question. ",
    "Correct, we are done. ",
    "Good, that is the final result. ",
)
_REDUCE_NOW = ("Now it is {e}.", "That leaves {e}.", "Now we have {e}.", "It becomes {e}.")
_REDUCE_FIRST = ("First, {do}.", "Start with the first operation: {do}.", "Begin here: {do}.", "{Do} first.")
_REDUCE_NEXT = ("Next, {do}.", "Now {do}.", "Then {do}.", "Next operation: {do}.")
_REDUCE_DONE = (
    "A single number is left, so that is the answer. ",
    "Nothing is left to compute. ",
    "Only the answer is left. ",
    "No operation is left, so we are done. ",
)
_READ_ASK = (
    "Write the question as an expression, then work out its first operation.",
    "Put the question into numbers as one expression, then do its first operation.",
    "First turn the question into an expression, then compute its first operation.",
    "Read the question as an expression and compute its first operation.",
)
_GIVENS = ("The question gives {n}.", "Its numbers: {n}.", "Given: {n}.", "The numbers are {n}.")
_RA_STEP = ("{l} {s} {r} = {v}.", "{l} {s} {r} is {v}.", "I compute {l} {s} {r} = {v}.", "We get {l} {s} {r} = {v}.")
_RA_FINAL = (
    "The answer is \\boxed{{{v}}}.",
    "The final answer is $\\boxed{{{v}}}$.",
    "So the answer is \\boxed{{{v}}}.",
    "The result is \\boxed{{{v}}}.",
    "Final answer: \\boxed{{{v}}}.",
)
_PLAN_INTRO = ("", "Plan:", "Steps to follow:", "Work it out in order:")
_SOLVE_INTRO = ("", "Let's solve it step by step.", "Step by step:", "I work it out one step at a time.")


def _do(step: Step, rng: random.Random, *, first: bool) -> str:
    """The instruction for one step: with both numbers on the first step, else relative to the previous result."""
    table = _DO if first else _DO_NEXT
    return rng.choice(table[step.symbol]).format(l=step.left, r=step.right)


def _numbered(lines: Sequence[str], style: int) -> list[str]:
    """``lines`` as a list in one of four styles: ``1. x``, ``Step 1: x``, ``- x``, ``First, x`` ... ``Finally, x``."""
    if style == 0:
        return [f"{i}. {x}" for i, x in enumerate(lines, 1)]
    if style == 1:
        return [f"Step {i}: {x}" for i, x in enumerate(lines, 1)]
    if style == 2:
        return [f"- {x}" for x in lines]
    if len(lines) == 1:
        return list(lines)
    lead = ["First"] + ["Then"] * (len(lines) - 2) + ["Finally"]
    return [f"{w}, {x if x.startswith('I ') else x[0].lower() + x[1:]}" for w, x in zip(lead, lines)]


def _plan(steps: Sequence[Step], rng: random.Random, *, intro: bool = True) -> str:
    """A plan listing the steps with the question's numbers only (no result of any step, no answer)."""
    lines = [_sentence(_do(s, rng, first=i == 0)) for i, s in enumerate(steps)]
    head = rng.choice(_PLAN_INTRO) if intro else ""
    return "\n".join(([head] if head else []) + _numbered(lines, rng.randrange(4)))


def _solution(steps: Sequence[Step], rng: random.Random, *, intro: bool = True) -> str:
    """The computation of every step, one line each, then the boxed answer."""
    form = rng.choice(_RA_STEP)  # one style per message, as a solver writes
    lines = [form.format(l=s.left, s=s.symbol, r=s.right, v=s.result) for s in steps]
    head = rng.choice(_SOLVE_INTRO) if intro else ""
    body = _numbered(lines, rng.randrange(4)) if len(lines) > 1 else lines
    final = rng.choice(_RA_FINAL).format(v=steps[-1].result)
    return "\n".join(([head] if head else []) + body + [final])


def _sentence(text: str) -> str:
    return f"{text[0].upper()}{text[1:]}."


def _multi_turn(steps: Sequence[Step], rng: random.Random) -> list[tuple[str, str]]:
    """MTA/RA turns: one instruction and one computed step per round, then [FINISH] and the boxed answer."""
    turns: list[tuple[str, str]] = []
    for i, s in enumerate(steps):
        do = _do(s, rng, first=True)
        if len(steps) == 1:
            lead = _MTA_ONLY
        else:
            lead = _MTA_FIRST if i == 0 else _MTA_LAST if i == len(steps) - 1 else _MTA_NEXT
        turns.append(("mta", rng.choice(lead).format(do=do, Do=do[0].upper() + do[1:])))
        turns.append(("ra", rng.choice(_RA_STEP).format(l=s.left, s=s.symbol, r=s.right, v=s.result)))
    turns.append(("mta", rng.choice(_MTA_FINISH) + FINISH_MARKER))
    turns.append(("ra", rng.choice(_RA_FINAL).format(v=steps[-1].result)))
    return turns


def _planned_multi_turn(steps: Sequence[Step], rng: random.Random) -> list[tuple[str, str]]:
    """``sft.teacher_style=plan``: the numbered plan (no results) and "Step 1: ..." in the MTA's first message, one
    numbered instruction per later round, then "All k steps are done. [FINISH]" and the boxed answer."""
    k = len(steps)
    plan = [f"{i}. {_sentence(_do(s, rng, first=i == 1))}" for i, s in enumerate(steps, 1)]
    turns: list[tuple[str, str]] = []
    for i, s in enumerate(steps, 1):
        do = _do(s, rng, first=True)
        step = rng.choice(_MTA_STEP_ONE if i == 1 else _MTA_STEP).format(i=i, k=k, do=do, Do=do[0].upper() + do[1:])
        turns.append(("mta", "\n".join([rng.choice(_PLAN_HEAD), *plan, step]) if i == 1 else step))
        turns.append(("ra", rng.choice(_RA_STEP).format(l=s.left, s=s.symbol, r=s.right, v=s.result)))
    turns.append(("mta", rng.choice(_MTA_PLAN_DONE).format(k=k) + FINISH_MARKER))
    turns.append(("ra", rng.choice(_RA_FINAL).format(v=steps[-1].result)))
    return turns


def _expression(left: int, steps: Sequence[Step]) -> str:
    """The chain of ``steps`` applied to ``left`` as one expression, bracketed only where it must be:
    ``_expression(15, [× 2, - 18])`` -> ``15 × 2 - 18``, ``_expression(6, [+ 9, × 2])`` -> ``(6 + 9) × 2``."""
    text, additive = str(left), False
    for s in steps:
        if s.symbol == "×" and additive:
            text = f"({text})"
        text, additive = f"{text} {s.symbol} {s.right}", s.symbol != "×"
    return text


def _reduced_multi_turn(steps: Sequence[Step], rng: random.Random) -> list[tuple[str, str]]:
    """``sft.teacher_style=reduce``: the MTA restates the question as an expression and names its first operation;
    each later round restates what is left with the RA's last result in place ("Now it is 15 × 2 - 18.") and names
    the next operation; it finishes when a single number is left. Every round is the same move whatever the depth,
    and the stop is read off the expression, not counted."""
    turns: list[tuple[str, str]] = []
    for i, s in enumerate(steps):
        do = _do(s, rng, first=True)
        left = steps[0].left if i == 0 else steps[i - 1].result
        said = rng.choice(RESTATEMENT_HEADS if i == 0 else _REDUCE_NOW).format(e=_expression(left, steps[i:]))
        move = rng.choice(_REDUCE_FIRST if i == 0 else _REDUCE_NEXT).format(do=do, Do=do[0].upper() + do[1:])
        turns.append(("mta", f"{said}\n{move}"))
        turns.append(("ra", rng.choice(_RA_STEP).format(l=s.left, s=s.symbol, r=s.right, v=s.result)))
    last = rng.choice(_REDUCE_NOW).format(e=steps[-1].result)
    turns.append(("mta", f"{last}\n{rng.choice(_REDUCE_DONE)}{FINISH_MARKER}"))
    turns.append(("ra", rng.choice(_RA_FINAL).format(v=steps[-1].result)))
    return turns


def _solver_reads_multi_turn(steps: Sequence[Step], rng: random.Random) -> list[tuple[str, str]]:
    """``sft.teacher_style=reduce_solver``: ``reduce``, but the RA reads the question. The MTA's first message asks
    for the question as an expression and its first operation; the RA writes both ("In numbers: (9 - 4) × 6 + 2.\n
    9 - 4 = 5."); from there the MTA restates what is left, names the next operation and stops, as in ``reduce``.
    The reading then sits where the single agent's sits, at the head of a message that goes on to compute."""
    turns = _reduced_multi_turn(steps, rng)
    head = rng.choice(RESTATEMENT_HEADS).format(e=_expression(steps[0].left, steps))
    turns[0] = ("mta", rng.choice(_READ_ASK))
    turns[1] = ("ra", f"{head}\n{turns[1][1]}")
    return turns


def _givens(question: str, rng: random.Random) -> str:
    """The numbers of ``question`` in the order it gives them, as one sentence ("Given: 5, 3 and 8."): copied from
    the text before any structure is read into it, so an expression that leaves one out shows it."""
    numbers = re.findall(r"\d+", question)
    if not numbers:
        raise ValueError(f"sft.teacher_style=reduce_givens: no number in the question {question!r}")
    listed = numbers[0] if len(numbers) == 1 else f"{', '.join(numbers[:-1])} and {numbers[-1]}"
    return rng.choice(_GIVENS).format(n=listed)


_MULTI_TURN_WRITERS = {
    "plan": _planned_multi_turn,
    "reduce": _reduced_multi_turn,
    "reduce_solver": _solver_reads_multi_turn,
}
"""``sft.teacher_style`` -> the multi-turn ReMA dialogue writer (``steps``: :func:`_multi_turn`)."""


def _reduced_solution(steps: Sequence[Step], rng: random.Random) -> str:
    """``sft.teacher_style=reduce`` for the single agent (``vrp``): the expression, then each step computed with
    what it leaves ("9 - 4 = 5, so it is 5 × 6 + 2."), then the boxed answer: the multi-turn MTA's moves and the
    RA's steps in one message, the control that tells the format's effect from the second agent's."""
    form = rng.choice(_RA_STEP)
    lines = [rng.choice(RESTATEMENT_HEADS).format(e=_expression(steps[0].left, steps))]
    for i, s in enumerate(steps):
        done = form.format(l=s.left, s=s.symbol, r=s.right, v=s.result)
        rest = _expression(s.result, steps[i + 1 :])
        lines.append(f"{done[:-1]}, so it is {rest}." if i + 1 < len(steps) else done)
    return "\n".join([*lines, rng.choice(_RA_FINAL).format(v=steps[-1].result)])


def _action(problem: Problem, steps: Sequence[Step], rng: random.Random) -> str:
    """The action-set MTA's message (``rollout.action_set``): ``{"action": A, "content": C}`` with ``A`` drawn
    uniformly from the actions, whatever the problem, so that the cold start teaches the format and each action's
    use, and RL alone decides which to choose (Fig. 4 asks whether it collapses to EMPTY): DECOMPOSE lists the steps
    without results, REWRITE restates the question as its bare expression, EMPTY gives no guidance."""
    action = rng.choice(ACTIONS)
    if action == "DECOMPOSE":
        content = _plan(steps, rng, intro=False)
    elif action == "REWRITE":
        content = f"Compute {problem.meta['expression']}."
    else:
        content = ""
    return json.dumps({"action": action, "content": content}, ensure_ascii=False)


def _steps_of(problem: Problem) -> list[Step]:
    """The arithmetic steps of a synthetic problem; a ConfigError for any other problem."""
    meta = problem.meta or {}
    if "op" not in meta or "operands" not in meta:
        raise ConfigError(
            f"sft.data=teacher writes dialogues from synthetic problems' expressions, and problem "
            f"{problem.id!r} of data.train has none; use sft.data=self or a dialogue file"
        )
    steps = arithmetic_steps(meta["op"], meta["operands"])
    if str(steps[-1].result) != str(problem.answer).strip():
        raise ValueError(
            f"problem {problem.id}: steps of {meta.get('expression')} give {steps[-1].result}, "
            f"not its answer {problem.answer}"
        )
    return steps


def teacher_dialogue(
    problem: Problem,
    method: str,
    mode: str,
    rng: random.Random,
    *,
    max_turns: int = 30,
    action_set: bool = False,
    style: str = "steps",
) -> Dialogue:
    """The teacher's dialogue of one synthetic ``problem`` for ``method`` (``rema``, ``vrp``, ``mrp``) and ``mode``
    (``single_turn``, ``multi_turn``; only ``rema`` has two modes), phrasings drawn from ``rng`` (advanced).
    ``action_set`` (single-turn ReMA): the MTA answers with one of the actions as JSON (:func:`_action`).
    ``style`` (multi-turn ReMA, ``sft.teacher_style``): ``plan`` opens with the whole plan; ``reduce`` restates
    what is left of the expression each round (for ``vrp`` too: each step and what it leaves, in one message);
    ``reduce_solver`` leaves the first reading of the question to the RA; ``reduce_givens`` opens on the question's
    numbers (for ``vrp`` too).

    Raises ConfigError for a problem that is not synthetic, an unknown method, or a multi-turn problem of ``k``
    steps when ``max_turns < k + 1``.
    """
    steps = _steps_of(problem)
    base = "reduce" if style == "reduce_givens" else style  # reduce's dialogue, the numbers put in front below
    if method == "vrp":
        turns = [("ra", _reduced_solution(steps, rng) if base == "reduce" else _solution(steps, rng))]
    elif method == "mrp":
        turns = [("ra", f"Plan:\n{_plan(steps, rng, intro=False)}\n\nSolution:\n{_solution(steps, rng, intro=False)}")]
    elif method == "rema" and mode == "single_turn":
        mta = _action(problem, steps, rng) if action_set else _plan(steps, rng)
        turns = [("mta", mta), ("ra", _solution(steps, rng))]
    elif method == "rema" and mode == "multi_turn":
        if len(steps) + 1 > max_turns:
            raise ConfigError(
                f"sft.data=teacher: problem {problem.id!r} ({problem.meta.get('expression')}) takes "
                f"{len(steps)} steps, i.e. {len(steps) + 1} rounds with the [FINISH] round, but "
                f"rollout.max_turns={max_turns}; raise rollout.max_turns or train on levels with fewer steps"
            )
        turns = _MULTI_TURN_WRITERS.get(base, _multi_turn)(steps, rng)
    else:
        raise ConfigError(
            f"sft.data=teacher writes dialogues for rollout.method rema, vrp or mrp (mode single_turn or "
            f"multi_turn), not {method!r}/{mode!r}; use sft.data=self or a dialogue file"
        )
    if style == "reduce_givens" and (method == "vrp" or method == "rema" and mode == "multi_turn"):
        agent, text = turns[0]
        turns[0] = (agent, f"{_givens(problem.question, rng)}\n{text}")
    return Dialogue(problem.question, str(problem.answer), turns, problem.id, {**problem.meta, "teacher": TEACHER_NAME})


def cold_start_questions(cfg, train_problems: Sequence[Problem]) -> list[Problem]:
    """``sft.questions`` training problems, drawn with the cold start's seed (the same draw for ``sft.data`` ``self``
    and ``teacher``, and for the check before any model loads)."""
    rng = random.Random(sft_seed(cfg) * 7919 + 17)
    return rng.sample(list(train_problems), min(cfg.sft.questions, len(train_problems)))


def teacher_dialogues(problems: Sequence[Problem], cfg) -> tuple[list[Dialogue], dict[str, float]]:
    """One teacher dialogue per problem in the format of ``cfg.rollout`` (a :class:`~rema.config.Config`), each
    problem's phrasings seeded by the cold start's seed (``sft.seed``, else ``train.seed``) and its id (so a
    dialogue does not depend on which others are written). Returns ``(dialogues, stats)``; a judge-task config
    is a ConfigError."""
    r = cfg.rollout
    if r.task == "judge":
        raise ConfigError(
            "sft.data=teacher writes arithmetic dialogues, not judge verdicts (rollout.task=judge); use "
            "sft.data=self or a dialogue file"
        )
    seed = sft_seed(cfg)
    dialogues = [
        teacher_dialogue(
            p,
            r.method,
            r.mode,
            random.Random(stable_int("teacher", seed, p.id)),
            max_turns=r.max_turns,
            action_set=r.action_set,
            style=cfg.sft.teacher_style,
        )
        for p in problems
    ]
    return dialogues, {"dialogues": float(len(dialogues)), "questions": float(len(problems))}
