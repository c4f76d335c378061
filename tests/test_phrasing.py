"""Synthetic phrasings for out-of-distribution evaluation: ``phrasing=train|heldout`` never share a wording, and the
default (``all``) is exactly what every spec produced before the option existed."""

from __future__ import annotations

import random

import pytest

from rema.data import DataError, resolve_dataset
from rema.data.synthetic import _TEMPLATES, LEVELS, _render_plain, synthetic_problems, synthetic_split

ALL_LEVELS = tuple(LEVELS)


def test_default_phrasing_is_all_and_unchanged():
    for word in (True, False, 0.5):
        base = synthetic_problems(120, levels=ALL_LEVELS, seed=4, word_problems=word)
        assert base == synthetic_problems(120, levels=ALL_LEVELS, seed=4, word_problems=word, phrasing="all")
        split = synthetic_split((1, 4, 6), 60, 20, seed=4, word_problems=word)
        assert split == synthetic_split((1, 4, 6), 60, 20, seed=4, word_problems=word, phrasing="all")
    assert resolve_dataset("synthetic:levels=1,6:n=30:seed=1:phrasing=all") == resolve_dataset(
        "synthetic:levels=1,6:n=30:seed=1"
    )
    # every template (the last of each op included) and only the plain "What is" come out by default
    templates = {p.meta["template"] for p in synthetic_problems(2000, levels=ALL_LEVELS, seed=0, word_problems=0.5)}
    assert templates == {"plain"} | {f"{op}/{i}" for op, ts in _TEMPLATES.items() for i in range(len(ts))}


def test_train_and_heldout_phrasings_never_share_a_template_or_a_question():
    kw = dict(levels=ALL_LEVELS, seed=0, word_problems=0.5)
    train = synthetic_problems(1500, phrasing="train", **kw)
    held = synthetic_problems(1500, phrasing="heldout", **kw)
    t_train, t_held = {p.meta["template"] for p in train}, {p.meta["template"] for p in held}
    assert t_train == {"plain"} | {f"{op}/{i}" for op, ts in _TEMPLATES.items() for i in range(len(ts) - 1)}
    assert t_held == {"plain/0", "plain/1", "plain/2", "plain/3"} | {
        f"{op}/{len(ts) - 1}" for op, ts in _TEMPLATES.items()
    }
    assert not {p.question for p in train} & {p.question for p in held}
    for p in held:  # still exact, every operand shown
        assert int(p.answer) == eval(p.meta["expression"]) and all(
            str(v) in p.question for v in p.meta["operands"].values()
        )
    plain_train = synthetic_problems(50, phrasing="train", levels=ALL_LEVELS, seed=3, word_problems=False)
    assert plain_train == synthetic_problems(50, levels=ALL_LEVELS, seed=3, word_problems=False)  # "What is ...?"


class Pick(random.Random):
    def __init__(self, k: int):
        super().__init__(0)
        self.k = k

    def randrange(self, *args, **kwargs):
        return self.k


@pytest.mark.parametrize(
    "k, op, operands, expression, text",
    [
        (0, "mul_add", {"a": 6, "b": 3, "c": 7}, "6 * 3 + 7", "Find the value of 6 × 3 + 7."),
        (1, "add", {"a": 7, "b": 5}, "7 + 5", "Compute 7 plus 5."),
        (1, "add_mul", {"a": 3, "b": 4, "c": 5}, "(3 + 4) * 5", "Compute (3 plus 4) times 5."),
        (2, "mul_add", {"a": 6, "b": 3, "c": 7}, "6 * 3 + 7", "Calculate 6 times 3, then add 7."),
        (
            2,
            "sub_mul_add",
            {"a": 9, "b": 4, "c": 6, "d": 2},
            "(9 - 4) * 6 + 2",
            "Calculate 9 minus 4, then multiply by 6, then add 2.",
        ),
        (3, "sub", {"a": 47, "b": 6}, "47 - 6", "How much is 47 - 6?"),
    ],
)
def test_heldout_plain_phrasings_by_hand(k, op, operands, expression, text):
    assert _render_plain(op, operands, expression, "heldout", Pick(k)) == (text, f"plain/{k}")
    assert _render_plain(op, operands, expression, "train", Pick(k))[0] == f"What is {expression.replace('*', '×')}?"


def test_phrasing_in_specs_and_splits():
    train = resolve_dataset("synthetic:levels=1,2,4:n=300:seed=0:split=train:heldout=20:phrasing=train")
    in_dist = resolve_dataset("synthetic:levels=1,2,4:seed=0:split=heldout:heldout=20:phrasing=train")
    ood = resolve_dataset("synthetic:levels=1,2,4:seed=0:split=heldout:heldout=20:phrasing=heldout")
    assert len(train) == 300 and len(in_dist) == len(ood) == 60
    assert not {p.question for p in train} & ({p.question for p in in_dist} | {p.question for p in ood})
    assert {p.meta["template"] for p in ood}.isdisjoint({p.meta["template"] for p in train})
    with pytest.raises(DataError, match="phrasing must be one of all, train, heldout"):
        resolve_dataset("synthetic:levels=1:n=3:phrasing=novel")
