"""Health checks: pure functions over the recent steps' metrics that say when a run is collapsing.

Every RL library logs the signals of collapse; these checks read them (``train.health``, docs/health.md).
A *history* is the list of the recent steps' metric records, oldest first, each ``{"step": N, key: value}``
as ``metrics.jsonl`` holds them (a held-out evaluation's keys only on the steps that evaluated). A check reads
the observations of a few keys and fires when its condition held on the last ``patience`` of them.

Relative checks judge those last observations against a *baseline*: the observations before them, at most
``window`` steps back, at least ``min_history`` of them, whose median is the run's recent level (the extremes
of many noisy steps would make small batches fire by chance: ``bench/health_noise.py``). The shapes:

1. ``at_most``: a value at or below a floor (token entropy).
2. ``rises``: a share at or above ``high`` after its recent level (the baseline's median) was at or below
   ``low`` (episodes pinned at the turn limit, messages cut at the token limit, degenerate text). A model that
   never learned to stop, or never wrote text (the tiny random model), does not fire: only a behaviour that was
   there and is lost does.
3. ``falls``: a share below ``ratio`` x its recent level (the baseline's median), when that level was at least
   ``least`` ([FINISH] and boxed shares, rounds per episode).
4. ``cliff``: a running mean ``drop`` below its recent level (the baseline's median) and below ``(1 - ratio)``
   x that level (reward, training and held-out accuracy); ``spike``: a value above ``factor`` x the baseline's
   median and above a floor (KL, gradient norm, the post-sync log-prob check).

Each named check returns a :class:`Finding` (the check, a one-line message naming the metric, its value and
the threshold, and the step the streak began) or None; :func:`run_checks` runs those ``train.health`` keeps.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..config import HealthConfig
from ..config.checks import HEALTH_CHECKS

History = Sequence[dict]
"""Step records, oldest first: ``{"step": int, metric key: float, ...}``."""


@dataclass(frozen=True)
class Finding:
    """A check that fired: ``check`` (its name), ``message`` (one line: metric, value, threshold) and ``since``
    (the step of the first observation of the streak that made it fire)."""

    check: str
    message: str
    since: int


# ------------------------------------------------------------------------------------- the pure shapes


def observations(history: History, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` over ``history``, skipping records without a finite number for it."""
    steps, values = [], []
    for record in history:
        v = record.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            steps.append(int(record["step"]))
            values.append(float(v))
    return steps, values


def split(values: Sequence[float], *, patience: int, min_history: int) -> tuple[list[float], list[float]] | None:
    """(baseline, judged): the last ``patience`` values and the ones before them; None when the baseline has
    fewer than ``min_history`` values (too early to compare)."""
    if len(values) < patience + min_history:
        return None
    return list(values[:-patience]), list(values[-patience:])


def at_most(values: Sequence[float], *, floor: float, patience: int) -> bool:
    """The last ``patience`` values are all at or below ``floor``."""
    return len(values) >= patience and all(v <= floor for v in values[-patience:])


def rises(values: Sequence[float], *, high: float, low: float, patience: int, min_history: int) -> bool:
    """The last ``patience`` values are all >= ``high`` and the recent level (the baseline's median) was at
    most ``low``."""
    parts = split(values, patience=patience, min_history=min_history)
    return parts is not None and statistics.median(parts[0]) <= low and all(v >= high for v in parts[1])


def falls(values: Sequence[float], *, ratio: float, least: float, patience: int, min_history: int) -> bool:
    """The last ``patience`` values are all below ``ratio`` x the recent level (the baseline's median), which was
    >= ``least``: a behaviour the run had learned is being lost."""
    parts = split(values, patience=patience, min_history=min_history)
    if parts is None:
        return False
    level = statistics.median(parts[0])
    return level >= least and all(v < ratio * level for v in parts[1])


def running_mean(values: Sequence[float], n: int) -> list[float]:
    """Mean of each value with the ``n - 1`` before it (fewer at the start)."""
    return [sum(values[max(0, i - n + 1) : i + 1]) / (i + 1 - max(0, i - n + 1)) for i in range(len(values))]


def cliff(values: Sequence[float], *, drop: float, ratio: float, smooth: int, patience: int, min_history: int) -> bool:
    """The last ``patience`` running means (over ``smooth`` values) are all ``drop`` or more below the recent
    level, the median running mean of the baseline, and below ``(1 - ratio)`` x that level when it is positive.
    The first ``smooth - 1`` means (over fewer values) are not judged nor used as a baseline. (The median, not
    the best: the best of many noisy steps sits high, and a run of small batches would fire by chance; measured
    on 4 questions x 6 samples per step, no false alarm in 500 steps, a collapse caught within ~3 steps.)"""
    means = running_mean(values, smooth)[smooth - 1 :]
    parts = split(means, patience=patience, min_history=min_history)
    if parts is None:
        return False
    level = statistics.median(parts[0])
    return all(v <= level - drop and (level <= 0 or v < (1 - ratio) * level) for v in parts[1])


