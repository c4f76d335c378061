"""Tables and verdict lines of each experiment, read from its finished runs' ``metrics.jsonl``.

Each ``<experiment>(results)`` function takes ``{arm name: [Run, ...]}`` (runs in seed order; an unseeded arm's
one run repeated for every seed) and returns an :class:`Analysis`: a Markdown table (mean ± 95% interval over
seeds), the verdict lines (the paper's claim, what these runs show, and one word: :func:`stats.direction`), and
the numbers behind them for ``summary.json``. Nothing here is tuned to any result: the rules are written once,
before the runs, and say "inconclusive" when the seeds cannot separate two arms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..data.benchmarks import dataset_names
from .stats import Estimate, direction, estimate, paired_difference

GOAL_POINTS = 0.05
"""Issue goal for table 1: ReMA at least VRP_RL + 5 points out of distribution (mean over seeds)."""

COLLAPSE_DROP = 0.5
"""fig5-turns: a run collapses when its smoothed training reward falls below this fraction of its best so far and
stays there to the end (after the best had reached :data:`COLLAPSE_MIN_BEST`)."""
COLLAPSE_MIN_BEST = 0.1

EMPTY_COLLAPSE_SHARE = 0.8
"""fig4: the meta-thinker has collapsed to EMPTY when EMPTY is at least this share of its actions at the end."""


@dataclass
class Run:
    """One finished run of a grid: its arm, seed, folder, metric records and resolved config (a dict)."""

    arm: str
    seed: int
    run_dir: Path
    rows: list[dict]
    config: dict
    minutes: float | None = None

    def eval_prefix(self, index: int) -> str | None:
        """The metric prefix of the ``index``-th ``data.eval`` set (``eval/`` with one set, ``eval/<name>/`` with
        several), or None when the run has no such set."""
        specs = self.config.get("data", {}).get("eval") or []
        specs = [specs] if isinstance(specs, str) else list(specs)
        if index >= len(specs):
            return None
        return "eval/" if len(specs) == 1 else f"eval/{dataset_names(specs)[index]}/"

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of a metric over the run (records without it skipped)."""
        pts = [(r["step"], r[key]) for r in self.rows if key in r and r[key] is not None]
        return [p[0] for p in pts], [float(p[1]) for p in pts]

    def final(self, key: str) -> float:
        """The metric's last logged value (NaN when never logged)."""
        _, ys = self.curve(key)
        return ys[-1] if ys else float("nan")

    def eval_final(self, index: int, metric: str = "acc") -> float:
        prefix = self.eval_prefix(index)
        return self.final(prefix + metric) if prefix else float("nan")

    def ood_final(self, metric: str = "acc") -> float:
        """The mean over the out-of-distribution sets (every ``data.eval`` set after the first) of their last
        ``metric`` (NaN without such a set)."""
        specs = self.config.get("data", {}).get("eval") or []
        values = [self.eval_final(i, metric) for i in range(1, len(specs) if isinstance(specs, list) else 1)]
        return sum(values) / len(values) if values else float("nan")

    def samples_per_step(self) -> int:
        """Episodes per RL step: questions per step × samples per question."""
        t, r = self.config.get("train", {}), self.config.get("rollout", {})
        return int(t.get("questions_per_step", 0)) * int(r.get("samples_per_question", 0))


Results = dict[str, list[Run]]


@dataclass
class Analysis:
    """What an experiment's runs show."""

    header: list[str]
    rows: list[list[str]]
    verdicts: list[str]
    numbers: dict = field(default_factory=dict)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def _est(runs: Sequence[Run], fn) -> Estimate:
    return estimate([fn(r) for r in runs])


def _pts(e: Estimate) -> str:
    """A difference in points with its interval: ``+4.4 points (95% CI -1.2 to +10.0)``."""
    if e.n < 2:
        return f"{e.mean * 100:+.1f} points (one seed: no interval)"
    return f"{e.mean * 100:+.1f} points (95% CI {e.low * 100:+.1f} to {e.high * 100:+.1f})"


