"""Worker side of the math grader: answer extraction + math-verify, run inside a child process.

Extraction order (first rule that finds something wins; later rules are never consulted):

1. the LAST ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed 5`` of the response. The RA is told to box its
   final answer; earlier boxes are intermediate results or abandoned attempts, so the last one counts.
2. the last ``#### N`` line (GSM8K's final-answer marker).
3. an anchored statement ("The final answer is $x=3$", "Answer: 5"), via math-verify's anchored regexes,
   then a multiple-choice letter after "answer" ("The answer is (B)").
4. math-verify's lenient extraction of the last expression of the response.

An extracted answer that is arithmetic of plain numbers left uncomputed (``1 + 2``, ``7 - 4``) is graded
wrong: math-verify would evaluate it, so restating an arithmetic question would count as solving it.

Rules 3-4 read only the last ``TAIL_CHARS`` characters: a final statement sits at the end, and bounding
the text keeps math-verify's regexes cheap on hostile multi-megabyte responses. A candidate from rules 1-2
is lightly cleaned (``$``, trailing period, ``1{,}080``, trailing plain-word units such as ``18 dollars``),
wrapped as ``\\boxed{candidate}`` and parsed by math-verify exactly like the gold (``\\boxed{gold}``), so
both sides go through the same normalisation (units, ``\\dfrac``, ``^\\circ``, ``\\%``, ``\\text{}``) before the
symbolic comparison.

Timeouts: math-verify's own ``signal.alarm`` timeouts are switched off (they would cancel ours); the
worker arms one soft ``ITIMER_REAL`` deadline per item and raises ``SoftTimeout`` (a ``BaseException``,
so no library ``except Exception`` swallows it). A CAS stuck inside C code cannot be interrupted that way;
the parent's hard kill (see ``math_grader.py``) is the guarantee.

Run as a script (``python math_worker.py``) it serves requests over stdin/stdout with
``multiprocessing.connection`` framing. It imports only the stdlib and math_verify (not ``rema``, not
torch), so a worker starts in about a second.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

TAIL_CHARS = 4000
"""Rules 3-4 look at this many trailing characters of the response."""
MAX_ANSWER_CHARS = 2000
"""A boxed / #### candidate longer than this is not parsed (no real final answer is this long)."""

_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)  # an escaped char (\{ \} \\) or a bare brace
# "#### 72" (GSM8K). A Markdown heading ("#### Step 2: expand") is not an answer: the value must start like a
# number/formula ("#### 18 dollars") or contain no plain word of 3+ letters ("#### y = 2x + 3").
_HASH_LINE = re.compile(r"^[ \t]*####[ \t]*(.+?)[ \t]*$", re.MULTILINE)
_NUMBER_LIKE_START = re.compile(r"[-+$\\(.\d]")
_PLAIN_WORD = re.compile(r"(?<![\\{A-Za-z])[A-Za-z]{3,}")
_NUM_WITH_WORDS = re.compile(r"^(\\?\$?\s*-?[\d.,]+)\s*((?:[A-Za-z]{2,}\s*)+)\.?$")
_NOT_UNITS = {"pi", "and", "or", "to", "sqrt", "times", "plus", "minus", "over", "of"}
_THOUSANDS_BRACE = re.compile(r"(\d)\{,\}(\d)")
# "\textbf{(073)}", "(113) ", "\mathbf{127}" (AoPS style): a number in a text/bold wrapper or parentheses.
_WRAPPED_NUMBER = re.compile(r"^(?:\\(?:textbf|mathbf|text|mbox)\{)?\s*\(?\s*(-?\d+(?:\.\d+)?)\s*\)?\s*\}?$")
# "The answer is (B)." / "Answer: C" - a multiple-choice letter, which math-verify's anchors do not read.
# A choice letter, bare or wrapped: "C", "(C)", "\text{(C)}", "\textbf{(C)}\ 12" (AMC: letter then value).
_CHOICE_PREFIX = re.compile(r"^\s*(?:\\text(?:bf)?\{)?\s*\(?([A-E])\)?\s*\}?")
# Markdown bold around an answer ("The answer is: **42**"); "2**3" is left alone.
_CHOICE_PAREN = re.compile(r"^\s*(?:\\text(?:bf)?\{)?\s*\(([A-E])\)\s*\}?")  # as a prefix: needs "( )"
_MD_BOLD = re.compile(r"(?<![\w)])\*\*([^*\n]+?)\*\*(?![\w(])")
_CHOICE = re.compile(r"(?i:answer)(?:\s+is)?\s*:?\s*(?:\(([A-E])\)|([A-E])(?=\s*(?:[.,;!]|$)))", re.MULTILINE)


