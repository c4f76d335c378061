"""The figure of each experiment, in the paper's shape, from its finished runs (matplotlib, Agg).

Each ``<experiment>(results, out)`` draws every seed thin and the mean over seeds thick, so the spread the
verdict's interval summarises is visible. ``results`` is ``{arm name: [analysis.Run, ...]}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from .analysis import ACTIONS, Results, Run, collapse_step, smooth  # noqa: E402

COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04"]
ACTION_COLORS = {"DECOMPOSE": "#2563eb", "REWRITE": "#f97316", "EMPTY": "#9ca3af", "INVALID": "#dc2626"}


def _style(ax, title: str, ylabel: str = "", *, percent: bool = False) -> None:
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))


def _mean_curve(curves: Sequence[tuple[list, list]]) -> tuple[list, list]:
    """Mean over seeds at the x values every seed logged."""
    common = sorted(set.intersection(*(set(xs) for xs, _ in curves))) if curves else []
    return common, [sum(dict(zip(xs, ys))[x] for xs, ys in curves) / len(curves) for x in common]


def _curves(ax, results: Results, key_of, *, x_of=None, smooth_k: int = 1) -> None:
    """Per arm: each seed thin, the mean thick; ``key_of(run)`` names the metric, ``x_of(run, step)`` maps a step
    to the x axis (default: the step). An arm whose every seed repeats an earlier arm's curve (a budget that never
    binds) is drawn dashed over it and says so in the legend, instead of vanishing under it."""
    drawn: dict[str, list] = {}
    for i, (arm, runs) in enumerate(results.items()):
        color = COLORS[i % len(COLORS)]
        curves = []
        for r in runs:
            steps, ys = r.curve(key_of(r))
            if not ys:
                continue
            xs = [x_of(r, s) for s in steps] if x_of else steps
            ys = smooth(ys, smooth_k) if smooth_k > 1 else ys
            curves.append((xs, ys))
            ax.plot(xs, ys, color=color, alpha=0.3, lw=0.9)
        if curves:
            xs, ys = _mean_curve(curves)
            same = next((a for a, c in drawn.items() if c == curves), None)
            seeds = f"{len(curves)} seed{'s' if len(curves) > 1 else ''}"
            ax.plot(
                xs,
                ys,
                color=color,
                lw=2.2,
                ls="--" if same else "-",
                label=f"{arm} ({seeds}) = {same}" if same else f"{arm} ({seeds})",
                marker="o" if len(xs) < 6 else None,
                ms=4,
            )
            drawn[arm] = curves


def _save(fig, out: Path) -> None:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _ci(values: list[float]) -> float:
    from .stats import estimate

    e = estimate(values)
    return 0.0 if e.n < 2 or math.isnan(e.half) else e.half


def table1(results: Results, out: Path) -> None:
    """Grouped bars: in- and out-of-distribution accuracy per method, mean over seeds with 95% error bars and
    each seed as a dot."""
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    arms = list(results)
    width = 0.38
    for j, (index, name) in enumerate(((0, "in-distribution"), (1, "out-of-distribution"))):
        for i, arm in enumerate(arms):
            vals = [v for r in results[arm] if not math.isnan(v := r.eval_final(0) if index == 0 else r.ood_final())]
            if not vals:
                continue
            x = i + (j - 0.5) * width
            ax.bar(
                x,
                sum(vals) / len(vals),
                width,
                yerr=_ci(vals),
                capsize=3,
                color=COLORS[j],
                alpha=0.85,
                label=name if i == 0 else None,
            )
            ax.scatter([x] * len(vals), vals, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(arms)), arms, fontsize=8, rotation=12)
    _style(ax, "Table 1 (CPU scale): held-out accuracy per method", "accuracy", percent=True)
    ax.legend(fontsize=8, frameon=False)
    _save(fig, out)


def fig3(results: Results, out: Path) -> None:
    """One panel per difficulty level (and overall): held-out accuracy over training steps per arm."""
    any_run = next(r for runs in results.values() for r in runs)
    prefix = any_run.eval_prefix(0) or "eval/"
    levels = sorted(
        {k.rsplit("_", 1)[1] for r in any_run.rows for k in r if k.startswith(prefix + "acc/level_")},
        key=lambda s: int(s) if s.isdigit() else 0,
    )
    panels = [("all levels", "acc")] + [(f"level {lv}", f"acc/level_{lv}") for lv in levels]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.3), squeeze=False)
    for ax, (title, metric) in zip(axes[0], panels):
        _curves(ax, results, lambda r, m=metric: (r.eval_prefix(0) or "eval/") + m)
        _style(ax, title, "held-out accuracy" if ax is axes[0][0] else "", percent=True)
        ax.set_xlabel("RL step", fontsize=8)
    axes[0][0].legend(fontsize=7, frameon=False)
    _save(fig, out)


def fig4(results: Results, out: Path) -> None:
    """Left: each action's share over training; right: the mean difficulty level behind each action."""
    runs = [r for rs in results.values() for r in rs]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for a in ACTIONS:
        for ax, key in ((a1, f"train/actions/{a}"), (a2, f"train/action_level/{a}/mean")):
            curves = [r.curve(key) for r in runs if r.curve(key)[1]]
            for xs, ys in curves:
                ax.plot(xs, ys, color=ACTION_COLORS[a], alpha=0.3, lw=0.9)
            if curves:
                xs, ys = _mean_curve(curves)
                ax.plot(xs, ys, color=ACTION_COLORS[a], lw=2.2, label=a)
    _style(a1, "Share of each action", "share of MTA messages", percent=True)
    _style(a2, "Difficulty behind each action", "mean level of its questions")
    for ax in (a1, a2):
        ax.set_xlabel("RL step", fontsize=8)
    a1.legend(fontsize=8, frameon=False)
    _save(fig, out)