def compare(results: Results, a: str, b: str, fn, *, what: str, claim: str, margin: float = 0.0) -> tuple[str, dict]:
    """A verdict line for "arm ``a`` beats arm ``b`` on ``fn(run)``", paired by seed."""
    ra, rb = results.get(a, []), results.get(b, [])
    n = min(len(ra), len(rb))
    diff = paired_difference([fn(r) for r in ra[:n]], [fn(r) for r in rb[:n]])
    word = direction(diff, margin=margin)
    line = (
        f"{claim} — here, {what}: {_est(ra, fn).fmt()} vs {_est(rb, fn).fmt()}, {_pts(diff)} over {n} "
        f"seed(s): **{word}**"
    )
    return line, {
        "a": a,
        "b": b,
        "what": what,
        "diff": diff.mean,
        "low": diff.low,
        "high": diff.high,
        "n": n,
        "verdict": word,
    }


def _levels(run: Run, index: int = 0) -> list[int]:
    prefix = run.eval_prefix(index) or "eval/"
    keys = {k for r in run.rows for k in r if k.startswith(prefix + "acc/level_")}
    return sorted(int(k.rsplit("_", 1)[1]) for k in keys if k.rsplit("_", 1)[1].isdigit())


# --- table 1 ------------------------------------------------------------------------------------------------


def table1(results: Results) -> Analysis:
    """In- and out-of-distribution accuracy per method; verdicts: ReMA vs each baseline out of distribution
    (and the +5 points goal), ReMA vs VRP_RL in distribution, ReMA vs the single agent taught the meta-thinker's
    moves (``vrp_rl_reduce``: is the gain the second agent's or the format's?), RL vs prompting."""
    header = ["method", "in-distribution", "out-of-distribution", "boxed (OOD)", "seeds"]
    rows = []
    for arm, runs in results.items():
        rows.append(
            [
                arm,
                _est(runs, lambda r: r.eval_final(0)).fmt(),
                _est(runs, lambda r: r.ood_final()).fmt(),
                _est(runs, lambda r: r.ood_final("boxed_rate")).fmt(),
                str(len({r.seed for r in runs})),
            ]
        )
    ood = lambda r: r.ood_final()  # noqa: E731
    ind = lambda r: r.eval_final(0)  # noqa: E731
    remas = [a for a in ("rema_multi", "rema_single") if results.get(a)]
    best = max(remas, key=lambda a: _est(results[a], ood).mean) if remas else None
    # (key, a, b, metric, what, the claim it tests), in the order the verdicts are read
    claims = [
        (
            "rema_vs_vrp_rl_ood",
            best,
            "vrp_rl",
            ood,
            "out of distribution",
            "Paper: ReMA beats VRP_RL, most out of distribution",
        ),
        ("rema_vs_vrp_rl_id", best, "vrp_rl", ind, "in distribution", "Paper: ReMA is at least on par in distribution"),
        (
            "rema_vs_mrp_rl_ood",
            best,
            "mrp_rl",
            ood,
            "out of distribution",
            "Paper: two agents beat one agent prompted to meta-think",
        ),
        (
            "rema_vs_vrp_rl_reduce_ood",
            best,
            "vrp_rl_reduce",
            ood,
            "(one agent taught the same moves) out of distribution",
            "Control: the gain is the second agent's, not only the meta-thinker's moves",
        ),
        ("vrp_rl_vs_vrp_id", "vrp_rl", "vrp", ind, "in distribution", "Paper: RL improves on prompting"),
    ]
    verdicts, numbers = [], {}
    for key, a, b, fn, where, claim in claims:
        if a and results.get(a) and results.get(b):
            line, numbers[key] = compare(results, a, b, fn, what=f"{a} vs {b} {where}", claim=claim)
            verdicts.append(line)
        if key == "rema_vs_vrp_rl_ood" and key in numbers:
            verdicts.append(_goal_line(numbers[key], best))
    return Analysis(header, rows, verdicts, numbers)


def _goal_line(n: dict, best: str) -> str:
    """The goal line, ReMA ≥ VRP_RL + GOAL_POINTS out of distribution: ``met`` when the mean difference reaches
    it and its 95% interval is clear of zero, ``met by the mean only`` when the mean reaches it but the interval
    holds zero (or one seed gives none), else ``not met``. ``n``: the numbers of ``compare``."""
    diff = n["diff"]
    if diff < GOAL_POINTS:
        word, why = "not met", ""
    elif n["n"] >= 2 and n["low"] > 0:
        word, why = "met", ""
    else:
        word = "met by the mean only"
        why = (
            ", one seed: no interval"
            if n["n"] < 2
            else f", but its 95% interval ({n['low'] * 100:+.1f} to {n['high'] * 100:+.1f}) holds zero: more seeds or "
            "fresh questions (`--seeds`, `--ood`) decide"
        )
    return (
        f"Goal (ReMA ≥ VRP_RL + {GOAL_POINTS * 100:.0f} points OOD, mean over seeds): **{word}** "
        f"({diff * 100:+.1f} points{why}; {best} is the better ReMA arm by its OOD mean)"
    )


