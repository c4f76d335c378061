"""``rema report RUN_DIR``: training-curve PNGs (matplotlib, Agg) and one self-contained HTML page.

Reads what the trainer writes into a run folder: ``metrics.jsonl`` (one object per step, namespaced keys
``train/…``, ``eval/…``, ``loss/…``, ``stats/…``), ``samples.jsonl`` (``Episode.to_dict()`` + ``step`` +
``split``), ``config.yaml`` and ``meta.json``. Plots whose keys are absent are skipped (a run without
the action set has no Fig. 4 panel); the HTML page (``html.py``) embeds every PNG and the dialogues.

Plots (file: what):
    reward.png            reward per agent (train solid, held-out eval dashed)
    accuracy.png          accuracy train vs eval (an X: before the cold start), and per difficulty level
    turns.png             rounds per episode
    tokens_per_turn.png   generated tokens per message, per agent
    end_codes.png         share of episodes by end code (stacked)
    optimization.png      KL, entropy, clip fraction, grad norm
    actions_by_level.png  share of DECOMPOSE / REWRITE / EMPTY per MATH level over steps
    action_difficulty.png mean difficulty level of the questions each action was chosen for (paper Fig. 4)
    eval_sets.png         held-out accuracy of each ``data.eval`` set and their average (paper Fig. 5)

A run with several eval sets logs ``eval/<set>/…`` and their average ``eval/avg/…`` instead of ``eval/…``;
the reward, accuracy and rounds plots then draw the average.

Health events (``train.health``: records with ``health/event`` in ``metrics.jsonl``) are marked on every plot
at the step they fired: a red line and the abandoned steps shaded for a rollback, a black line for a stop, an
orange dashed line for a warning; :func:`event_lines` lists them (``rema report`` prints them, the page shows
them above the plots).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from ..rollout.episode import END_CODES  # noqa: E402

AGENT_COLORS = {"mta": "#7c3aed", "ra": "#0d9488"}
END_COLORS = {"finished": "#16a34a", "max_turns": "#f59e0b", "context_exceeded": "#dc2626", "truncated": "#6b7280"}
ACTION_COLORS = {"DECOMPOSE": "#2563eb", "REWRITE": "#f97316", "EMPTY": "#9ca3af", "INVALID": "#dc2626"}
LINE_COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"]


class ReportError(RuntimeError):
    """The run folder lacks what a report needs; the message says what."""


# --- reading --------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict]:
    """Objects of a JSONL file; a line that does not parse (a write cut by a crash) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def load_run(run_dir: str | Path) -> dict:
    """``{"dir", "name", "metrics", "samples", "config", "meta", "events", "rolled_back"}`` of a run folder
    (``events``: its health events, :func:`health_events`; ``rolled_back``: the records rollbacks set aside,
    ``metrics_rolled_back.jsonl``)."""
    import yaml

    run = Path(run_dir)
    if not run.is_dir():
        raise ReportError(f"{run}: not a folder")
    metrics = read_jsonl(run / "metrics.jsonl")
    samples = read_jsonl(run / "samples.jsonl")
    if not metrics and not samples:
        raise ReportError(f"{run}: no metrics.jsonl or samples.jsonl (is this a run folder written by `rema train`?)")
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    meta = json.loads((run / "meta.json").read_text()) if (run / "meta.json").is_file() else {}
    metrics.sort(key=lambda r: r.get("step", 0))
    return {
        "dir": str(run),
        "name": run.resolve().name,
        "metrics": metrics,
        "samples": samples,
        "config": config or {},
        "meta": meta,
        "events": health_events(metrics),
        "rolled_back": read_jsonl(run / "metrics_rolled_back.jsonl"),
    }


def health_events(rows: Sequence[dict]) -> list[dict]:
    """The health events among a run's records (``health/event``), in the order they happened."""
    return sorted((r for r in rows if "health/event" in r), key=lambda r: r["health/event"])


def event_lines(rows: Sequence[dict]) -> list[str]:
    """One line per health event: step, action, checks, where a rollback went, and the checks' messages."""
    lines = []
    for e in health_events(rows):
        where = (
            f" to step {e['health/to_step']} (learning rate x{e.get('health/lr_scale', 1):g})"
            if e.get("health/action") == "rollback"
            else ""
        )
        lines.append(f"step {e['step']}: {e.get('health/action')}{where} - {e.get('health/message', '')}")
    return lines


