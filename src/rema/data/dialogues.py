"""Cold-start dialogues (docs/design.md §7): reading them from JSONL, and making them from a model's own correct
episodes.

A dialogue is what the SFT step trains on: a question, its reference answer and the messages of both roles in
order. One JSON object per line::

    {"question": "What is 3 + 4?", "answer": "7",
     "turns": [{"agent": "mta", "text": "Add the two numbers."},
               {"agent": "ra", "text": "3 + 4 = 7."},
               {"agent": "mta", "text": "Your result is correct. [FINISH]"},
               {"agent": "ra", "text": "The final answer is $\\\\boxed{7}$."}]}

Two-agent methods alternate ``mta``, ``ra``, … and end with ``ra``; single-turn ones have one round; the
single-agent baselines (VRP, MRP) have one ``ra`` message. ``id`` and ``meta`` are optional. A judge-task
dialogue (``rollout.task=judge``) gives the pair instead of a question, and its label as the answer::

    {"prompt": "Name a prime above 10.", "response_a": "9", "response_b": "11", "answer": "B",
     "turns": [{"agent": "mta", "text": "Check whether each number is prime. [FINISH]"},
               {"agent": "ra", "text": "9 = 3 * 3 is not prime; 11 is. [[B]]"}]}

(it is shown to the agents as ``prompts.JUDGE_QUESTION``, exactly as in RL).

Self-distillation (``sft.data: self``) needs no teacher: the model samples episodes on training questions,
and :func:`cold_start_dialogue` turns an episode whose reasoner reached the reference answer into a short,
clean dialogue in the method's format. Every kept message is a prefix of whole sentences the model wrote
itself, cut where the format asks:

* the meta-thinker's plan keeps its longest prefix that mentions only numbers of the question and does not
  state an answer (a plan never computes, so the MTA is not taught to leak);
* the reasoner's message keeps its shortest prefix that already holds the correct answer (what follows is
  often the small model rambling on to its token limit);
* multi-turn: the MTA then says ``prompts.COLD_START_FINISH`` and the RA answers
  ``prompts.COLD_START_ANSWER`` (the reference answer in ``\\boxed{}``); single round: the boxed sentence is
  appended to the reasoner's message when it has no box.

The judge task works the same way with the verdict in place of the box: an RA message is correct when its
last ``[[A]]``/``[[B]]`` is the label, the plan must not give a verdict, and the closing messages are
``prompts.COLD_START_JUDGE_FINISH`` and ``prompts.COLD_START_VERDICT``.

Untrained small models almost never box an answer or say [FINISH], so RL alone has nothing to reinforce;
these dialogues teach the format while keeping the model's own words.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..prompts import (
    COLD_START_ANSWER,
    COLD_START_FINISH,
    COLD_START_JUDGE_FINISH,
    COLD_START_VERDICT,
    FINISH_MARKER,
    JUDGE_QUESTION,
)
from ..rewards.format_terms import last_verdict, mta_format
from .loaders import JUDGE_PARTS, judge_label

"""A judge dialogue's pair: top-level keys of its row, kept in ``Dialogue.meta`` (where the rollout reads them)."""

AGENTS = ("mta", "ra")


class DialogueError(ValueError):
    """A dialogue file or row is malformed; the message names the file, line and what to fix."""


@dataclass
class Dialogue:
    """One cold-start dialogue: the messages of both roles, in the order they are spoken."""

    question: str
    answer: str
    turns: list[tuple[str, str]]
    """``(agent, text)`` pairs, agent ``mta`` or ``ra``."""
    id: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def rounds(self) -> int:
        return sum(agent == "ra" for agent, _ in self.turns)

    def to_dict(self) -> dict:
        return {"id": self.id, "question": self.question, "answer": self.answer,
                "turns": [{"agent": a, "text": t} for a, t in self.turns], "meta": self.meta}


