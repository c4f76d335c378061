"""The `Problem` record every data source produces, and the answer-text helpers loaders share.

A `Problem` is the unit the rollout protocol consumes: one question with one reference answer. Two tasks
use it:

* **math** (the default): `question` is the problem text, `answer` the final reference answer
  (already extracted: the content of the last ``\\boxed{}`` for MATH, the text after ``####`` for GSM8K).
* **LLM-as-a-judge** (docs/design.md §2): `prompt`, `response_a`, `response_b` hold the conversation to judge and
  `label` ('A' or 'B') the better response. `question` is the user prompt and `answer` repeats the label,
  so code that only reads (question, answer) still sees a consistent record; the judge template in
  `rema.prompts` renders the three fields into what the agents actually see.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DataError",
    "Problem",
    "extract_boxed",
    "gsm8k_final_answer",
    "judge_problem_from_pair",
    "normalize_answer_value",
    "parse_level",
    "stable_int",
]


class DataError(ValueError):
    """A data source is missing, malformed, or inconsistent. The message says where and what to do."""


@dataclass(frozen=True)
class Problem:
    """One question with its reference answer, immutable so a batch can never be edited in place.

    `meta` is copied on construction (a caller's dict is never aliased); do not mutate it afterwards.
    It holds `level` (int or None; MATH "Level 3" -> 3), `subject`, `source`, and every other field of
    the source row that was not mapped to question/answer (e.g. `solution`, `url`, `unique_id`).
    """

    id: str
    """Stable identifier, unique within one source (e.g. ``gsm8k/17``, ``syn-L2-3fa9c1d20b``)."""
    question: str
    """The problem text shown to the agents (for the judge task: the user prompt being judged)."""
    answer: str
    """The final reference answer as text (for the judge task: the label, 'A' or 'B')."""
    meta: dict[str, Any] = field(default_factory=dict, hash=False)
    """Level, subject, source and the row's other fields; excluded from hashing (dicts are unhashable)."""
    prompt: str | None = None
    """Judge task only: the user prompt of the conversation being judged."""
    response_a: str | None = None
    """Judge task only: the first candidate response."""
    response_b: str | None = None
    """Judge task only: the second candidate response."""
    label: str | None = None
    """Judge task only: 'A' or 'B', the better response."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", dict(self.meta))
        if not isinstance(self.question, str) or not self.question.strip():
            raise DataError(f"Problem {self.id!r}: question must be a non-empty string")
        if not isinstance(self.answer, str):
            raise DataError(f"Problem {self.id!r}: answer must be a string, got {type(self.answer).__name__}")
        judge_fields = (self.prompt, self.response_a, self.response_b, self.label)
        if any(f is not None for f in judge_fields):
            if any(f is None for f in judge_fields):
                raise DataError(
                    f"Problem {self.id!r}: judge problems need all of prompt, response_a, response_b, label"
                )
            if self.label not in ("A", "B"):
                raise DataError(f"Problem {self.id!r}: label must be 'A' or 'B', got {self.label!r}")

    @property
    def level(self) -> int | None:
        """Difficulty level (MATH 1-5, synthetic 1-6), or None when the source has none."""
        return self.meta.get("level")

    @property
    def is_judge(self) -> bool:
        """True for an LLM-as-a-judge problem (pairwise comparison with a label)."""
        return self.label is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (judge fields only when set); inverse of `from_dict`."""
        out: dict[str, Any] = {"id": self.id, "question": self.question, "answer": self.answer, "meta": dict(self.meta)}
        if self.is_judge:
            out.update(prompt=self.prompt, response_a=self.response_a, response_b=self.response_b, label=self.label)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Problem:
        """Rebuild a Problem written by `to_dict`."""
        return cls(
            id=str(d["id"]),
            question=d["question"],
            answer=d["answer"],
            meta=d.get("meta", {}),
            prompt=d.get("prompt"),
            response_a=d.get("response_a"),
            response_b=d.get("response_b"),
            label=d.get("label"),
        )


def stable_int(*parts: object) -> int:
    """A 64-bit integer from `parts` that is identical in every process.

    Python's built-in `hash()` of a str is salted per process (PYTHONHASHSEED), so seeds derived from it
    would change between a training run and its resume; sha256 does not.
    """
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


# --- answer extraction ----------------------------------------------------------------------------------

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def extract_boxed(text: str) -> str | None:
    """Content of the LAST ``\\boxed{...}`` (or ``\\fbox{...}``) in `text`, or None when there is none.

    Braces are matched, so nested groups survive (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``), and
    escaped braces (``\\{``, ``\\}``) do not count. The brace-less form ``\\boxed 5`` (used by a few MATH
    solutions) yields the following token. An unbalanced box (no closing brace) is ignored rather than
    returning half an answer. The last box is taken because MATH solutions sometimes box intermediate
    results before the final one.
    """
    best: str | None = None
    for m in re.finditer(r"\\(?:boxed|fbox)(?![A-Za-z])", text):
        i = m.end()
        if i < len(text) and text[i] == "{":
            content = _match_braces(text, i)
            if content is not None:
                best = content
        elif i < len(text) and text[i] == " ":
            # "\boxed 5$": the argument is the next token, ending at whitespace, '$' or end of text.
            token = re.match(r" +([^\s$]+)", text[i:])
            if token:
                best = token.group(1)
    return best


def _match_braces(text: str, open_idx: int) -> str | None:
    """Text between text[open_idx] == '{' and its matching '}', skipping backslash-escaped characters."""
    depth = 0
    i = open_idx
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character, so "\{" and "\}" never change the depth
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_idx + 1 : i]
        i += 1
    return None


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")
_MATH_DOLLAR = re.compile(r"(?<!\\)\$")
"""An unescaped ``$`` (a math-mode delimiter, not ``\\$``)."""