# --- fig. 3 -------------------------------------------------------------------------------------------------


def fig3(results: Results) -> Analysis:
    """Final held-out accuracy per difficulty level per arm; verdicts: each guided arm vs RL from base overall,
    and whether the gain of RL under the frozen MTA is larger on the hardest level than on the easiest."""
    any_run = next((r for runs in results.values() for r in runs), None)
    levels = _levels(any_run) if any_run else []
    header = ["arm", "overall", *[f"level {lv}" for lv in levels]]
    rows = [
        [
            arm,
            _est(runs, lambda r: r.eval_final(0)).fmt(),
            *[_est(runs, lambda r, lv=lv: r.eval_final(0, f"acc/level_{lv}")).fmt() for lv in levels],
        ]
        for arm, runs in results.items()
    ]
    verdicts, numbers = [], {}
    for arm in ("rl_from_sft", "rl_under_mta"):
        if results.get(arm) and results.get("rl_from_base"):
            line, numbers[f"{arm}_vs_base"] = compare(
                results,
                arm,
                "rl_from_base",
                lambda r: r.eval_final(0),
                what=f"{arm} vs rl_from_base, all levels",
                claim="Paper: meta-thinking data helps RL",
            )
            verdicts.append(line)
    if levels and results.get("rl_under_mta") and results.get("rl_from_base"):
        hard, easy = levels[-1], levels[0]

        def gap(lv):
            return lambda r: r.eval_final(0, f"acc/level_{lv}")

        line, numbers["hard_gap"] = compare(
            results,
            "rl_under_mta",
            "rl_from_base",
            gap(hard),
            what=f"level {hard} (hardest)",
            claim="Paper: the gain is largest on the hardest questions",
        )
        easy_diff = paired_difference(
            [gap(easy)(r) for r in results["rl_under_mta"]],
            [gap(easy)(r) for r in results["rl_from_base"]][: len(results["rl_under_mta"])],
        )
        verdicts.append(line + f" (level {easy}, the easiest: {easy_diff.mean * 100:+.1f} points)")
        numbers["easy_gap"] = easy_diff.mean
    return Analysis(header, rows, verdicts, numbers)


# --- fig. 4 -------------------------------------------------------------------------------------------------

ACTIONS = ("DECOMPOSE", "REWRITE", "EMPTY", "INVALID")


def _tail_mean(run: Run, key: str, k: int = 3) -> float:
    """Mean of the last ``k`` logged values of ``key`` (NaN when never logged)."""
    _, ys = run.curve(key)
    return sum(ys[-k:]) / len(ys[-k:]) if ys else float("nan")


def _head_mean(run: Run, key: str, k: int = 3, empty: float = float("nan")) -> float:
    """Mean of the first ``k`` logged values of ``key`` (``empty`` when never logged)."""
    _, ys = run.curve(key)
    return sum(ys[:k]) / len(ys[:k]) if ys else empty


def _difficulty_awareness(runs: list[Run]) -> tuple[Estimate, Estimate, Estimate]:
    """The mean level of the questions behind DECOMPOSE and behind EMPTY over the last steps, and their difference
    seed by seed (only seeds that chose both), whose interval decides the verdict as for any other claim."""
    dec = [_tail_mean(r, "train/action_level/DECOMPOSE/mean") for r in runs]
    emp = [_tail_mean(r, "train/action_level/EMPTY/mean") for r in runs]
    both = [(d, e) for d, e in zip(dec, emp) if not (math.isnan(d) or math.isnan(e))]
    return estimate(dec), estimate(emp), paired_difference([d for d, _ in both], [e for _, e in both])