def check_dialogue(d: Dialogue, *, two_agents: bool, multi_turn: bool, max_turns: int) -> str | None:
    """What is wrong with ``d`` for a method (None when it fits): order of roles, rounds, [FINISH] placement."""
    agents = [a for a, _ in d.turns]
    if not agents:
        return "no turns"
    if any(a not in AGENTS for a in agents):
        return f"agents must be 'mta' or 'ra', got {sorted(set(agents) - set(AGENTS))}"
    if any(not t.strip() for _, t in d.turns):
        return "a turn has empty text"
    if not two_agents:
        return None if agents == ["ra"] else "a single-agent method (vrp, mrp) takes exactly one 'ra' turn"
    if agents != ["mta", "ra"] * (len(agents) // 2) or len(agents) % 2:
        return "two-agent turns must alternate mta, ra, mta, ra, ... and end with ra"
    rounds = len(agents) // 2
    if not multi_turn and rounds != 1:
        return f"single-turn methods take one round (mta, ra), got {rounds}"
    if multi_turn and rounds > max_turns:
        return f"{rounds} rounds exceed rollout.max_turns={max_turns}"
    mta_texts = [t for a, t in d.turns if a == "mta"]
    if multi_turn and any(FINISH_MARKER in t for t in mta_texts[:-1]):
        return f"{FINISH_MARKER} before the last MTA message would end the episode early"
    return None


def load_dialogues(path: str | Path, *, two_agents: bool, multi_turn: bool, max_turns: int) -> list[Dialogue]:
    """Read and check a dialogue JSONL file; the first bad row raises :class:`DialogueError` with its line."""
    path = Path(path)
    if not path.is_file():
        raise DialogueError(f"dialogue file not found: {path} (sft.data takes a JSONL file or 'self')")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DialogueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    out = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): a message may hold U+2028 and the like
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DialogueError(f"{where}: not valid JSON ({err.msg})") from None
        if isinstance(row, dict) and any(k in row for k in JUDGE_PARTS):
            row = _judge_row(row, where)
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not isinstance(row.get("turns"), list):
            raise DialogueError(f"{where}: expected an object with 'question' (text) and 'turns' (a list of "
                                "{'agent': 'mta'|'ra', 'text': ...})")
        turns = []
        for i, t in enumerate(row["turns"]):
            if not isinstance(t, dict) or not isinstance(t.get("agent"), str) or not isinstance(t.get("text"), str):
                raise DialogueError(f"{where}: turn {i} must be {{'agent': 'mta'|'ra', 'text': ...}}, got {t!r:.80}")
            turns.append((t["agent"], t["text"]))
        if not isinstance(row.get("meta") or {}, dict):
            raise DialogueError(f"{where}: 'meta' must be an object, got {type(row['meta']).__name__}")
        d = Dialogue(row["question"], str(row.get("answer", "")), turns, str(row.get("id", n)), row.get("meta") or {})
        problem = check_dialogue(d, two_agents=two_agents, multi_turn=multi_turn, max_turns=max_turns)
        if problem:
            raise DialogueError(f"{where}: {problem}")
        out.append(d)
    if not out:
        raise DialogueError(f"{path}: no dialogues")
    return out


def _judge_row(row: dict, where: str) -> dict:
    """A judge dialogue row with its pair moved into ``meta`` and its label as the answer ('A' or 'B')."""
    parts = {k: row.get(k) for k in JUDGE_PARTS}
    missing = [k for k, v in parts.items() if not isinstance(v, str) or not v.strip()]
    if missing:
        raise DialogueError(f"{where}: a judge dialogue needs {', '.join(JUDGE_PARTS)} as text; missing or empty: "
                            f"{', '.join(missing)}")
    label = judge_label(row.get("answer"))
    if label is None:
        raise DialogueError(f"{where}: a judge dialogue's answer is its label, 'A' or 'B'; got {row.get('answer')!r}")
    meta = {**(row.get("meta") or {}), **parts}
    return {**row, "question": row.get("question") or JUDGE_QUESTION.format(**parts), "answer": label, "meta": meta}


def save_dialogues(dialogues: Sequence[Dialogue], path: str | Path) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(d.to_dict(), ensure_ascii=False) + "\n" for d in dialogues), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------- self-distillation

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def sentence_prefixes(text: str, *, complete: bool) -> list[str]:
    """Prefixes of ``text`` that end at a sentence end or line break, shortest first, stripped, non-empty.

    ``complete=False`` (the message hit its token limit): the unfinished last sentence is never included.
    """
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if complete:
        ends.append(len(text))
    out: list[str] = []
    for e in ends:
        p = text[:e].strip()
        if p and (not out or p != out[-1]):
            out.append(p)
    return out


def clean_plan(text: str, question: str, answer: str, *, complete: bool, task: str = "math") -> str:
    """The longest whole-sentence prefix of an MTA message that computes nothing: every number in it is one
    of the question's, and it states no answer (``mta_format``; for the judge task no ``[[A]]``/``[[B]]``
    verdict either). "" when even the first sentence fails."""
    allowed = set(_NUMBER.findall(question))
    for p in reversed(sentence_prefixes(text, complete=complete)):
        if task == "judge" and last_verdict(p) is not None:
            continue
        if set(_NUMBER.findall(p)) <= allowed and mta_format(p, gold=answer)[1]["leak"] == 0:
            return p
    return ""


