"""The first restatement of a question, read back: the expression a message says the question asks for, and its value.

``sft.teacher_style=reduce`` teaches the first message of an episode to restate the question as an expression
before any arithmetic ("In numbers: (6 + 9) × 2 - 18.\\nFirst, add 6 and 9."): the meta-thinker's first message in
ReMA multi-turn, the single agent's response in VRP. The teacher writes it with one of ``RESTATEMENT_HEADS``; this
module reads it back, for the ``restatement`` reward term (``rewards.terms``) and ``bench/restatements.py``.
"""

from __future__ import annotations

import ast
import operator
import re

RESTATEMENT_HEADS = ("In numbers: {e}.", "The question asks for {e}.", "As an expression: {e}.", "We need {e}.")
"""The teacher's ways of opening a restatement, ``{e}`` the expression (``data.teacher`` writes with them)."""

_HEAD = re.compile("|".join(re.escape(h.split("{e}")[0]) + r"(.+?)\.(?:\n|$)" for h in RESTATEMENT_HEADS))
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def restated_expression(text: str) -> str | None:
    """The expression a message restates (``"In numbers: 3 × 2 + 8.\\n..."`` -> ``"3 × 2 + 8"``), or None."""
    m = _HEAD.search(text)
    return next((g for g in m.groups() if g), None) if m else None


def expression_value(expression: str) -> float | None:
    """The value of an arithmetic expression in ``× ÷ * / + -``, brackets and numbers; None if it is not one
    (names, calls, powers and anything else are refused, never evaluated)."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(node)

    try:
        return walk(ast.parse(expression.replace("×", "*").replace("÷", "/"), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def restates_answer(text: str, answer: str) -> bool | None:
    """Whether ``text`` restates an expression whose value is ``answer``; None when ``answer`` is not a number (the
    check does not apply). A message that restates nothing, or something that is not arithmetic, is False."""
    try:
        gold = float(answer.replace(",", ""))
    except ValueError:
        return None
    said = restated_expression(text)
    v = expression_value(said) if said is not None else None
    return v is not None and abs(v - gold) < 1e-9 * max(1.0, abs(gold))
