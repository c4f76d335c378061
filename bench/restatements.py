"""Where out-of-distribution answers go wrong: the first restatement of a synthetic question, read off `rema eval`
records.

``sft.teacher_style=reduce`` teaches the first message to restate the question as an expression ("In numbers:
(2 + 4) × 3.") before any arithmetic, the meta-thinker's in ReMA multi-turn, the single agent's in VRP
(``reduce_solver``: the reasoner's first reply). Each synthetic record knows its expression, so every greedy
episode falls in one class:

- ``right``: the restatement's value is the answer (the question was read right);
- ``wrong``: every operation is there but the value is not the answer (misread order or numbers);
- ``dropped``: fewer operations than the question's (a term of the story left out);
- ``none``: no restatement in the first message (with ``reduce_solver``: in the first two).

One JSON line per (label, level): the count of each class, how many of the ``right`` ones ended correct, and
the accuracy. A label ``ARM/SEED`` groups with others of the same ARM into one more line, ``ARM/mean``, the
mean count over its seeds. The folders are ``rema eval --out`` folders (``records/*.jsonl``):

    python bench/restatements.py rema_multi/s0=EVAL_DIR [ARM/SEED=EVAL_DIR ...] [--levels 4 6]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

from rema.rewards.restatement import restated_expression, restates_answer

CLASSES = ("right", "wrong", "dropped", "none")
_OPERATOR = re.compile(r"[-+×*÷/]")


def classify(first_message: str, expression: str, answer: str) -> str:
    """One of CLASSES for a first message against the question's expression (``meta["expression"]``) and answer."""
    said = restated_expression(first_message)
    if said is None:
        return "none"
    if len(_OPERATOR.findall(said)) < len(_OPERATOR.findall(expression)):
        return "dropped"
    return "right" if restates_answer(first_message, answer) else "wrong"


def count(folder: Path, levels: set[int]) -> dict[int, Counter]:
    """Per level: the class of every record's first sample (its first message that restates, among the first
    two), ``correct``, ``right_correct`` (read right and answered right) and ``n``."""
    out: dict[int, Counter] = defaultdict(Counter)
    files = sorted((folder / "records").glob("*.jsonl"))
    if not files:
        raise SystemExit(f"{folder}: no records/*.jsonl; give the --out folder of a `rema eval` run")
    for path in files:
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("level") not in levels:
                continue
            ep = rec["samples"][0]["episode"]
            texts = [t["text"] for t in ep["turns"][:2]]  # the RA's first reply restates with reduce_solver
            first = next((t for t in texts if restated_expression(t) is not None), texts[0])
            kind = classify(first, ep["meta"]["expression"], rec["answer"])
            c = out[rec["level"]]
            c[kind] += 1
            c["correct"] += bool(rec["correct"])
            c["right_correct"] += bool(rec["correct"]) and kind == "right"
            c["n"] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=EVAL_DIR")
    ap.add_argument("--levels", type=int, nargs="+", default=[4, 6])
    args = ap.parse_args()
    groups: dict[tuple[str, int], list[Counter]] = defaultdict(list)
    for item in args.runs:
        label, _, folder = item.partition("=")
        if not folder:
            raise SystemExit(f"{item!r}: write LABEL=EVAL_DIR")
        for level, c in sorted(count(Path(folder), set(args.levels)).items()):
            print(
                json.dumps(
                    {
                        "label": label,
                        "level": level,
                        **{k: c[k] for k in (*CLASSES, "right_correct")},
                        "n": c["n"],
                        "accuracy": round(c["correct"] / c["n"], 3),
                    }
                )
            )
            if "/" in label:
                groups[(label.split("/")[0], level)].append(c)
    for (arm, level), cs in groups.items():
        if len(cs) > 1:
            mean = {k: round(sum(c[k] for c in cs) / len(cs), 1) for k in (*CLASSES, "right_correct", "n")}
            acc = round(sum(c["correct"] for c in cs) / sum(c["n"] for c in cs), 3)
            print(json.dumps({"label": f"{arm}/mean", "level": level, **mean, "accuracy": acc, "seeds": len(cs)}))


if __name__ == "__main__":
    main()