def gsm8k_final_answer(text: str) -> str | None:
    """The answer after the last ``####`` of a GSM8K solution, stripped, thousands separators removed.

    ``"... so 1,080 in all.\\n#### 1,080"`` -> ``"1080"``. Returns None when there is no ``####``.
    Only commas between digit groups are removed, so a tuple answer like ``"1, 2"`` is left alone.
    """
    if "####" not in text:
        return None
    tail = text.rsplit("####", 1)[1].strip()
    return _THOUSANDS.sub("", tail)


def normalize_answer_value(value: Any, *, mode: str = "auto") -> str | None:
    """Turn a raw answer cell into reference-answer text, or None when nothing usable is in it.

    mode:
      * ``"auto"``: GSM8K ``####`` text -> the part after it; text with a ``\\boxed{}`` -> its content;
        numbers -> their shortest exact text (``27.0`` -> ``"27"``); a list (OlympiadBench
        ``final_answer``) -> its single element, or the elements joined by ", "; math-mode ``$`` removed
        (``"$48$, $384$"`` -> ``"48, 384"``; an escaped ``\\$`` stays).
      * ``"boxed"``: require a ``\\boxed{}`` and take the last one's content.
      * ``"gsm8k"``: require ``####`` and take what follows.
      * ``"raw"``: ``str(value).strip()`` and nothing else.
    """
    if value is None:
        return None
    if mode == "raw":
        return str(value).strip()
    if isinstance(value, bool):  # bool is an int subclass; "True" is never a math answer we want to guess
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (list, tuple)):
        items = [normalize_answer_value(v, mode=mode) for v in value]
        kept = [item for item in items if item]
        return ", ".join(kept) if kept else None
    text = str(value)
    if mode == "boxed":
        return extract_boxed(text)
    if mode == "gsm8k":
        return gsm8k_final_answer(text)
    if mode != "auto":
        raise DataError(f"unknown answer_format {mode!r}; use one of: auto, boxed, gsm8k, raw")
    if "####" in text:
        return gsm8k_final_answer(text)
    if "\\boxed" in text or "\\fbox" in text:
        boxed = extract_boxed(text)
        if boxed is not None:
            return boxed.strip()
    # Math-mode `$` delimiters go, inner ones too ("$48$, $384$" -> "48, 384", Gaokao's several-answer form;
    # Qwen2.5-Math's parser drops every `$` of its answers the same way); an escaped `\$` (a dollar) stays.
    return _MATH_DOLLAR.sub("", text).strip()


def parse_level(value: Any) -> int | None:
    """Difficulty level as an int: ``"Level 3"`` -> 3, ``3`` -> 3, ``"3"`` -> 3; ``"Level ?"``/None -> None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    m = re.fullmatch(r"\s*(?:level\s*)?(\d+)\s*", str(value), flags=re.IGNORECASE)
    return int(m.group(1)) if m else None


# --- judge task -------------------------------------------------------------------------------------------


def judge_problem_from_pair(
    *,
    id: str,
    prompt: str,
    chosen: str,
    rejected: str,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> Problem:
    """A judge Problem from a preference pair (RewardBench's prompt/chosen/rejected).

    The chosen response goes to position A or B by a coin derived from (seed, id) with sha256, so the
    labels are balanced (a judge that always says "A" scores ~50%) and the same pair gets the same
    position in every run and process.
    """
    chosen_is_a = stable_int("judge-position", seed, id) % 2 == 0
    a, b = (chosen, rejected) if chosen_is_a else (rejected, chosen)
    label = "A" if chosen_is_a else "B"
    return Problem(
        id=id, question=prompt, answer=label, meta=meta or {}, prompt=prompt, response_a=a, response_b=b, label=label
    )