def fig5_turns(results: Results, out: Path) -> None:
    """Left: training reward per budget (smoothed), collapse steps marked ×; right: held-out accuracy."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    _curves(a1, results, lambda r: "train/reward/ra", smooth_k=3)
    for i, runs in enumerate(results.values()):
        for r in runs:
            steps, ys = r.curve("train/reward/ra")
            c = collapse_step(steps, ys)
            if c is not None:
                a1.scatter([c], [smooth(ys)[steps.index(c)]], marker="x", s=60, color=COLORS[i % len(COLORS)])
    _curves(a2, results, lambda r: (r.eval_prefix(0) or "eval/") + "acc")
    _style(a1, "Training reward (3-step mean; × = collapse)", "reward")
    _style(a2, "Held-out accuracy", percent=True)
    for ax in (a1, a2):
        ax.set_xlabel("RL step", fontsize=8)
    a1.legend(fontsize=7, frameon=False)
    _save(fig, out)


def fig5_ablation(results: Results, out: Path) -> None:
    """Training accuracy (3-step mean) against samples seen: one panel per mini-batch setting."""
    groups = {mb: {a: rs for a, rs in results.items() if a.endswith(f"_mb{mb}")} for mb in (1, 4)}
    groups = {mb: g for mb, g in groups.items() if g}
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 3.6), squeeze=False)

    def seen(r: Run, step: int) -> int:
        return step * r.samples_per_step()

    for ax, (mb, group) in zip(axes[0], groups.items()):
        _curves(
            ax,
            {a.removesuffix(f"_mb{mb}"): rs for a, rs in group.items()},
            lambda r: "train/acc",
            x_of=seen,
            smooth_k=3,
        )
        _style(
            ax,
            f"{mb} mini-batch{'es' if mb > 1 else ''} per step"
            + (" (ratio ≡ 1)" if mb == 1 else " (ratio and clip act)"),
            "train accuracy",
            percent=True,
        )
        ax.set_xlabel("samples seen", fontsize=8)
        ax.legend(fontsize=7, frameon=False)
    _save(fig, out)