class SoftTimeout(BaseException):
    """Raised by the per-item SIGALRM deadline; BaseException so `except Exception` cannot hide it."""


# --------------------------------------------------------------------------------------- extraction


def _closing_braces(text: str) -> dict[int, int]:
    """Map index of each '{' to the index of its matching '}' (escaped ``\\{``, ``\\}`` skipped).

    One linear pass with a stack, so hostile input (a megabyte of '{') costs O(n), never O(n^2).
    """
    closing: dict[int, int] = {}
    stack: list[int] = []
    for tok in _BRACE_TOKEN.finditer(text):
        c = tok.group()
        if c == "{":
            stack.append(tok.start())
        elif c == "}" and stack:
            closing[stack.pop()] = tok.start()
    return closing


def _box_at(text: str, m: re.Match[str], closing: dict[int, int]) -> tuple[str, int] | None:
    """The box whose keyword ``m`` matched: (content, end index just past it), or None if unclosed."""
    i = m.end()
    if i < len(text) and text[i] == "{":
        close = closing.get(i)
        return None if close is None else (text[i + 1 : close], close + 1)
    if i == m.start() + len(m.group().rstrip()):  # "\boxedx" is not a box; "\boxed 5" needs a space
        return None
    tok = re.match(r"[^\s$]+", text[i : i + MAX_ANSWER_CHARS])
    return (tok.group(), i + tok.end()) if tok else None


def find_boxes(text: str) -> list[tuple[str, int]]:
    """All ``\\boxed``/``\\fbox`` answers in order, as (content, end index just past the box).

    Handles nested braces (``\\boxed{\\frac{1}{2}}``), escaped braces (``\\boxed{\\{1,2\\}}``) and the
    brace-less form ``\\boxed 5``. An unclosed box is skipped; a box nested inside a box is not
    reported separately. Linear time in ``len(text)``.
    """
    closing = _closing_braces(text) if "{" in text else {}
    boxes: list[tuple[str, int]] = []
    pos = 0
    while (m := _BOX_START.search(text, pos)) is not None:
        box = _box_at(text, m, closing)
        if box is not None:
            boxes.append(box)
        pos = box[1] if box is not None else m.end()
    return boxes


def last_boxed(text: str) -> str | None:
    """Content of the last closed box, or None."""
    boxes = find_boxes(text)
    return boxes[-1][0] if boxes else None


def clean_candidate(ans: str) -> str:
    """Cosmetic clean-up of an extracted answer before math-verify sees it.

    Strips surrounding whitespace and ``$``, a trailing period, LaTeX thousands separators ``1{,}080``,
    plain trailing unit words after a number (``18 dollars`` -> ``18``) and a text/bold/parenthesis
    wrapper around a bare number (``\\textbf{(073)}`` -> ``073``). Applied to gold and prediction alike.
    """
    s = ans.strip().rstrip(".").strip().strip("$").strip().rstrip(".").strip()
    s = _THOUSANDS_BRACE.sub(r"\1,\2", s)
    if (m := _NUM_WITH_WORDS.match(s)) and not _NOT_UNITS & set(m.group(2).lower().split()):
        s = m.group(1).strip()
    if m := _WRAPPED_NUMBER.match(s):
        s = m.group(1)
    return s