def _closing(task: str, gold: str) -> tuple[str, str, Callable[[str], bool]]:
    """(the MTA's closing message, the RA's final message, "does this RA text already give the final
    answer") of a cold-start dialogue of ``task``."""
    if task == "judge":
        return COLD_START_JUDGE_FINISH, COLD_START_VERDICT.format(answer=gold), lambda t: last_verdict(t) is not None
    return COLD_START_FINISH, COLD_START_ANSWER.format(answer=gold), lambda t: "\\boxed" in t


def cold_start_dialogue(ep, answer_turn: int, answer_text: str, *, two_agents: bool, multi_turn: bool,
                        max_turns: int, task: str = "math") -> Dialogue | None:
    """The dialogue made from ``ep`` whose RA message ``answer_turn`` (cut to ``answer_text``) is correct.

    None when the episode cannot give a clean dialogue: a plan that computes from its first sentence, an
    earlier RA message with no whole sentence, or more rounds than ``max_turns`` allows. ``task`` (``math`` or
    ``judge``) picks the closing messages (a boxed answer or a verdict).
    """
    gold = ep.answer
    finish, final, answered = _closing(task, gold)
    if not two_agents:
        text = answer_text if answered(answer_text) else f"{answer_text}\n\n{final}"
        return Dialogue(ep.question, gold, [("ra", text)], f"{ep.problem_id}/{ep.sample_index}", dict(ep.meta))
    rounds = answer_turn + 1 + (1 if multi_turn else 0)
    if (not multi_turn and answer_turn != 0) or rounds > max_turns:
        return None
    mta, ra = ep.turns_of("mta"), ep.turns_of("ra")
    turns: list[tuple[str, str]] = []
    for k in range(answer_turn + 1):
        plan = clean_plan(mta[k].text.replace(FINISH_MARKER, ""), ep.question, gold, complete=not mta[k].truncated,
                          task=task)
        if not plan:
            return None
        if k < answer_turn:
            reply = sentence_prefixes(ra[k].text, complete=not ra[k].truncated)
            if not reply:
                return None
            turns += [("mta", plan), ("ra", reply[-1])]
        elif multi_turn:
            turns += [("mta", plan), ("ra", answer_text), ("mta", finish), ("ra", final)]
        else:
            text = answer_text if answered(answer_text) else f"{answer_text}\n\n{final}"
            turns += [("mta", plan), ("ra", text)]
    return Dialogue(ep.question, gold, turns, f"{ep.problem_id}/{ep.sample_index}", dict(ep.meta))


def dialogues_from_episodes(
    episodes: Sequence,
    grade: Callable[[list[str], list[str]], list[bool]],
    *,
    two_agents: bool,
    multi_turn: bool,
    max_turns: int,
    max_per_question: int,
    task: str = "math",
) -> tuple[list[Dialogue], dict[str, float]]:
    """Cold-start dialogues from sampled episodes (see the module docstring), at most ``max_per_question``
    distinct ones per question; ``grade(responses, answers) -> correct`` is called once, batched.

    Returns ``(dialogues, stats)``; stats count the episodes with a correct RA message
    (``with_correct_answer``), the dialogues kept and those dropped for a computing plan or a duplicate.
    """
    cands: list[tuple[int, int, str]] = []  # (episode index, RA turn, prefix)
    for i, ep in enumerate(episodes):
        for k, turn in enumerate(ep.turns_of("ra")):
            # whole-sentence prefixes, shortest first: the first one graded correct is kept
            cands += [(i, k, p) for p in sentence_prefixes(turn.text, complete=not turn.truncated)]
    correct = grade([c[2] for c in cands], [episodes[c[0]].answer for c in cands]) if cands else []
    first: dict[int, tuple[int, str]] = {}
    for (i, k, p), ok in zip(cands, correct):
        if ok and i not in first:  # candidates are in turn order, shortest prefix first
            first[i] = (k, p)
    kept: list[Dialogue] = []
    per_question: dict[str, set] = {}
    unclean = duplicates = 0
    for i, (k, p) in sorted(first.items()):
        ep = episodes[i]
        d = cold_start_dialogue(ep, k, p, two_agents=two_agents, multi_turn=multi_turn, max_turns=max_turns,
                                task=task)
        if d is None:
            unclean += 1
            continue
        seen = per_question.setdefault(ep.problem_id, set())
        key = tuple(d.turns)
        if key in seen or len(seen) >= max_per_question:
            duplicates += 1
            continue
        seen.add(key)
        kept.append(d)
    stats = {"episodes": float(len(episodes)), "with_correct_answer": float(len(first)),
             "dialogues": float(len(kept)), "dropped_unclean": float(unclean),
             "dropped_duplicate_or_cap": float(duplicates), "questions": float(len(per_question))}
    return kept, stats
