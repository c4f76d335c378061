"""Per-question evaluation statistics: pass@k, maj@k, judge swap consistency, record → Episode.

All functions here are pure (no model, no files) so they can be checked on hand-made records.

* **pass@k** uses the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models Trained on
  Code"): with ``n`` samples of which ``c`` are correct, ``pass@k = 1 - C(n-c, k) / C(n, k)`` — the chance
  that at least one of ``k`` samples drawn without replacement is correct. ``pass@1`` is the mean accuracy.
* **maj@k** is majority voting over the *first* ``k`` samples: extracted answers are grouped by their
  normalised string (``normalize_for_vote``), the largest group wins (ties: the group seen first), and the
  question counts as solved when that group's answer was graded correct. Samples with no extracted answer do
  not vote. Grouping by string is cheaper than pairwise symbolic equivalence and is what most eval
  harnesses do; ``\\frac12`` and ``0.5`` therefore vote separately (a documented limitation).
* **Judge consistency**: every pair is judged in both orders (A/B as given, then swapped). A pair is
  *consistent* when both verdicts pick the same underlying response (``A`` then ``B``, or ``B`` then ``A``).
  Accuracy is the mean over both orders, overall and per benchmark family (JudgeBench's mmlu-pro,
  livebench-reasoning, livebench-math, livecodebench; RewardBench's sections: ``rema.rewards.judge_family``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from ..rollout.episode import AgentView, Episode, Turn

_DROP = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\ |\s|\$|\\displaystyle")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")


def normalize_for_vote(answer: str | None) -> str | None:
    """Canonical string of an extracted answer for majority voting (None stays None).

    Removes spacing commands, ``$``, ``\\left``/``\\right``, ``\\text{}`` wrappers, a leading ``x=``, a
    trailing period, thousands separators, and writes plain numbers canonically (``5.0`` → ``5``,
    ``.50`` → ``0.5``); ``\\dfrac``/``\\tfrac`` become ``\\frac``.
    """
    if answer is None:
        return None
    s = _TEXT.sub(r"\1", str(answer))
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _DROP.sub("", s)
    s = _THOUSANDS.sub("", s)
    s = re.sub(r"^[a-zA-Z]=(?!=)", "", s).rstrip(".")
    if _NUMBER.fullmatch(s):
        value = float(s)
        s = str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return s or None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for ``c`` correct out of ``n`` samples (``k <= n``)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_vote(answers: Sequence[str | None], correct: Sequence[bool]) -> tuple[str | None, bool, int]:
    """Majority over extracted answers: ``(winning_answer, its_verdict, votes)``.

    The winner is the largest group of equal ``normalize_for_vote`` strings; ties go to the group whose first
    member came first. Its verdict is that first member's grade. No answer at all: ``(None, False, 0)``.
    """
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        key = normalize_for_vote(a)
        if key is not None:
            groups.setdefault(key, []).append(i)
    if not groups:
        return None, False, 0
    # dicts keep insertion order, so max() returns the earliest group among equals
    key = max(groups, key=lambda k: len(groups[k]))
    first = groups[key][0]
    return answers[first], bool(correct[first]), len(groups[key])


def default_ks(n: int) -> list[int]:
    """The k values reported for ``n`` samples: 1, 2, 4, ... below n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    ks.append(n)
    return ks


def question_stats(answers: Sequence[str | None], correct: Sequence[bool], ks: Iterable[int]) -> dict[str, float]:
    """pass@k and maj@k of one question from its samples' extracted answers and verdicts."""
    n, c = len(correct), sum(bool(x) for x in correct)
    out: dict[str, float] = {}
    for k in ks:
        if k > n:
            continue
        out[f"pass@{k}"] = pass_at_k(n, c, k)
        if k > 1:
            out[f"maj@{k}"] = float(majority_vote(answers[:k], correct[:k])[1])
    return out