def spike(values: Sequence[float], *, factor: float, floor: float, patience: int, min_history: int) -> bool:
    """The last ``patience`` values are all above ``floor`` and above ``factor`` x the median of the baseline's
    positive values, of which there are at least ``min_history`` (a step without signal, e.g. a gradient norm of
    0 when every reward of the batch was equal, says nothing about the scale)."""
    parts = split(values, patience=patience, min_history=min_history)
    if parts is None:
        return False
    scale = [v for v in parts[0] if v > 0]
    if len(scale) < min_history:
        return False
    bar = max(floor, factor * statistics.median(scale))
    return all(v > bar for v in parts[1])


# ------------------------------------------------------------------------------------- the named checks


def _recent(history: History, window: int) -> list[dict]:
    """The records of the last ``window`` steps and those the checks judge (``window`` + judged steps)."""
    return list(history[-window:]) if window < len(history) else list(history)


def _first(
    history: History,
    keys: Sequence[str],
    test: Callable[[list[float]], bool],
    judged: int,
    describe: Callable[[str, float], str],
) -> tuple[str, int] | None:
    """The message and streak start of the first of ``keys`` whose observations pass ``test``."""
    for key in keys:
        steps, values = observations(history, key)
        if values and test(values):
            return describe(key, values[-1]), steps[-judged]
    return None


def _keys(history: History, pattern: str) -> list[str]:
    """Keys of the latest record matching ``pattern`` (full match), sorted."""
    rx = re.compile(pattern)
    return sorted(k for k in (history[-1] if history else {}) if rx.fullmatch(k))


def check_entropy(history: History, c: HealthConfig) -> Finding | None:
    found = _first(
        history,
        ["stats/entropy"],
        lambda v: at_most(v, floor=c.entropy_floor, patience=c.patience),
        c.patience,
        lambda k, v: (
            f"{k} = {v:.4f} <= train.health.entropy_floor {c.entropy_floor} "
            f"for {c.patience} step(s): the policy stopped exploring"
        ),
    )
    return Finding("entropy", *found) if found else None


def check_turns_collapse(history: History, c: HealthConfig) -> Finding | None:
    h = _recent(history, c.window + c.patience)

    def test(v):
        return falls(
            v, ratio=c.turns_collapse, least=c.turns_collapse_from, patience=c.patience, min_history=c.min_history
        )

    found = _first(
        h,
        ["train/turns/mean"],
        test,
        c.patience,
        lambda k, v: (
            f"{k} = {v:.2f} rounds, below train.health.turns_collapse {c.turns_collapse} x its "
            f"recent level: the meta-thinker stopped thinking"
        ),
    )
    return Finding("turns_collapse", *found) if found else None


def _rise_check(
    name: str, history: History, c: HealthConfig, keys: list[str], high: float, low: float, what: str, high_key: str
) -> Finding | None:
    h = _recent(history, c.window + c.patience)
    found = _first(
        h,
        keys,
        lambda v: rises(v, high=high, low=low, patience=c.patience, min_history=c.min_history),
        c.patience,
        lambda k, v: (
            f"{k} = {v:.2f} >= train.health.{high_key} {high} for {c.patience} step(s) (its level was <= {low}): {what}"
        ),
    )
    return Finding(name, *found) if found else None


def check_turns_pinned(history: History, c: HealthConfig) -> Finding | None:
    return _rise_check(
        "turns_pinned",
        history,
        c,
        ["train/end/max_turns"],
        c.pinned_share,
        c.pinned_from,
        "episodes run to rollout.max_turns without [FINISH]",
        "pinned_share",
    )


def check_length_pinned(history: History, c: HealthConfig) -> Finding | None:
    return _rise_check(
        "length_pinned",
        history,
        c,
        _keys(history, r"train/truncated_turns/[^/]+"),
        c.pinned_share,
        c.pinned_from,
        "messages are cut at rollout.max_tokens_per_turn",
        "pinned_share",
    )


def check_degenerate(history: History, c: HealthConfig) -> Finding | None:
    return _rise_check(
        "degenerate",
        history,
        c,
        _keys(history, r"train/degenerate/[^/]+"),
        c.degenerate_share,
        c.degenerate_from,
        "the agents write degenerate text",
        "degenerate_share",
    )


def check_format(history: History, c: HealthConfig) -> Finding | None:
    h = _recent(history, c.window + c.patience)

    def test(v):
        return falls(v, ratio=c.format_drop, least=c.format_from, patience=c.patience, min_history=c.min_history)

    keys = ["train/end/finished", "train/boxed_rate", "train/judge/verdict_found"]
    found = _first(
        h,
        keys,
        test,
        c.patience,
        lambda k, v: (
            f"{k} = {v:.2f}, below train.health.format_drop {c.format_drop} x its recent level "
            f"for {c.patience} step(s): the learned format is being lost"
        ),
    )
    return Finding("format", *found) if found else None