def _resolve_choice(cand: str, *, gold_is_choice: bool) -> str:
    """AMC style "\\textbf{(C)}\\ 12": the letter when the gold is a choice letter, else the value after it."""
    if m := _CHOICE_PREFIX.fullmatch(cand):
        return m.group(1) if gold_is_choice else cand
    if (m := _CHOICE_PAREN.match(cand)) is None:
        return cand
    if gold_is_choice:
        return m.group(1)
    rest = cand[m.end() :].lstrip("\\ ~").strip()
    return rest if rest and cand.lstrip().startswith("\\textbf") else cand


def extract_candidate(response: str) -> tuple[str | None, str | None]:
    """Rules 1-2 of the module docstring: (answer string, source) with source 'boxed' or 'hash'."""
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed, "boxed"
    hashes = [h for h in _HASH_LINE.findall(response) if _NUMBER_LIKE_START.match(h) or not _PLAIN_WORD.search(h)]
    if hashes:
        return hashes[-1], "hash"
    return None, None


# --------------------------------------------------------------------------------------- grading


@functools.lru_cache(maxsize=1)
def _configs() -> dict[str, list[Any]]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return {
        "boxed": [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        "anchored": [
            LatexExtractionConfig(try_extract_without_anchor=False),
            ExprExtractionConfig(try_extract_without_anchor=False),
        ],
        "lenient": [LatexExtractionConfig(), ExprExtractionConfig()],
    }


def _parse(text: str, config: str) -> list[Any]:
    from math_verify import parse

    # parsing_timeout=None: math-verify's alarm would cancel our per-item ITIMER_REAL deadline.
    return parse(text, _configs()[config], parsing_timeout=None)


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple[Any, ...]:
    """Gold parsed once per worker (G samples of a question share it). Sympy objects are immutable."""
    return tuple(_parse("\\boxed{" + clean_candidate(gold) + "}", "boxed"))


def _extracted_text(parsed: list[Any]) -> str | None:
    """math-verify returns [sympy value, matched string]; keep the string for logging."""
    strs = [p for p in parsed if isinstance(p, str)]
    return strs[-1] if strs else (str(parsed[0]) if parsed else None)


_NUM = r"\(?\s*-?\d+(?:\.\d+)?\s*\)?"
_UNEVALUATED = re.compile(rf"{_NUM}(?:\s*(?:[-+*×÷·]|\\times|\\cdot|\\div)\s*{_NUM})+")


def is_unevaluated_arithmetic(text: str) -> bool:
    """True for a sum/difference/product of plain numbers left uncomputed (``1 + 2``, ``7 - 4.``, ``3 \\times 4``).

    math-verify evaluates such an expression, so "1 + 2 is simply two." would grade as 3: restating the
    question would score on arithmetic tasks. Fractions (``1/2``), powers and anything with a symbol are
    answers and are not affected."""
    return _UNEVALUATED.fullmatch(text.strip().strip("$").strip().rstrip(".").strip()) is not None


def grade_one(response: str, gold: str) -> dict[str, Any]:
    """Grade one response against one gold answer (no timeout here; see ``serve``).

    Returns a dict with keys ``correct`` (bool), ``extracted`` (str | None), ``source``
    ('boxed' | 'hash' | 'answer_is' | 'last_expr' | None), ``error`` (str | None):
    'gold_unparsed' when the gold itself cannot be parsed, 'answer_too_long' for an oversized candidate.
    A response with no recognisable answer has extracted=None, error=None (a model error, not a failure).
    """
    from math_verify import verify

    gold_parsed = list(_parse_gold(gold))
    if not gold_parsed:
        return {"correct": False, "extracted": None, "source": None, "error": "gold_unparsed"}
    cand, source = extract_candidate(response)
    if cand is not None:
        if len(cand) > MAX_ANSWER_CHARS:
            return {"correct": False, "extracted": cand[:200], "source": source, "error": "answer_too_long"}
        cand = clean_candidate(cand)
        cand = _resolve_choice(cand, gold_is_choice=_CHOICE_PREFIX.fullmatch(clean_candidate(gold)) is not None)
        pred = _parse("\\boxed{" + cand + "}", "boxed") if cand else []
        extracted: str | None = cand
    else:
        tail = _MD_BOLD.sub(r"\1", response[-TAIL_CHARS:])
        pred, source = _parse(tail, "anchored"), "answer_is"
        if not pred and (choices := _CHOICE.findall(tail)):
            letter = "".join(choices[-1])
            pred = _parse("\\boxed{" + letter + "}", "boxed")
        if not pred:
            pred, source = _parse(tail, "lenient"), "last_expr"
        extracted = _extracted_text(pred)
        if extracted is None:
            source = None
    if not pred or (extracted is not None and is_unevaluated_arithmetic(extracted)):
        return {"correct": False, "extracted": extracted, "source": source, "error": None}
    correct = bool(verify(gold_parsed, pred, timeout_seconds=None))
    return {"correct": correct, "extracted": extracted, "source": source, "error": None}


@contextmanager
def soft_deadline(seconds: float) -> Iterator[None]:
    """Raise SoftTimeout in the main thread after ``seconds`` of wall time (0 disables)."""
    if seconds <= 0:
        yield
        return

    def _fire(signum: int, frame: Any) -> None:
        raise SoftTimeout()

    old = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def grade_with_deadline(response: str, gold: str, soft_timeout_s: float) -> dict[str, Any]:
    """``grade_one`` under a soft deadline; adds ``timed_out`` and ``seconds``.

    Errors raised by the CAS layer (sympy / latex2sympy on hostile input) are reported in ``error`` as
    'ExcType: message' with the traceback on stderr, never dropped silently.
    """
    t0 = time.perf_counter()
    try:
        with soft_deadline(soft_timeout_s):
            out = grade_one(response, gold)
        out["timed_out"] = False
    except SoftTimeout:
        out = {"correct": False, "extracted": None, "source": None, "error": "timeout", "timed_out": True}
    except (RecursionError, MemoryError, ValueError, TypeError, ArithmeticError, AttributeError) as e:
        traceback.print_exc(file=sys.stderr)
        out = {
            "correct": False,
            "extracted": None,
            "source": None,
            "error": f"{type(e).__name__}: {e}"[:300],
            "timed_out": False,
        }
    out["seconds"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------------- server

_WARMUP = [
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("\\boxed{x^2+2x+1}", "(x+1)^2"),
    ("\\boxed{(1,2]}", "(1,2]"),
    ("\\boxed{\\{1,2\\}}", "\\{2,1\\}"),
    ("Answer: $x=3$", "3"),
    ("so 10\\%", "0.1"),
]


def serve() -> None:
    """Request loop. Protocol (pickled, multiprocessing.connection framing):

    parent -> worker: (job_id: int, response: str, gold: str, soft_timeout_s: float)
    worker -> parent: ("ready", pid) once after start-up, then (job_id, result dict) per request.
    Exits on EOF of stdin (parent closed the pool or died).
    """
    from multiprocessing.connection import Connection

    conn_in = Connection(os.dup(0), writable=False)
    conn_out = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, never into the protocol stream
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    for response, gold in _WARMUP:  # sympy imports lazily: pay it before 'ready', not inside an item's timeout
        grade_with_deadline(response, gold, 0)
    conn_out.send(("ready", os.getpid()))
    while True:
        try:
            job_id, response, gold, soft_timeout_s = conn_in.recv()
        except EOFError:
            return
        conn_out.send((job_id, grade_with_deadline(response, gold, soft_timeout_s)))


if __name__ == "__main__":
    serve()