def aggregate_questions(per_question: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each statistic over questions (a key missing for some questions averages over the rest)."""
    sums: dict[str, list[float]] = {}
    for stats in per_question:
        for key, value in stats.items():
            sums.setdefault(key, []).append(value)
    return {key: sum(vs) / len(vs) for key, vs in sums.items()}


# --- judge task -----------------------------------------------------------------------------------------


def swap_consistent(verdict_original: str | None, verdict_swapped: str | None) -> bool:
    """True when the two orders pick the same underlying response (A↔B after swapping)."""
    return (verdict_original, verdict_swapped) in (("A", "B"), ("B", "A"))


def judge_summary(pairs: Sequence[dict]) -> dict[str, float]:
    """Judge metrics over pair records holding ``original``/``swapped`` verdicts and correctness.

    Each pair dict needs ``verdict_original``, ``verdict_swapped``, ``correct_original``,
    ``correct_swapped``. Returns ``acc`` (mean over both orders), ``acc/original``, ``acc/swapped``,
    ``acc/both`` (right in both orders), ``consistency`` (same response picked in both orders),
    ``verdict_found`` (share of responses with a verdict) and ``verdict_A`` (share of the verdicts found that
    pick position A: 0.5 for a judge without position bias, since each pair is judged in both orders).
    """
    n = len(pairs)
    if n == 0:
        return {}
    acc_o = sum(bool(p["correct_original"]) for p in pairs) / n
    acc_s = sum(bool(p["correct_swapped"]) for p in pairs) / n
    verdicts = [v for p in pairs for v in (p["verdict_original"], p["verdict_swapped"]) if v is not None]
    out = {
        "acc": (acc_o + acc_s) / 2,
        "acc/original": acc_o,
        "acc/swapped": acc_s,
        "acc/both": sum(bool(p["correct_original"] and p["correct_swapped"]) for p in pairs) / n,
        "consistency": sum(swap_consistent(p["verdict_original"], p["verdict_swapped"]) for p in pairs) / n,
        "verdict_found": len(verdicts) / (2 * n),
    }
    if verdicts:
        out["verdict_A"] = sum(v == "A" for v in verdicts) / len(verdicts)
    return out


def judge_family_summary(pairs: Sequence[dict]) -> dict[str, float]:
    """``judge_summary``'s accuracy and consistency per benchmark family (the pairs' ``family``; pairs without
    one are left out): ``acc/family_<F>``, ``consistency/family_<F>``, ``questions/family_<F>``."""
    by: dict[str, list[dict]] = {}
    for p in pairs:
        if p.get("family"):
            by.setdefault(str(p["family"]), []).append(p)
    out: dict[str, float] = {}
    for family, group in sorted(by.items()):
        s = judge_summary(group)
        out.update(
            {
                f"acc/family_{family}": s["acc"],
                f"consistency/family_{family}": s["consistency"],
                f"questions/family_{family}": float(len(group)),
            }
        )
    return out


# --- records ----------------------------------------------------------------------------------------------


def episode_from_dict(d: dict) -> Episode:
    """Rebuild an ``Episode`` from ``Episode.to_dict()`` (without token views) so ``episode_metrics`` runs.

    Token ids are not stored in records; each turn gets ``n_tokens`` placeholder ids (counts stay right),
    and ``views`` gets one empty entry per agent that spoke or was rewarded (``episode_metrics`` reads the
    agent set from it).
    """
    turns = []
    for t in d.get("turns", []):
        n_tokens = t.get("n_tokens", len(t.get("token_ids", [])))
        turns.append(
            Turn(
                agent=t["agent"],
                index=t["index"],
                text=t.get("text", ""),
                token_ids=list(t.get("token_ids", [0] * n_tokens)),
                logprobs=list(t.get("logprobs", [])),
                finish_reason=t.get("finish_reason", "stop"),
                context_len=t.get("context_len", 0),
                action=t.get("action"),
                format_ok=t.get("format_ok"),
            )
        )
    agents = [a for a in ("mta", "ra") if any(t.agent == a for t in turns) or a in d.get("reward", {})]
    if d.get("method", "").startswith("rema") and "mta" not in agents:
        agents.insert(0, "mta")
    return Episode(
        episode_id=d.get("episode_id", 0),
        problem_id=str(d.get("problem_id", "")),
        question=d.get("question", ""),
        answer=str(d.get("answer", "")),
        sample_index=d.get("sample_index", 0),
        method=d.get("method", ""),
        turns=turns,
        views={a: AgentView(a) for a in agents},
        end_code=d.get("end_code"),
        reward=dict(d.get("reward", {})),
        reward_parts={k: dict(v) for k, v in d.get("reward_parts", {}).items()},
        meta=dict(d.get("meta", {})),
    )


def token_counts(ep: Episode) -> dict[str, int]:
    """Generated tokens per agent and in total for one episode."""
    out = {agent: sum(len(t.token_ids) for t in ep.turns_of(agent)) for agent in ep.views}
    out["total"] = sum(len(t.token_ids) for t in ep.turns)
    return out