def series(rows: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric, skipping steps without it or with a non-finite value."""
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(r.get("step", len(xs)))
            ys.append(float(v))
    return xs, ys


def keys_matching(rows: Sequence[dict], pattern: str) -> list[re.Match]:
    """Regex matches of ``pattern`` (full match) over every key seen, in first-seen order."""
    seen: dict[str, re.Match] = {}
    rx = re.compile(pattern)
    for r in rows:
        for k in r:
            if k not in seen and (m := rx.fullmatch(k)):
                seen[k] = m
    return list(seen.values())


def eval_key(rows: Sequence[dict], metric: str) -> str:
    """The key of held-out ``metric``: ``eval/<metric>`` (one eval set), else ``eval/avg/<metric>`` (several)."""
    plain = f"eval/{metric}"
    if any(plain in r for r in rows) or not any(f"eval/avg/{metric}" in r for r in rows):
        return plain
    return f"eval/avg/{metric}"


def eval_sets(rows: Sequence[dict]) -> list[str]:
    """Names of the eval sets of a run that evaluated several (``eval/<set>/acc`` beside ``eval/avg/acc``)."""
    if not any("eval/avg/acc" in r for r in rows):
        return []
    return [m.group(1) for m in keys_matching(rows, r"eval/([^/]+)/acc") if m.group(1) != "avg"]


def ema(values: Sequence[float], alpha: float = 0.1) -> list[float]:
    """Exponential moving average (bias-corrected, so the first points are not pulled to 0)."""
    out, acc, norm = [], 0.0, 0.0
    for v in values:
        acc = (1 - alpha) * acc + alpha * v
        norm = (1 - alpha) * norm + alpha
        out.append(acc / norm)
    return out


# --- plotting -------------------------------------------------------------------------------------------


def _style(ax, title: str, ylabel: str | None = None, percent: bool = False) -> None:
    ax.set_title(title, fontsize=11, loc="left", fontweight="bold")
    ax.set_xlabel("step", fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    if percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))


def _line(ax, rows, key, label, color, *, dashed: bool = False, width: float = 1.8) -> bool:
    """One metric as a line (EMA over a faint raw line from 20 points on); ``dashed`` = held-out eval."""
    xs, ys = series(rows, key)
    if not xs:
        return False
    if dashed:  # held-out eval: few points, show them
        ax.plot(xs, ys, "--o", color=color, label=label, markersize=3.5, linewidth=width * 0.8)
    elif len(xs) >= 20:
        ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(xs, ema(ys), color=color, label=f"{label} (EMA)", linewidth=width)
    else:
        ax.plot(xs, ys, "-o", color=color, label=label, markersize=3, linewidth=width)
    return True


EVENT_STYLE = {"rollback": ("#dc2626", "-"), "stop": ("#111827", "-"), "warn": ("#f59e0b", "--")}


def mark_events(ax, rows: Sequence[dict]) -> None:
    """Health events on a plot over steps: a line at each event's step (its colour says the action) and, for a
    rollback, the steps it abandoned shaded."""
    for e in health_events(rows):
        color, style = EVENT_STYLE.get(e.get("health/action"), ("#6b7280", ":"))
        if e.get("health/action") == "rollback" and "health/to_step" in e:
            ax.axvspan(e["health/to_step"], e["step"], color=color, alpha=0.07, linewidth=0)
        ax.axvline(e["step"], color=color, linestyle=style, linewidth=1.1, alpha=0.8)
        ax.annotate(
            e.get("health/check", ""),
            (e["step"], 1),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            color=color,
            rotation=90,
            ha="right",
            va="top",
        )


def _save(fig, out: Path, name: str, rows: Sequence[dict] = ()) -> str:
    for ax in fig.axes:
        if ax.get_visible() and ax.get_xlabel() == "step":
            mark_events(ax, rows)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _agents(rows) -> list[str]:
    found = {m.group(1) for m in keys_matching(rows, r"(?:train|eval)/(?:reward|tokens_per_turn)/([^/]+)")}
    return [a for a in ("mta", "ra") if a in found] + sorted(found - {"mta", "ra"})


def plot_reward(rows, out: Path) -> str | None:
    agents = _agents(rows)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    drawn = False
    for i, a in enumerate(agents):
        color = AGENT_COLORS.get(a, "#2563eb")
        width = 1.8 + 2.4 * (len(agents) - 1 - i)  # the shared reward makes agents coincide: keep both visible
        drawn |= _line(ax, rows, f"train/reward/{a}", f"train · {a.upper()}", color, width=width)
        drawn |= _line(ax, rows, eval_key(rows, f"reward/{a}"), f"eval · {a.upper()}", color, dashed=True, width=width)
    if not drawn:
        plt.close(fig)
        return None
    _style(ax, "Reward per agent", "mean reward")
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, out, "reward.png", rows)


def plot_accuracy(rows, out: Path) -> str | None:
    levels = sorted({m.group(2) for m in keys_matching(rows, r"(train|eval)/acc/level_(.+)")}, key=str)
    fig, axes = plt.subplots(1, 2 if levels else 1, figsize=(12 if levels else 7, 3.6), squeeze=False)
    ax = axes[0][0]
    held_out = "held-out eval" + (f" (average of {len(eval_sets(rows))} sets)" if eval_sets(rows) else "")
    drawn = _line(ax, rows, "train/acc", "train", "#2563eb") | _line(
        ax, rows, eval_key(rows, "acc"), held_out, "#dc2626", dashed=True
    )
    if not drawn:
        plt.close(fig)
        return None
    xs, ys = series(rows, "base_" + eval_key(rows, "acc"))
    if xs:  # a cold start ran at step 0: the model before it, then eval/acc at step 0 is after it
        ax.plot(xs, ys, "X", color="#6b7280", markersize=8, label="held-out, before the cold start (SFT)")
    _style(ax, "Accuracy", percent=True)
    ax.legend(fontsize=8, frameon=False)
    if levels:
        ax2 = axes[0][1]
        cmap = plt.get_cmap("viridis", max(2, len(levels)))
        for i, lv in enumerate(levels):
            if not _line(ax2, rows, f"eval/acc/level_{lv}", f"eval L{lv}", cmap(i), dashed=True):
                _line(ax2, rows, f"train/acc/level_{lv}", f"train L{lv}", cmap(i))
        _style(ax2, "Accuracy by difficulty level", percent=True)
        ax2.legend(fontsize=7, frameon=False, ncol=2)
    return _save(fig, out, "accuracy.png", rows)


def plot_turns(rows, out: Path) -> str | None:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    drawn = _line(ax, rows, "train/turns/mean", "train", "#2563eb") | _line(
        ax, rows, eval_key(rows, "turns/mean"), "eval", "#dc2626", dashed=True
    )
    if not drawn:
        plt.close(fig)
        return None
    _style(ax, "Rounds per episode (MTA→RA)", "rounds")
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, out, "turns.png", rows)


def plot_tokens(rows, out: Path) -> str | None:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    drawn = False
    for a in _agents(rows):
        drawn |= _line(ax, rows, f"train/tokens_per_turn/{a}", a.upper(), AGENT_COLORS.get(a, "#2563eb"))
    if not drawn:
        plt.close(fig)
        return None
    _style(ax, "Tokens per message", "tokens")
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, out, "tokens_per_turn.png", rows)


def _stack(ax, rows, keys: dict[str, str], colors: dict[str, str]) -> bool:
    """Stacked areas of ``{label: key}`` over the steps where any of them is present (missing → 0)."""
    steps = [r.get("step", i) for i, r in enumerate(rows) if any(k in r for k in keys.values())]
    picked = [r for r in rows if any(k in r for k in keys.values())]
    if not steps:
        return False
    ys = [[float(r.get(k, 0.0) or 0.0) for r in picked] for k in keys.values()]
    ax.stackplot(steps, *ys, labels=list(keys), colors=[colors.get(lbl, "#999") for lbl in keys], alpha=0.85)
    ax.set_ylim(0, 1)
    ax.set_xlim(min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1)
    return True


def plot_end_codes(rows, out: Path) -> str | None:
    keys = {c: f"train/end/{c}" for c in END_CODES if any(f"train/end/{c}" in r for r in rows)}
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    _stack(ax, rows, keys, END_COLORS)
    _style(ax, "How episodes end", "share of episodes", percent=True)
    ax.legend(fontsize=8, frameon=False, loc="lower left", ncol=len(keys))
    return _save(fig, out, "end_codes.png", rows)


OPT_PANELS = (
    ("KL to reference", ("stats/kl", "loss/kl", "stats/approx_kl")),
    ("Entropy", ("stats/entropy", "loss/entropy")),
    ("Clip fraction", ("stats/clip_frac",)),
    ("Gradient norm", ("stats/grad_norm",)),
)


def plot_optimization(rows, out: Path) -> str | None:
    panels = [(t, [k for k in keys if series(rows, k)[0]]) for t, keys in OPT_PANELS]
    panels = [(t, keys) for t, keys in panels if keys]
    if not panels:
        return None
    cols = min(2, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6 * cols, 3.2 * nrows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for i, k in enumerate(keys):
            _line(ax, rows, k, k, LINE_COLORS[i % len(LINE_COLORS)])
        _style(ax, title)
        ax.legend(fontsize=7, frameon=False)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    return _save(fig, out, "optimization.png", rows)


def plot_actions_by_level(rows, out: Path) -> str | None:
    """Paper Fig. 4: per MATH level, the share of each MTA action over training (stacked areas)."""
    matches = keys_matching(rows, r"train/actions/([A-Z_]+)/level_(.+)")
    if not matches:
        return None
    actions = [a for a in ACTION_COLORS if any(m.group(1) == a for m in matches)]
    actions += sorted({m.group(1) for m in matches} - set(actions))
    levels = sorted({m.group(2) for m in matches}, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
    panels = (
        [("all levels", {a: f"train/actions/{a}" for a in actions})]
        if any(f"train/actions/{a}" in r for r in rows for a in actions)
        else []
    )
    panels += [(f"level {lv}", {a: f"train/actions/{a}/level_{lv}" for a in actions}) for lv in levels]
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.3 * cols, 3.1 * nrows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        _stack(ax, rows, keys, ACTION_COLORS)
        _style(ax, title, percent=True)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False, fontsize=9)
    fig.suptitle("Meta-thinking actions by difficulty", y=0.995, x=0.01, ha="left", fontsize=11, fontweight="bold")
    for ax in axes.flat:
        if ax.get_visible():
            mark_events(ax, rows)
    fig.tight_layout(rect=(0, 0, 1, 0.95 if nrows > 1 else 0.9))
    fig.savefig(out / "actions_by_level.png", dpi=110)
    plt.close(fig)
    return "actions_by_level.png"


def plot_action_difficulty(rows, out: Path) -> str | None:
    """Paper Fig. 4: per MTA action, the mean difficulty level of the questions it was chosen for, over training
    (``train/action_level/<A>/mean``); an MTA that adapts keeps DECOMPOSE for the harder questions."""
    actions = [m.group(1) for m in keys_matching(rows, r"train/action_level/([A-Z_]+)/mean")]
    if not actions:
        return None
    actions = [a for a in ACTION_COLORS if a in actions] + sorted(set(actions) - set(ACTION_COLORS))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for a in actions:
        _line(ax, rows, f"train/action_level/{a}/mean", a, ACTION_COLORS.get(a, "#2563eb"))
    _style(ax, "Difficulty behind each action", "mean level of its questions")
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, out, "action_difficulty.png", rows)


def plot_eval_sets(rows, out: Path) -> str | None:
    """Paper Fig. 5: held-out accuracy of each ``data.eval`` set (dashed) and their average (thick), over steps."""
    names = eval_sets(rows)
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.8))
    _line(ax, rows, "eval/avg/acc", f"average of {len(names)}", "#9ca3af", width=4.0)  # under the sets' lines
    for i, name in enumerate(names):
        _line(ax, rows, f"eval/{name}/acc", name, LINE_COLORS[i % len(LINE_COLORS)], dashed=True, width=1.6)
    _style(ax, "Held-out accuracy per benchmark", percent=True)
    ax.legend(fontsize=8, frameon=False, ncol=2)
    return _save(fig, out, "eval_sets.png", rows)


PLOTS = (
    ("reward.png", "Reward per agent", plot_reward),
    ("accuracy.png", "Accuracy", plot_accuracy),
    ("turns.png", "Rounds per episode", plot_turns),
    ("tokens_per_turn.png", "Tokens per message", plot_tokens),
    ("end_codes.png", "End codes", plot_end_codes),
    ("optimization.png", "Optimisation", plot_optimization),
    ("actions_by_level.png", "Actions by level", plot_actions_by_level),
    ("action_difficulty.png", "Difficulty per action (Fig. 4)", plot_action_difficulty),
    ("eval_sets.png", "Held-out accuracy per benchmark (Fig. 5)", plot_eval_sets),
)


def make_plots(metrics: Sequence[dict], out: Path) -> list[tuple[str, str]]:
    """Write every plot whose data exists; returns [(file name, title)]."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for _, title, fn in PLOTS:
        name = fn(metrics, out)
        if name:
            made.append((name, title))
    return made


def build_report(run_dir: str | Path, out: str | Path | None = None, *, max_samples: int = 3000) -> Path:
    """Plots and ``report.html`` for a run; returns the output folder (default ``RUN_DIR/report``)."""
    from .html import write_html

    run = load_run(run_dir)
    out_dir = Path(out) if out else Path(run_dir) / "report"
    plots = make_plots(run["metrics"], out_dir)
    write_html(run, plots, out_dir, max_samples=max_samples)
    return out_dir
