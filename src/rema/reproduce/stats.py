"""Numbers over seeds for ``rema reproduce``: means with 95% intervals, paired differences, verdict words.

Pure functions over plain lists of floats, so every verdict can be recomputed by hand from the table it
stands under. The interval is Student's t over seeds (n - 1 degrees of freedom): with 3 seeds it is wide, and
a verdict says "inconclusive" rather than claim a difference the seeds cannot support.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# two-sided 95% Student-t quantiles by degrees of freedom (scipy is not a dependency); beyond 30, the normal's
_T95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    12: 2.179,
    15: 2.131,
    20: 2.086,
    25: 2.060,
    30: 2.042,
}


def t95(df: int) -> float:
    """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom (the nearest tabulated df at or
    below it; 1.96 past 30)."""
    if df < 1:
        raise ValueError("a t interval needs at least 2 values (df >= 1)")
    if df > 30:
        return 1.96
    return _T95[max(k for k in _T95 if k <= df)]


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds and its 95% interval (``half`` = half-width; NaN with one value)."""

    mean: float
    half: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    def fmt(self, scale: float = 100.0, unit: str = "%") -> str:
        """``57.8% ± 4.1`` (``57.8%`` with one seed; ``n/a`` with none)."""
        if self.n == 0 or math.isnan(self.mean):
            return "n/a"
        head = f"{self.mean * scale:.1f}{unit}"
        return head if self.n < 2 else f"{head} ± {self.half * scale:.1f}"


def estimate(values: Sequence[float]) -> Estimate:
    """Mean and 95% t-interval half-width of ``values`` (NaNs dropped)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not xs:
        return Estimate(float("nan"), float("nan"), 0)
    if len(xs) == 1:
        return Estimate(xs[0], float("nan"), 1)
    return Estimate(statistics.fmean(xs), t95(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs)), len(xs))


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Estimate:
    """``a - b`` seed by seed (both lists in seed order, equal length), then :func:`estimate`: the seed's shared
    data order and held-out set cancel out of the comparison."""
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return estimate([x - y for x, y in zip(a, b)])


def direction(diff: Estimate, *, margin: float = 0.0) -> str:
    """The word for a difference that the paper claims is positive (> ``margin``):

    - ``agrees``: the whole 95% interval lies above ``margin``;
    - ``contradicts``: the whole interval lies below 0 (the opposite of the claim);
    - ``inconclusive``: the interval straddles (or, with one seed, there is no interval: then the sign is told
      but not trusted, ``leans yes`` / ``leans no``).
    """
    if diff.n == 0:
        return "no data"
    if diff.n == 1:
        return "leans yes (1 seed)" if diff.mean > margin else "leans no (1 seed)"
    if diff.low > margin:
        return "agrees"
    if diff.high < 0:
        return "contradicts"
    return "inconclusive"
