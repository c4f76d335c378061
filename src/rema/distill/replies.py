"""A teacher's reply -> a checked cold-start dialogue, or the reason it is rejected. Pure functions, no I/O.

The teacher answers with tagged messages (``rema.prompts.TEACHER_PROMPTS``)::

    <mta>Find the common difference first.</mta>
    <ra>a_2 - a_1 = 3, so d = 3.</ra>
    <mta>Good; now the 10th term. [FINISH]</mta>
    <ra>a_10 = 2 + 9 \\cdot 3 = \\boxed{29}</ra>

:func:`parse_reply` reads them strictly: only ``<mta>``/``<ra>`` blocks with whitespace between, nothing before or
after, no tag inside a message. :func:`check_reply` then applies, in order, the checks a dialogue must pass before
``rema sft`` may train on it; the first one that fails names the rejection:

=================  ======================================================================================
reason             the reply ...
=================  ======================================================================================
``truncated``      hit the teacher's token limit (``finish_reason == "length"``): the dialogue is cut
``malformed``      is empty, has text outside the tags, an unclosed or stray <mta>/<ra> tag
``format``         breaks the method's format: the dialogue validator ``sft.data`` uses
                   (:func:`rema.data.dialogues.check_dialogue`: roles, rounds, [FINISH] placement), the
                   multi-turn MTA's closing [FINISH], none in single turn, MRP's 'Plan:' then 'Solution:'
``leak``           the MTA's first message gives the answer away (``mta_format``, the reward's plan-leak check)
``grader_timeout`` grading it hit the grader's timeout
``ungradable``     the grader cannot parse the reference answer itself (no reply can be kept for that row)
``unboxed``        the final RA message has no ``\\boxed{}``
``wrong_answer``   its boxed answer does not grade correct against the reference (rema's math grader)
=================  ======================================================================================

Grading is passed in (``grade(response, gold) -> MathGrade``) so the checks stay testable without worker processes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..data.dialogues import Dialogue, check_dialogue
from ..prompts import FINISH_MARKER
from ..rewards.format_terms import mta_format
from ..rewards.math_grader import MathGrade

REASONS = ("truncated", "malformed", "format", "leak", "grader_timeout", "ungradable", "unboxed", "wrong_answer")
"""Every rejection reason, in the order the checks run."""

_TAG = re.compile(r"<(/?)([A-Za-z_]+)>")
_ROLES = ("mta", "ra")


class ReplyError(ValueError):
    """A reply that is not a sequence of ``<mta>``/``<ra>`` messages; the message says where."""


@dataclass(frozen=True)
class Format:
    """The dialogue format of one method (``rollout.method``/``mode``/``max_turns`` and the prompt set)."""

    two_agents: bool
    multi_turn: bool
    max_turns: int
    plan_then_solution: bool = False
    """MRP: the single message holds 'Plan:' and then 'Solution:'."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of one reply: ``dialogue`` when kept, else ``reason`` (one of :data:`REASONS`) and ``detail``."""

    dialogue: Dialogue | None
    reason: str | None = None
    detail: str = ""

    @property
    def kept(self) -> bool:
        return self.dialogue is not None


def parse_reply(text: str) -> list[tuple[str, str]]:
    """``(agent, text)`` pairs of a tagged reply, messages stripped; :class:`ReplyError` on anything else.

    >>> parse_reply("<mta>Plan.</mta>\\n<ra>Work.</ra>")
    [('mta', 'Plan.'), ('ra', 'Work.')]
    """
    if not text.strip():
        raise ReplyError("empty reply")
    turns: list[tuple[str, str]] = []
    pos, open_at, role = 0, -1, None
    for m in _TAG.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if name not in _ROLES:
            continue  # <b>, <x> in a message are text; only our tag names are structure
        if role is None:
            if closing:
                raise ReplyError(f"</{name}> at char {m.start()} closes no message")
            outside = text[pos : m.start()].strip()
            if outside:
                raise ReplyError(f"text outside the tags at char {pos}: {outside[:60]!r}")
            role, open_at = name, m.end()
        elif closing and name == role:
            turns.append((role, text[open_at : m.start()].strip()))
            role, pos = None, m.end()
        else:
            raise ReplyError(f"<{'/' if closing else ''}{name}> at char {m.start()} inside a <{role}> message")
    if role is not None:
        raise ReplyError(f"<{role}> opened at char {open_at} is never closed")
    outside = text[pos:].strip()
    if outside or not turns:
        raise ReplyError(
            f"text outside the tags at char {pos}: {outside[:60]!r}" if outside else "no <mta>/<ra> message"
        )
    return turns


def format_problem(turns: list[tuple[str, str]], fmt: Format, answer: str) -> tuple[str, str] | None:
    """``(reason, detail)`` for the first format or leak check ``turns`` fail (None when they pass)."""
    d = Dialogue("", answer, turns)
    problem = check_dialogue(d, two_agents=fmt.two_agents, multi_turn=fmt.multi_turn, max_turns=fmt.max_turns)
    if problem:
        return "format", problem
    mta = [t for a, t in turns if a == "mta"]
    if fmt.two_agents and fmt.multi_turn and FINISH_MARKER not in mta[-1]:
        return "format", f"the last MTA message does not end the dialogue with {FINISH_MARKER}"
    if (not fmt.multi_turn or not fmt.two_agents) and any(FINISH_MARKER in t for _, t in turns):
        return "format", f"{FINISH_MARKER} in a single-turn dialogue"
    if fmt.plan_then_solution:
        text = turns[-1][1]
        plan, solution = text.find("Plan:"), text.find("Solution:")
        if plan < 0 or solution < plan:
            return "format", "the message does not hold 'Plan:' and then 'Solution:'"
    if fmt.two_agents:
        _, parts = mta_format(mta[0], gold=answer)
        if parts["leak"]:
            kinds = [k.removeprefix("leak_") for k in ("leak_boxed", "leak_statement", "leak_gold") if parts[k]]
            return "leak", f"the MTA's first message gives the answer away ({', '.join(kinds)})"
    return None


def check_reply(
    text: str,
    finish_reason: str | None,
    *,
    question: str,
    answer: str,
    fmt: Format,
    grade: Callable[[str, str], MathGrade],
    id: str = "",
    meta: dict | None = None,
) -> Verdict:
    """The :class:`Verdict` on one teacher reply for the problem ``(question, answer)`` (checks in the module
    docstring's order). ``grade(final_ra_message, answer)`` is rema's math grader in production."""
    if finish_reason == "length":
        return Verdict(None, "truncated", "the reply hit the teacher's token limit (distill.max_tokens)")
    try:
        turns = parse_reply(text)
    except ReplyError as err:
        return Verdict(None, "malformed", str(err))
    problem = format_problem(turns, fmt, answer)
    if problem:
        return Verdict(None, *problem)
    g = grade(turns[-1][1], answer)
    if g.timed_out:
        return Verdict(None, "grader_timeout", f"grading the final message took over the grader's timeout ({g.error})")
    if g.error == "gold_unparsed":
        return Verdict(None, "ungradable", f"the grader cannot parse the reference answer {answer!r}")
    if g.source != "boxed":
        return Verdict(None, "unboxed", "the final RA message has no \\boxed{} answer")
    if not g.correct:
        return Verdict(None, "wrong_answer", f"boxed {g.extracted!r}, reference {answer!r}")
    return Verdict(Dialogue(question, answer, turns, id, dict(meta or {})))