def fig4(results: Results) -> Analysis:
    """Each action's share at the start and the end of training, and the mean level of its questions; verdicts:
    collapse to EMPTY (share ≥ :data:`EMPTY_COLLAPSE_SHARE` over the last steps; *inconclusive* when invalid
    messages take that share: no action was chosen) and difficulty awareness (DECOMPOSE chosen for harder
    questions than EMPTY)."""
    runs = [r for rs in results.values() for r in rs]
    header = ["action", "share, first 3 steps", "share, last 3 steps", "mean level of its questions (last 3)"]
    rows = []
    for a in ACTIONS:
        first = estimate([_head_mean(r, f"train/actions/{a}", empty=0.0) for r in runs])
        last = estimate(
            [_tail_mean(r, f"train/actions/{a}") if r.curve(f"train/actions/{a}")[1] else 0.0 for r in runs]
        )
        rows.append(
            [
                a,
                first.fmt(),
                last.fmt(),
                estimate([_tail_mean(r, f"train/action_level/{a}/mean") for r in runs]).fmt(scale=1, unit=""),
            ]
        )
    empty = estimate([_tail_mean(r, "train/actions/EMPTY") if r.curve("train/actions/EMPTY")[1] else 0.0 for r in runs])
    collapsed = not math.isnan(empty.mean) and empty.mean >= EMPTY_COLLAPSE_SHARE
    dec, emp, aware = _difficulty_awareness(runs)
    found = "collapsed to EMPTY, as the paper found for its small model" if collapsed else "no collapse to EMPTY"
    invalid = estimate(
        [_tail_mean(r, "train/actions/INVALID") if r.curve("train/actions/INVALID")[1] else 0.0 for r in runs]
    )
    if not math.isnan(invalid.mean) and invalid.mean >= EMPTY_COLLAPSE_SHARE:  # no choice was made at all
        found = f"inconclusive: {invalid.fmt()} of its messages are no valid action, so it chose nothing"
    verdicts = [
        f"Paper: a 1B meta-thinker collapses to EMPTY — here (135M), EMPTY is {empty.fmt()} of the actions over the "
        f"last 3 steps: **{found}**",
        f"Paper: an 8B meta-thinker picks actions by difficulty (DECOMPOSE for harder questions than EMPTY) — here, "
        f"mean level behind DECOMPOSE {dec.fmt(scale=1, unit='')} vs EMPTY {emp.fmt(scale=1, unit='')}, "
        f"a difference of {aware.fmt(scale=1, unit=' levels')} over {aware.n} seed(s) that chose both: "
        f"**{direction(aware)}**",
    ]
    return Analysis(
        header,
        rows,
        verdicts,
        {
            "empty_share_end": empty.mean,
            "invalid_share_end": invalid.mean,
            "collapsed": collapsed,
            "decompose_level": dec.mean,
            "empty_level": emp.mean,
            "decompose_minus_empty_level": aware.mean,
        },
    )


# --- fig. 5 -------------------------------------------------------------------------------------------------


def smooth(values: Sequence[float], k: int = 3) -> list[float]:
    """Trailing mean over ``k`` values (the first ones over what exists)."""
    return [sum(values[max(0, i - k + 1) : i + 1]) / len(values[max(0, i - k + 1) : i + 1]) for i in range(len(values))]


def collapse_step(steps: Sequence[int], reward: Sequence[float]) -> int | None:
    """The first step from which the smoothed training reward stays below :data:`COLLAPSE_DROP` × its best so
    far (that best at least :data:`COLLAPSE_MIN_BEST`) to the end of the run; None when it never does."""
    sm = smooth(reward)
    best, start = float("-inf"), None
    for step, value in zip(steps, sm):
        if best >= COLLAPSE_MIN_BEST and value < COLLAPSE_DROP * best:
            start = step if start is None else start
        else:
            start = None
        best = max(best, value)
    return start


def _reward_key(run: Run) -> str:
    return "train/reward/ra"