def check_reward_cliff(history: History, c: HealthConfig) -> Finding | None:
    h = _recent(history, c.window + c.patience + c.smooth - 1)

    def test(v):
        return cliff(
            v, drop=c.reward_cliff, ratio=c.cliff_ratio, smooth=c.smooth, patience=c.patience, min_history=c.min_history
        )

    found = _first(
        h,
        ["train/acc", *_keys(history, r"train/reward/[^/]+")],
        test,
        c.patience,
        lambda k, v: (
            f"{k}: its mean over {c.smooth} step(s) fell train.health.reward_cliff "
            f"{c.reward_cliff} or more below its recent level (last value {v:.3f})"
        ),
    )
    return Finding("reward_cliff", *found) if found else None


def check_eval_cliff(history: History, c: HealthConfig) -> Finding | None:
    # an evaluation of few questions moves by a whole question's share: only those of eval_min_episodes count
    h = [
        r if r.get("eval/episodes", r.get("eval/avg/episodes", 0)) >= c.eval_min_episodes else {"step": r["step"]}
        for r in _recent(history, c.window + 1)
    ]

    def test(v):
        return cliff(v, drop=c.eval_cliff, ratio=c.cliff_ratio, smooth=1, patience=c.eval_patience, min_history=1)

    found = _first(
        h,
        ["eval/acc", "eval/avg/acc"],
        test,
        c.eval_patience,
        lambda k, v: (
            f"{k} = {v:.3f}, train.health.eval_cliff {c.eval_cliff} or more below the median "
            f"held-out evaluation of the last {c.window} steps"
        ),
    )
    return Finding("eval_cliff", *found) if found else None


def _spike_check(
    name: str, history: History, c: HealthConfig, keys: list[str], floor: float, what: str
) -> Finding | None:
    h = _recent(history, c.window + c.patience)

    def test(v):
        return spike(v, factor=c.spike_factor, floor=floor, patience=c.patience, min_history=c.min_history)

    found = _first(
        h,
        keys,
        test,
        c.patience,
        lambda k, v: (
            f"{k} = {v:.4g}, above train.health.spike_factor {c.spike_factor} x its recent "
            f"median (and {floor}) for {c.patience} step(s): {what}"
        ),
    )
    return Finding(name, *found) if found else None


def check_kl_spike(history: History, c: HealthConfig) -> Finding | None:
    return _spike_check(
        "kl_spike", history, c, ["stats/kl", "stats/approx_kl"], c.kl_floor, "the policy jumps away from where it was"
    )


def check_grad_spike(history: History, c: HealthConfig) -> Finding | None:
    return _spike_check("grad_spike", history, c, ["stats/grad_norm"], 0.0, "the updates blow up")


def check_logp_drift(history: History, c: HealthConfig) -> Finding | None:
    """A spike of the post-sync check's mean |Δ log-prob| (or of the sampler's against the trainer's); or, at once,
    a post-sync check beyond the engine's tolerance (``sync/sync_check_failed``, reported under a guard)."""
    if history and history[-1].get("sync/sync_check_failed"):
        last = history[-1]
        return Finding(
            "logp_drift",
            f"sync/sync_check_failed: after the weight sync the engine's log-probs differ from the trainer's beyond "
            f"the sync tolerance (mean {last.get('sync/sync_check_mean_abs_diff', float('nan')):.4g}): the weights "
            "moved too far for the engine's precision, or the sync is broken",
            int(last["step"]),
        )
    return _spike_check(
        "logp_drift",
        history,
        c,
        ["sync/sync_check_mean_abs_diff", "check/sampler_logp_abs_diff"],
        c.logp_drift,
        "the engine's log-probs drift from the trainer's",
    )


CHECKS: dict[str, Callable[[History, HealthConfig], Finding | None]] = {
    "entropy": check_entropy,
    "turns_collapse": check_turns_collapse,
    "turns_pinned": check_turns_pinned,
    "length_pinned": check_length_pinned,
    "format": check_format,
    "degenerate": check_degenerate,
    "reward_cliff": check_reward_cliff,
    "eval_cliff": check_eval_cliff,
    "kl_spike": check_kl_spike,
    "grad_spike": check_grad_spike,
    "logp_drift": check_logp_drift,
}
"""Every check by name: ``check(history, cfg) -> Finding | None``."""
assert tuple(CHECKS) == HEALTH_CHECKS, "rema.config.checks.HEALTH_CHECKS must list CHECKS"

WATCHED = re.compile(
    r"train/(acc|reward/[^/]+|turns/mean|end/(finished|max_turns)|boxed_rate|truncated_turns/[^/]+|"
    r"degenerate/[^/]+|judge/verdict_found)|eval/(avg/)?(acc|episodes)|stats/(entropy|kl|approx_kl|grad_norm)|"
    r"sync/sync_check_(mean_abs_diff|failed)|check/sampler_logp_abs_diff"
)
"""The metric keys some check reads (what a guard keeps of each step's record)."""


def run_checks(history: History, cfg: HealthConfig) -> list[Finding]:
    """The findings of every check ``cfg`` runs (all but ``cfg.skip``) on ``history``, in ``CHECKS`` order."""
    if not history:
        return []
    return [f for name, check in CHECKS.items() if name not in cfg.skip and (f := check(history, cfg))]
