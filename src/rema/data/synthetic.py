"""Seeded synthetic arithmetic word problems with exact answers, in difficulty levels forming a curriculum.

Why: the embedded demo model (SmolLM2-135M) solves only very easy arithmetic (about 50% of one-digit
sums, 20% of two-digit + one-digit sums, 45% of small products), so RL needs problems it sometimes
solves: a group whose samples are all wrong has zero advantage and teaches nothing. The levels climb
from there:

    level 1  one-digit + one-digit            7 + 5
    level 2  two-digit +/- one-digit          47 - 6
    level 3  one-digit x one-digit            8 × 7
    level 4  two steps, small numbers         (3 + 4) × 5,  6 × 3 + 7
    level 5  two-digit x one-digit            34 × 7
    level 6  three-step word problems         4 × 6 + 5 - 3,  (7 + 2) × 3 - 4,  (9 - 4) × 6 + 2

Each problem is rendered plain ("What is 7 + 5?") or as a short story from several templates per
operation. `meta["expression"]` is the Python expression (``(3 + 4) * 5``) whose value is the answer;
`arithmetic_steps` gives the steps that compute it, in order (what the program teacher of
:mod:`rema.data.teacher` explains).

Phrasings, for out-of-distribution evaluation (`phrasing=`):

    all      every story template and the plain "What is 7 + 5?" (the default; what every spec without
             ``phrasing=`` has always produced)
    train    the story templates of the training side (all but the last template of each operation) and
             the plain "What is 7 + 5?"
    heldout  the last story template of each operation, and plain phrasings used nowhere else:
             "Find the value of (3 + 4) × 5.", "Compute 7 plus 5.", "Calculate 6 times 3, then add 7.",
             "How much is 47 - 6?"

Train on ``phrasing=train`` and evaluate on ``phrasing=heldout`` to measure questions worded as never in
training (the same arithmetic can appear on both sides: combine with harder levels for new depths).

Determinism: every random choice comes from an explicit `random.Random` seeded through sha256
(`stable_int`), never the global RNG or `hash()`, so the same seed gives the same problems in every
process and on resume.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from typing import NamedTuple

from .problems import DataError, Problem, stable_int

__all__ = [
    "LEVELS",
    "PHRASINGS",
    "Step",
    "SyntheticSplit",
    "arithmetic_steps",
    "make_problem",
    "synthetic_problems",
    "synthetic_split",
]

LEVELS: dict[int, str] = {
    1: "one-digit + one-digit sums",
    2: "two-digit ± one-digit",
    3: "one-digit × one-digit products",
    4: "two-step (a + b) × c or a × b + c, small numbers",
    5: "two-digit × one-digit products",
    6: "three-step word problems",
}
"""Level number -> short description (also shown in reports)."""

# Python expression (for meta and for checking) per operation; operands are named a, b, c, d.
_EXPRESSIONS: dict[str, str] = {
    "add": "{a} + {b}",
    "sub": "{a} - {b}",
    "mul": "{a} * {b}",
    "add_mul": "({a} + {b}) * {c}",
    "mul_add": "{a} * {b} + {c}",
    "mul_add_sub": "{a} * {b} + {c} - {d}",
    "add_mul_sub": "({a} + {b}) * {c} - {d}",
    "sub_mul_add": "({a} - {b}) * {c} + {d}",
}


def _value(op: str, a: int, b: int, c: int = 0, d: int = 0) -> int:
    """Exact integer value, computed directly (not by eval) so tests can check one against the other."""
    return {
        "add": a + b,
        "sub": a - b,
        "mul": a * b,
        "add_mul": (a + b) * c,
        "mul_add": a * b + c,
        "mul_add_sub": a * b + c - d,
        "add_mul_sub": (a + b) * c - d,
        "sub_mul_add": (a - b) * c + d,
    }[op]


# The operators applied left to right: step 1 is ``a OP b``, each later step ``previous result OP next operand``.
_CHAINS: dict[str, tuple[str, ...]] = {
    "add": ("+",),
    "sub": ("-",),
    "mul": ("×",),
    "add_mul": ("+", "×"),
    "mul_add": ("×", "+"),
    "mul_add_sub": ("×", "+", "-"),
    "add_mul_sub": ("+", "×", "-"),
    "sub_mul_add": ("-", "×", "+"),
}


class Step(NamedTuple):
    """One arithmetic step ``left symbol right = result``; ``symbol`` is ``+``, ``-`` or ``×``."""

    symbol: str
    left: int
    right: int
    result: int

    @property
    def text(self) -> str:
        """``"3 × 4"``."""
        return f"{self.left} {self.symbol} {self.right}"


def arithmetic_steps(op: str, operands: dict[str, int]) -> list[Step]:
    """The steps computing a synthetic problem of operation ``op`` (``meta["op"]``, ``meta["operands"]``), in
    order: ``("add_mul", {a: 3, b: 4, c: 5})`` -> ``[3 + 4 = 7, 7 × 5 = 35]``. The last result is the answer."""
    if op not in _CHAINS:
        raise DataError(f"unknown synthetic operation {op!r}; known: {sorted(_CHAINS)}")
    values = [int(operands[k]) for k in "abcd"[: len(_CHAINS[op]) + 1]]
    steps: list[Step] = []
    left = values[0]
    for symbol, right in zip(_CHAINS[op], values[1:]):
        result = {"+": left + right, "-": left - right, "×": left * right}[symbol]
        steps.append(Step(symbol, left, right, result))
        left = result
    return steps


def _sample_operands(level: int, rng: random.Random) -> tuple[str, dict[str, int]]:
    """(operation, operands) for one problem of `level`; every result is a positive integer."""
    r = rng.randint
    if level == 1:
        return "add", {"a": r(1, 9), "b": r(1, 9)}
    if level == 2:
        op = rng.choice(("add", "sub"))
        return op, {"a": r(10, 99), "b": r(1, 9)}
    if level == 3:
        return "mul", {"a": r(2, 9), "b": r(2, 9)}
    if level == 4:
        if rng.random() < 0.5:
            return "add_mul", {"a": r(1, 6), "b": r(1, 6), "c": r(2, 5)}
        return "mul_add", {"a": r(2, 6), "b": r(2, 6), "c": r(1, 9)}
    if level == 5:
        return "mul", {"a": r(11, 99), "b": r(2, 9)}
    if level == 6:
        op = rng.choice(("mul_add_sub", "add_mul_sub", "sub_mul_add"))
        if op == "mul_add_sub":
            a, b, c = r(2, 9), r(2, 9), r(2, 20)
            return op, {"a": a, "b": b, "c": c, "d": r(1, min(20, a * b + c - 1))}
        if op == "add_mul_sub":
            a, b, c = r(2, 9), r(2, 9), r(2, 5)
            return op, {"a": a, "b": b, "c": c, "d": r(1, min(20, (a + b) * c - 1))}
        a = r(5, 20)
        return op, {"a": a, "b": r(1, a - 1), "c": r(2, 9), "d": r(1, 20)}
    raise DataError(f"unknown synthetic level {level}; valid levels: {sorted(LEVELS)}")


# --- word-problem templates -------------------------------------------------------------------------------
# "{a|noun}" renders the count with the noun in the right number ("1 apple", "5 apples"); "item" is the
# sampled object. {name}/{He}/{he} are the sampled person, {items} the plural of the object.

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": (
        "{name} has {a|item}. {He} gets {b} more. How many {items} does {name} have now?",
        "There are {a|item} in a basket and {b|item} on the table. How many {items} are there in total?",
        "{name} read {a|page} on Monday and {b|page} on Tuesday. How many pages did {name} read altogether?",
        "A jar has {a|coin} in it. {name} puts in {b} more. How many coins are in the jar now?",
    ),
    "sub": (
        "{name} has {a|item}. {He} gives {b|item} to a friend. How many {items} does {name} have left?",
        "A shelf holds {a|book}. {name} takes {b|book} away. How many books are left on the shelf?",
        "{name} had {a|coin} and spent {b|coin} on a snack. How many coins does {name} have now?",
        "A book has {a|page}. {name} has read {b|page} so far. How many pages are left to read?",
    ),
    "mul": (
        "{name} has {a|bag} with {b|item} in each bag. How many {items} does {name} have?",
        "A box has {a|row} of {b|item}. How many {items} are in the box?",
        "{name} reads {b|page} every day for {a|day}. How many pages does {name} read?",
        "Each pack has {b|sticker}. {name} buys {a|pack}. How many stickers does {name} get?",
    ),
    "add_mul": (
        "{name} has {a|red box} and {b|blue box}. Each box holds {c|item}. How many {items} are there in all?",
        "A class has {a|boy} and {b|girl}. Each child gets {c|sticker}. How many stickers are given out?",
        "{name} saves {a|coin} on Monday and {b|coin} on Tuesday. {He} does this for {c|week}. "
        "How many coins does {name} save?",
    ),
    "mul_add": (
        "{name} buys {a|pack} of {items} with {b} in each pack, and finds {c} more. How many {items} does {name} have?",
        "There are {a|shelf} with {b|book} on each, plus {c|book} on the floor. How many books are there?",
        "{name} earns {b|coin} each day for {a|day} and gets {c|coin} as a gift. How many coins does {name} have?",
    ),
    "mul_add_sub": (
        "{name} has {a|box} with {b|item} in each box. {He} buys {c} more and then gives {d|item} away. "
        "How many {items} does {name} have now?",
        "{name} the baker makes {a|tray} of {b|cookie}. {He} bakes {c} more, then sells {d|cookie}. "
        "How many cookies are left?",
    ),
    "add_mul_sub": (
        "{name} saves {a|coin} on Monday and {b|coin} on Tuesday, every week for {c|week}. "
        "Then {he} spends {d|coin}. How many coins does {name} have left?",
        "A farm has {a|red crate} and {b|green crate}, each holding {c|item}. {name} sells {d|item}. "
        "How many {items} are left on the farm?",
    ),
    "sub_mul_add": (
        "{name} bakes {a|muffin} and eats {b|muffin}. {He} sells each remaining muffin for {c|coin} "
        "and also gets a tip of {d|coin}. How many coins does {name} earn?",
        "A team has {a|player}, and {b|player} go home. Each remaining player scores {c|point}, and the "
        "team gets a bonus of {d|point}. How many points does the team have?",
    ),
}

_PEOPLE: tuple[tuple[str, str], ...] = (
    ("Sam", "He"),
    ("Mia", "She"),
    ("Leo", "He"),
    ("Ava", "She"),
    ("Noah", "He"),
    ("Emma", "She"),
    ("Omar", "He"),
    ("Lily", "She"),
    ("Ravi", "He"),
    ("Zoe", "She"),
)
_ITEMS: tuple[str, ...] = ("apple", "pencil", "marble", "shell", "card", "candy", "stamp", "orange", "button", "peach")
_IRREGULAR = {"box": "boxes", "candy": "candies", "shelf": "shelves", "peach": "peaches", "child": "children"}


def _plural(noun: str) -> str:
    """Plural of the last word of `noun` ("red box" -> "red boxes")."""
    head, _, last = noun.rpartition(" ")
    last = _IRREGULAR.get(last, last + "s")
    return f"{head} {last}" if head else last


PHRASINGS = ("all", "train", "heldout")
"""Values of ``phrasing`` (module docstring): which templates a problem may be worded with."""

# Plain phrasings of the held-out side only; {expression} is "(3 + 4) × 5", {words} "(3 plus 4) times 5",
# {chain} "3 plus 4, then multiply by 5".
_HELDOUT_PLAIN: tuple[str, ...] = (
    "Find the value of {expression}.",
    "Compute {words}.",
    "Calculate {chain}.",
    "How much is {expression}?",
)
_WORDS = {"+": "plus", "-": "minus", "×": "times"}
_THEN = {"+": "add", "-": "subtract", "×": "multiply by"}


def _story_index(op: str, phrasing: str, rng: random.Random) -> int:
    """The story template of `op` for `phrasing`: any (the default draw, unchanged), all but the last, or the last."""
    n = len(_TEMPLATES[op])
    if phrasing == "all":
        return rng.randrange(n)
    if phrasing == "train":
        return rng.randrange(n - 1)
    return n - 1


def _render_plain(
    op: str, operands: dict[str, int], expression: str, phrasing: str, rng: random.Random
) -> tuple[str, str]:
    """(question text, template id) of a plain question: "What is 7 + 5?", or a held-out phrasing."""
    shown = expression.replace("*", "×")
    if phrasing != "heldout":
        return f"What is {shown}?", "plain"
    index = rng.randrange(len(_HELDOUT_PLAIN))
    steps = arithmetic_steps(op, operands)
    words = re.sub(r"[+\-×]", lambda m: _WORDS[m.group(0)], shown)
    chain = ", ".join(
        [f"{steps[0].left} {_WORDS[steps[0].symbol]} {steps[0].right}"]
        + [f"then {_THEN[s.symbol]} {s.right}" for s in steps[1:]]
    )
    return _HELDOUT_PLAIN[index].format(expression=shown, words=words, chain=chain), f"plain/{index}"


def _render_word(op: str, operands: dict[str, int], rng: random.Random, phrasing: str = "all") -> tuple[str, str]:
    """(question text, template id) for a word problem of `op`."""
    t_index = _story_index(op, phrasing, rng)
    template = _TEMPLATES[op][t_index]
    name, pronoun = rng.choice(_PEOPLE)
    item = rng.choice(_ITEMS)

    def count(m: re.Match[str]) -> str:
        n = operands[m.group(1)]
        noun = item if m.group(2) == "item" else m.group(2)
        return f"{n} {noun if n == 1 else _plural(noun)}"

    text = re.sub(r"\{([abcd])\|([a-z ]+)\}", count, template)
    text = text.format(name=name, He=pronoun, he=pronoun.lower(), items=_plural(item), **operands)
    return text, f"{op}/{t_index}"


def make_problem(level: int, rng: random.Random, *, word: bool = True, phrasing: str = "all") -> Problem:
    """One synthetic problem of `level`, drawing every choice from `rng` (advanced in place); `phrasing` (one of
    `PHRASINGS`) picks the side of the templates it is worded with."""
    op, operands = _sample_operands(level, rng)
    expression = _EXPRESSIONS[op].format(**operands)
    answer = _value(op, **operands)
    if word:
        question, template = _render_word(op, operands, rng, phrasing)
    else:
        question, template = _render_plain(op, operands, expression, phrasing, rng)
    # The id is a content hash: the same question always gets the same id, in any process.
    digest = hashlib.sha256(question.encode("utf-8")).hexdigest()[:10]
    meta = {
        "level": level,
        "op": op,
        "expression": expression,
        "operands": dict(operands),
        "template": template,
        "source": "synthetic",
    }
    return Problem(id=f"syn-L{level}-{digest}", question=question, answer=str(answer), meta=meta)


def _wants_word(word_problems: bool | float, rng: random.Random) -> bool:
    if isinstance(word_problems, bool):
        return word_problems
    return rng.random() < float(word_problems)


def _check_args(levels: Sequence[int], word_problems: bool | float, phrasing: str = "all") -> tuple[int, ...]:
    if phrasing not in PHRASINGS:
        raise DataError(f"phrasing must be one of {', '.join(PHRASINGS)}, got {phrasing!r}")
    levels = tuple(int(lv) for lv in levels)
    if not levels:
        raise DataError("levels is empty; pass e.g. levels=(1, 2, 3)")
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown:
        raise DataError(f"unknown synthetic level(s) {unknown}; valid levels: {sorted(LEVELS)}")
    if not isinstance(word_problems, bool) and not 0.0 <= float(word_problems) <= 1.0:
        raise DataError(f"word_problems must be a bool or a fraction in [0, 1], got {word_problems}")
    return levels


def synthetic_problems(
    n: int,
    *,
    levels: Sequence[int] = (1, 2, 3),
    seed: int = 0,
    word_problems: bool | float = True,
    phrasing: str = "all",
) -> list[Problem]:
    """`n` problems cycling through `levels` (equal shares, in order), deterministic in `seed`.

    `word_problems`: True = all stories, False = all plain ("What is 7 + 5?"), a float = that fraction
    of stories. `phrasing`: which templates (module docstring). Problems may repeat (level 1 has only 81
    sums); use `synthetic_split` for a held-out set.
    """
    levels = _check_args(levels, word_problems, phrasing)
    if n < 0:
        raise DataError(f"n must be >= 0, got {n}")
    rng = random.Random(stable_int("synthetic", seed))
    return [
        make_problem(levels[i % len(levels)], rng, word=_wants_word(word_problems, rng), phrasing=phrasing)
        for i in range(n)
    ]


class SyntheticSplit(NamedTuple):
    """Training problems plus a held-out set per level that shares no problem with them."""

    train: list[Problem]
    heldout: dict[int, list[Problem]]


def synthetic_split(
    levels: Sequence[int],
    n_train: int,
    n_heldout_per_level: int,
    seed: int = 0,
    *,
    word_problems: bool | float = True,
    disjoint_by: str = "question",
    phrasing: str = "all",
) -> SyntheticSplit:
    """A training list and a FIXED held-out set per level, never overlapping.

    The held-out set of a level depends only on (seed, level, word_problems, phrasing): adding levels or changing
    `n_train` leaves it unchanged, and a larger `n_heldout_per_level` extends a smaller one, so eval
    numbers stay comparable across runs. Held-out problems are distinct; training problems are drawn
    cycling through `levels` and any that collide with a held-out one are redrawn.

    `disjoint_by`: ``"question"`` compares question text; ``"expression"`` compares the arithmetic
    (stricter: "7 + 5" as a story about apples and as one about coins count as the same problem).
    """
    levels = _check_args(levels, word_problems, phrasing)
    if disjoint_by not in ("question", "expression"):
        raise DataError(f"disjoint_by must be 'question' or 'expression', got {disjoint_by!r}")
    if n_train < 0 or n_heldout_per_level < 0:
        raise DataError("n_train and n_heldout_per_level must be >= 0")

    def key(p: Problem) -> str:
        return p.question if disjoint_by == "question" else p.meta["expression"]

    def budget(n: int) -> int:
        return 1000 + 100 * n  # generous; only an exhausted level (e.g. 81 distinct sums) runs out

    heldout: dict[int, list[Problem]] = {}
    taken: set[str] = set()
    for level in sorted(set(levels)):
        rng = random.Random(stable_int("synthetic-heldout", seed, level))
        chosen: list[Problem] = []
        seen: set[str] = set()
        for _ in range(budget(n_heldout_per_level)):
            if len(chosen) == n_heldout_per_level:
                break
            p = make_problem(level, rng, word=_wants_word(word_problems, rng), phrasing=phrasing)
            if key(p) not in seen:
                seen.add(key(p))
                chosen.append(_with_split(p, "heldout"))
        if len(chosen) < n_heldout_per_level:
            raise DataError(
                f"level {level} yielded only {len(chosen)} distinct problems by {disjoint_by}; "
                f"lower n_heldout_per_level, or use word_problems=True / disjoint_by='question'"
            )
        heldout[level] = chosen
        taken |= seen

    rng = random.Random(stable_int("synthetic-train", seed, levels))
    train: list[Problem] = []
    for _ in range(budget(n_train)):
        if len(train) == n_train:
            break
        p = make_problem(levels[len(train) % len(levels)], rng, word=_wants_word(word_problems, rng), phrasing=phrasing)
        if key(p) not in taken:
            train.append(_with_split(p, "train"))
    if len(train) < n_train:
        raise DataError(
            f"could only draw {len(train)} training problems outside the held-out set; lower n_heldout_per_level "
            f"or add levels"
        )
    return SyntheticSplit(train=train, heldout=heldout)


def _with_split(p: Problem, split: str) -> Problem:
    return Problem(id=p.id, question=p.question, answer=p.answer, meta={**p.meta, "split": split})