def fig5_turns(results: Results) -> Analysis:
    """Training reward (first vs last 3 steps) and held-out accuracy (start vs end) per budget; collapse marks."""
    header = ["budget", "train reward, first 3", "train reward, last 3", "held-out, start", "held-out, end", "collapse"]
    rows, verdicts, numbers = [], [], {}
    train_gain, eval_gain = [], []
    for arm, runs in results.items():
        first = estimate([_head_mean(r, _reward_key(r), empty=0.0) for r in runs])
        last = estimate([_tail_mean(r, _reward_key(r)) for r in runs])
        start = estimate(
            [
                r.curve((r.eval_prefix(0) or "eval/") + "acc")[1][0]
                if r.curve((r.eval_prefix(0) or "eval/") + "acc")[1]
                else float("nan")
                for r in runs
            ]
        )
        end = estimate([r.eval_final(0) for r in runs])
        collapses = [collapse_step(*r.curve(_reward_key(r))) for r in runs]
        marks = ", ".join(f"seed {r.seed}: step {c}" for r, c in zip(runs, collapses) if c is not None) or "none"
        rows.append([arm, first.fmt(1, ""), last.fmt(1, ""), start.fmt(), end.fmt(), marks])
        numbers[arm] = {
            "collapses": collapses,
            "train_gain": last.mean - first.mean,
            "eval_gain": end.mean - start.mean,
        }
        train_gain.append(last.mean - first.mean)
        eval_gain.append(end.mean - start.mean)
    n_col = sum(1 for v in numbers.values() for c in v["collapses"] if c is not None)
    if results:
        verdicts.append(
            f"Paper: training reward rises while the held-out average barely moves — here, mean over budgets: "
            f"train reward {sum(train_gain) / len(train_gain):+.3f}, held-out accuracy "
            f"{sum(eval_gain) / len(eval_gain) * 100:+.1f} points: **"
            + (
                "agrees"
                if sum(train_gain) > 0 and abs(sum(eval_gain) / len(eval_gain)) < abs(sum(train_gain) / len(train_gain))
                else "does not match"
            )
            + "**"
        )
        verdicts.append(
            f"Paper: training is unstable and collapses under some budgets — here: **{n_col} collapse(s)** "
            f"in {sum(len(r) for r in results.values())} runs (rule: smoothed reward < "
            f"{COLLAPSE_DROP:.0%} of its best, to the end)"
        )
    return Analysis(header, rows, verdicts, numbers)


def samples_to(run: Run, target: float) -> float:
    """Samples seen until the smoothed training accuracy first reaches ``target`` (inf when never)."""
    steps, acc = run.curve("train/acc")
    for step, value in zip(steps, smooth(acc)):
        if value >= target:
            return step * run.samples_per_step()
    return float("inf")


def _auc(run: Run) -> float:
    """Mean training accuracy over the run (area under its learning curve: higher = learns sooner)."""
    _, acc = run.curve("train/acc")
    return sum(acc) / len(acc) if acc else float("nan")


def fig5_ablation(results: Results) -> Analysis:
    """Mean training accuracy over the run (area under the curve), final training accuracy and clip fraction per
    arm; verdicts: shared vs separate and turn vs token at one mini-batch (only the normalisation differs: the
    ratio is 1) and at several (the ratio and the clip act)."""
    header = ["arm", "mean train acc (AUC)", "train acc, last 3", "clip fraction (mean)", "seeds"]
    rows = []
    for arm, runs in results.items():
        clip = estimate([sum(v) / len(v) if (v := r.curve("stats/clip_frac")[1]) else float("nan") for r in runs])
        rows.append(
            [
                arm,
                _est(runs, _auc).fmt(),
                _est(runs, lambda r: _tail_mean(r, "train/acc")).fmt(),
                clip.fmt(100, "%"),
                str(len(runs)),
            ]
        )
    verdicts, numbers = [], {}
    for mb in (1, 4):
        note = "ratio ≡ 1: only the normalisation differs" if mb == 1 else "the ratio and the clip act"
        pairs = [
            (f"shared_turn_mb{mb}", f"separate_turn_mb{mb}", "Paper: shared weights are more sample-efficient"),
            (f"shared_turn_mb{mb}", f"shared_token_mb{mb}", "Paper: the turn-level ratio is more sample-efficient"),
        ]
        for a, b, claim in pairs:
            if results.get(a) and results.get(b):
                line, numbers[f"{a}_vs_{b}"] = compare(
                    results,
                    a,
                    b,
                    _auc,
                    what=f"{a} vs {b}, mean train accuracy ({mb} mini-batch{'es' if mb > 1 else ''}: {note})",
                    claim=claim,
                )
                verdicts.append(line)
    return Analysis(header, rows, verdicts, numbers)
