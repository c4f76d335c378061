"""Text-level rewards: the single-turn format terms and the LLM-as-a-judge verdict.

Every reward is a pure function returning ``(reward, parts)`` where ``parts`` maps component names to
floats (booleans as 0.0/1.0) so each component can be logged (nano-aha-moment style).

Format terms are single-turn only (docs/design.md §2): in multi-turn, per-turn format rewards are exploitable (an RA
boxes every turn), so there only the sparse shared correctness reward is used.
"""

from __future__ import annotations

import re

from .math_worker import find_boxes

# "final answer is 5", "The answer is $x=3$", "Answer: (B)", "answer = 12": an answer word, a linking
# word, then something that looks like a value (digit, sign, $, \, parenthesis, a lone choice letter).
# "the answer is the sum of the roots" and "check the final answer" do not match: planning language.
_ANSWER_STATEMENT = re.compile(
    r"(?i:\banswer)\s*(?:(?i:is)|:|=)\s*:?\s*(?:[-+\d$\\(]|[A-E](?![A-Za-z]))"
)
_VERDICT = re.compile(r"\[\[([AB])\]\]")
_NORMALIZE_DROP = re.compile(r"\\left|\\right|\\!|\\,|\\;|\s|\$|\*\*")


def _b(flag: bool) -> float:
    return 1.0 if flag else 0.0


def _normalize(s: str) -> str:
    """Spacing-, delimiter- and ``\\dfrac``-insensitive form used only for the conservative gold check."""
    return _NORMALIZE_DROP.sub("", s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")).rstrip(".")


def _states_gold_at_end(text: str, gold: str) -> bool:
    """True when the plan's last non-empty line IS the gold answer or ends with '= gold' / 'is gold'.

    Deliberately conservative: a plan that merely mentions the gold value mid-text (it may be a number
    from the problem) is not flagged; only a closing standalone statement of it.
    """
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    g = _normalize(gold)
    if not lines or not g:
        return False
    last = _normalize(lines[-1])
    if last == g:
        return True
    for link in ("=", "is"):
        if last.endswith(link + g):
            return True
    return False


def mta_format(text: str, gold: str | None = None, *, penalty: float = -1.0) -> tuple[float, dict[str, float]]:
    """Meta-thinker single-turn format term: 0 for a clean plan, ``penalty`` if it leaks the answer.

    A plan leaks when it (a) contains ``\\boxed``/``\\fbox``, (b) makes an answer statement
    ("the final answer is 5", "Answer: $x=3$", "answer = 12"), or (c) when ``gold`` is given, its last
    non-empty line is the gold itself or ends with "= gold" / "is gold" (see ``_states_gold_at_end``;
    comparison ignores spaces, ``$``, ``\\left``/``\\right``, ``\\dfrac`` vs ``\\frac``).

    parts: leak, leak_boxed, leak_statement, leak_gold (0/1 each).
    """
    leak_boxed = re.search(r"\\(?:boxed|fbox)(?![A-Za-z])", text) is not None
    leak_statement = _ANSWER_STATEMENT.search(text) is not None
    leak_gold = gold is not None and _states_gold_at_end(text, gold)
    leak = leak_boxed or leak_statement or leak_gold
    parts = {"leak": _b(leak), "leak_boxed": _b(leak_boxed), "leak_statement": _b(leak_statement),
             "leak_gold": _b(leak_gold)}
    return (penalty if leak else 0.0), parts


def ra_format(text: str, reference: str | None = None, *, penalty: float = -1.0,
              max_trailing_chars: int = 200) -> tuple[float, dict[str, float]]:
    """Reasoning-agent single-turn format term: 0 for exactly one box at the end, else ``penalty``.

    "At the end" means at most ``max_trailing_chars`` non-blank characters follow the box (room for
    "$.", "I hope it is correct.", a closing sentence). ``reference`` is unused; it is there so every
    registered reward has the signature ``(text, reference, **kwargs)``.

    parts: n_boxed (number of closed boxes), boxed_last (1 if the last box is in the end region).
    """
    boxes = find_boxes(text)
    boxed_last = bool(boxes) and len(re.sub(r"\s", "", text[boxes[-1][1]:])) <= max_trailing_chars
    ok = len(boxes) == 1 and boxed_last
    return (0.0 if ok else penalty), {"n_boxed": float(len(boxes)), "boxed_last": _b(boxed_last)}


def ra_verdict_format(text: str, *, penalty: float = -1.0,
                      max_trailing_chars: int = 200) -> tuple[float, dict[str, float]]:
    """The judge's reasoner format term (single turn): 0 for exactly one ``[[A]]``/``[[B]]`` verdict at the end
    (at most ``max_trailing_chars`` non-blank characters after it), else ``penalty``. ``ra_format`` asks a math
    answer for its box; a judge answers with a verdict, so a right ``[[A]]`` is not penalised for having no box.

    parts: n_verdicts (number of verdicts), verdict_last (1 if the last verdict is in the end region).
    """
    found = list(_VERDICT.finditer(text or ""))
    verdict_last = bool(found) and len(re.sub(r"\s", "", text[found[-1].end():])) <= max_trailing_chars
    ok = len(found) == 1 and verdict_last
    return (0.0 if ok else penalty), {"n_verdicts": float(len(found)), "verdict_last": _b(verdict_last)}


def last_verdict(text: str) -> str | None:
    """The last ``[[A]]``/``[[B]]`` in ``text`` ('A' or 'B'), None when there is none: the judge's verdict."""
    verdicts = _VERDICT.findall(text or "")
    return verdicts[-1] if verdicts else None


def judge_verdict(text: str, label: str) -> tuple[float, dict[str, float]]:
    """LLM-as-a-judge reward: 1 when the LAST ``[[A]]``/``[[B]]`` in ``text`` equals ``label``, else 0.

    label: 'A' or 'B' (also accepted: '[[A]]', lower case). Anything else is a data bug: ValueError.
    parts: correct (0/1), verdict_found (0/1).
    """
    want = label.strip().strip("[]").upper()
    if want not in ("A", "B"):
        raise ValueError(f"judge label must be 'A' or 'B', got {label!r}")
    verdict = last_verdict(text)
    correct = verdict == want
    return _b(correct), {"correct": _b(correct), "verdict_found": _b(verdict is not None)}
