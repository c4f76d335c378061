"""The run report page: one self-contained ``report.html`` (no network, no server; CSS/JS inline, data
embedded as JSON, plots as base64 PNG) to browse sample dialogues by step.

The page (``html_template.PAGE``) reads ``<script id="rema-data" type="application/json">``: the run's name,
config and meta, summary figures, the plots, and a compact list of dialogues (``compact_sample``). Text is
inserted with ``textContent`` or escaped before highlighting, so dialogue text can never inject markup.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from .html_template import PAGE


def compact_sample(s: dict) -> dict:
    """What the page needs of one ``samples.jsonl`` row (``Episode.to_dict()`` + ``step`` + ``split``)."""
    meta = s.get("meta") or {}
    return {
        "step": s.get("step", 0),
        "split": s.get("split", "train"),
        "id": str(s.get("problem_id", "")),
        "sample": s.get("sample_index", 0),
        "method": s.get("method", ""),
        "question": s.get("question", ""),
        "gold": str(s.get("answer", "")),
        "extracted": meta.get("extracted"),
        "correct": bool(meta.get("correct")),
        "level": meta.get("level"),
        "end": s.get("end_code") or "?",
        "reward": s.get("reward") or {},
        "parts": s.get("reward_parts") or {},
        "turns": [
            {
                "agent": t.get("agent", "ra"),
                "index": t.get("index", 0),
                "text": t.get("text", ""),
                "tokens": t.get("n_tokens", len(t.get("token_ids", []))),
                "truncated": t.get("finish_reason") == "length",
                "action": t.get("action"),
                "format_ok": t.get("format_ok"),
            }
            for t in s.get("turns", [])
        ],
    }


def select_samples(samples: Sequence[dict], max_samples: int) -> list[dict]:
    """At most ``max_samples`` rows, keeping every (step, split) represented: an equal quota per group,
    the first ones of each group."""
    if len(samples) <= max_samples:
        return list(samples)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in samples:
        groups[(s.get("step", 0), s.get("split", "train"))].append(s)
    quota = max(1, math.floor(max_samples / len(groups)))
    kept = [s for g in groups.values() for s in g[:quota]]
    return kept[:max_samples] if len(kept) > max_samples else kept


def _last(metrics: Sequence[dict], key: str) -> tuple[int | None, float | None]:
    for r in reversed(metrics):
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return r.get("step"), float(v)
    return None, None


def summary_figures(metrics: Sequence[dict], samples: Sequence[dict]) -> list[dict]:
    """Headline chips: latest train/eval accuracy, finished share, rounds, steps, dialogues."""
    chips = []
    eval_acc = "eval/acc" if any("eval/acc" in r for r in metrics) else "eval/avg/acc"  # several sets: their mean
    for key, label, pct in (
        ("train/acc", "train acc", True),
        (eval_acc, "eval acc", True),
        ("train/end/finished", "finished", True),
        ("train/turns/mean", "rounds", False),
    ):
        step, v = _last(metrics, key)
        if v is not None:
            chips.append({"label": label, "value": f"{100 * v:.1f}%" if pct else f"{v:.2f}", "note": f"step {step}"})
    if metrics:
        chips.append({"label": "steps", "value": str(metrics[-1].get("step", len(metrics))), "note": ""})
    chips.append({"label": "dialogues", "value": str(len(samples)), "note": ""})
    events = [r for r in metrics if "health/event" in r]
    if events:
        chips.append({"label": "health events", "value": str(len(events)), "note": events[-1].get("health/action", "")})
    return chips


def flatten(tree, prefix: str = "") -> list[list[str]]:
    """``[[dotted.key, value], ...]`` of a nested mapping (config.yaml)."""
    rows: list[list[str]] = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            rows += flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else [[f"{prefix}{k}", json.dumps(v)]]
    return rows


def _last_row(metrics: Sequence[dict], prefix: str) -> dict:
    for r in reversed(metrics):
        vals = {k: v for k, v in r.items() if k.startswith(prefix)}
        if vals:
            return {"step": r.get("step"), **vals}
    return {}


def page_data(run: dict, plots: Sequence[tuple[str, str]], out: Path, max_samples: int) -> dict:
    """The JSON object embedded in the page."""
    cfg = run.get("config") or {}
    rollout = cfg.get("rollout", {}) if isinstance(cfg, dict) else {}
    method = rollout.get("method", "?")
    if method == "rema":  # the prompt-set name, as in Config.method_name
        method = (
            "rema-actions"
            if rollout.get("action_set")
            else ("rema-multi" if rollout.get("mode") == "multi_turn" else "rema-single")
        )
    samples = select_samples(run["samples"], max_samples)
    return {
        "name": run["name"],
        "subtitle": " · ".join(
            str(x)
            for x in (
                method,
                (cfg.get("model") or {}).get("name"),
                run["meta"].get("start_time") or run["meta"].get("started"),
            )
            if x
        ),
        "chips": summary_figures(run["metrics"], run["samples"]),
        "plots": [_plot_entry(out / name, title) for name, title in plots],
        "config": flatten(cfg),
        "meta": run["meta"],
        "last": {"train": _last_row(run["metrics"], "train/"), "eval": _last_row(run["metrics"], "eval/")},
        "events": [
            {
                "step": e["step"],
                "action": e.get("health/action", ""),
                "check": e.get("health/check", ""),
                "to_step": e.get("health/to_step"),
                "message": e.get("health/message", ""),
            }
            for e in run.get("events", [])
        ],
        "samples": [compact_sample(s) for s in samples],
        "dropped": len(run["samples"]) - len(samples),
    }


def _plot_entry(path: Path, title: str) -> dict:
    """A plot for the page: base64 PNG, and ``wide`` (spans the grid) when wider than 1000 px."""
    png = path.read_bytes()
    width = int.from_bytes(png[16:20], "big")  # IHDR: width is the first field after the chunk header
    return {"file": path.name, "title": title, "wide": width > 1000, "png": base64.b64encode(png).decode("ascii")}


def embed_json(obj) -> str:
    """JSON safe inside a ``<script>`` element: ``<``, ``>``, ``&`` escaped as ``\\u00XX`` (valid JSON)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def write_html(run: dict, plots: Sequence[tuple[str, str]], out: Path, *, max_samples: int = 3000) -> Path:
    """Write ``out/report.html``; returns its path."""
    data = page_data(run, plots, out, max_samples)
    page = PAGE.replace("__TITLE__", html.escape(f"ReMA run · {run['name']}")).replace("__DATA__", embed_json(data))
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
