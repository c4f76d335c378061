"""One self-contained HTML page for a ``rema reproduce`` output folder: every experiment's figure, table and verdict
lines (``rema report OUT``; ``rema reproduce`` writes it after each experiment too)."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

STYLE = """body{font:14px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#111}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2.2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:3px 9px;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
.claim{color:#555}.meta{color:#777;font-size:12px}li{margin:.3em 0}"""


def experiment_folders(out: Path) -> list[Path]:
    """The experiment folders under ``out`` that hold a ``summary.json`` (in the order ``rema reproduce all`` runs)."""
    from .experiments import EXPERIMENTS

    order = {name: i for i, name in enumerate(EXPERIMENTS)}
    found = [p.parent for p in Path(out).glob("*/summary.json")]
    return sorted(found, key=lambda p: (order.get(p.name, len(order)), p.name))


def is_reproduce_folder(path: str | Path) -> bool:
    return bool(experiment_folders(Path(path)))


def _table(markdown: str) -> str:
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in markdown.splitlines()
        if line.strip().startswith("|") and not set(line.strip()) <= set("|-: ")
    ]
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def _bold(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(text))


def build_page(out: str | Path) -> Path:
    """Write ``OUT/index.html``; returns its path."""
    out = Path(out)
    parts = [f"<h1>rema reproduce: {html.escape(str(out))}</h1>"]
    for folder in experiment_folders(out):
        s = json.loads((folder / "summary.json").read_text())
        png = folder / "figure.png"
        img = (
            f'<img alt="{html.escape(s["experiment"])}" src="data:image/png;base64,'
            f'{base64.b64encode(png.read_bytes()).decode()}">'
            if png.is_file()
            else ""
        )
        missing = f"<p><b>Incomplete:</b> {html.escape(', '.join(s['missing']))}</p>" if s.get("missing") else ""
        parts.append(
            f"<h2>{html.escape(s['title'])}</h2><p class=claim>Paper: {html.escape(s['paper'])}</p>"
            + "<ul>"
            + "".join(f"<li>{_bold(v)}</li>" for v in s["verdicts"])
            + "</ul>"
            + missing
            + _table(s["table"])
            + img
            + f"<p class=meta>{html.escape(s['command'])} — {html.escape(s['date'])}, "
            f"{html.escape(s['machine'])}</p>"
        )
    page = out / "index.html"
    page.write_text(
        f"<!doctype html><meta charset=utf-8><title>rema reproduce</title><style>{STYLE}</style>" + "\n".join(parts),
        encoding="utf-8",
    )
    return page
