"""Result tables: one eval's per-benchmark table (terminal, Markdown, CSV) and the cross-eval comparison
shaped like the paper's Table 1 (rows: model × method; columns: benchmarks + average; best per column in
bold).

Accuracies are shown as percentages with one decimal, as in the paper.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

PAPER_ORDER = ("math500", "gsm8k", "aime24", "amc23", "gaokao2023en", "minerva_math", "olympiadbench")
"""Column order of the paper's Table 1 (other benchmarks follow in the order first seen)."""

Cell = float | int | str | None


def _pct(v: Cell) -> str:
    return "–" if v is None else f"{100 * float(v):.1f}"


def _num(v: Cell, digits: int = 1) -> str:
    return "–" if v is None else f"{float(v):.{digits}f}"


def _sampling_keys(summary: dict) -> list[str]:
    """pass@k / maj@k keys present in a summary, sorted by k (pass@1 is shown as ``acc``)."""
    keys = {k for b in summary["benchmarks"].values() for k in b if k.startswith(("pass@", "maj@"))}
    keys.discard("pass@1")
    return sorted(keys, key=lambda k: (int(k.split("@")[1]), k))


def results_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of one eval: a row per benchmark and an ``average`` row."""
    benches: dict[str, dict] = summary["benchmarks"]
    judge = any("consistency" in b for b in benches.values())
    agents = sorted({k.split("/", 1)[1] for b in benches.values() for k in b if k.startswith("tokens_per_turn/")})
    samp = _sampling_keys(summary)
    headers = ["benchmark", "questions", "acc %"] + [f"{k} %" for k in samp]
    if judge:
        headers += ["acc A/B %", "acc B/A %", "consistent %"]
    headers += ["finished %", "turns"] + [f"tok/turn {a}" for a in agents] + ["time s"]

    def row(name: str, b: dict) -> list[str]:
        cells = [name, str(int(b.get("questions", 0))), _pct(b.get("score"))] + [_pct(b.get(k)) for k in samp]
        if judge:
            cells += [_pct(b.get("acc/original")), _pct(b.get("acc/swapped")), _pct(b.get("consistency"))]
        cells += [_pct(b.get("end/finished")), _num(b.get("turns/mean"), 2)]
        cells += [_num(b.get(f"tokens_per_turn/{a}")) for a in agents] + [_num(b.get("wall_s"), 0)]
        return cells

    rows = [row(name, b) for name, b in benches.items()]
    if len(benches) > 1 and summary.get("average"):
        rows.append(row("average", summary["average"]))
    return headers, rows


def family_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the judge benchmarks' families (JudgeBench's mmlu-pro, livebench-*, livecodebench;
    RewardBench's sections): a row per benchmark and family with its pairs, accuracy over both orders and swap
    consistency. No rows when no benchmark has families."""
    headers = ["benchmark", "family", "pairs", "acc %", "consistent %"]
    rows = []
    for name, b in summary["benchmarks"].items():
        for key in sorted(k for k in b if k.startswith("acc/family_")):
            family = key.split("_", 1)[1]
            rows.append(
                [
                    name,
                    family,
                    str(int(b.get(f"questions/family_{family}", 0))),
                    _pct(b[key]),
                    _pct(b.get(f"consistency/family_{family}")),
                ]
            )
    return headers, rows


def to_markdown(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    bold: set[tuple[int, int]] | None = None,
    label_cols: int = 1,
) -> str:
    """A GitHub Markdown table; ``bold`` holds (row, column) cells to wrap in ``**``; the first
    ``label_cols`` columns are left-aligned, the numbers right-aligned."""
    bold = bold or set()
    cells = [[f"**{c}**" if (i, j) in bold else str(c) for j, c in enumerate(r)] for i, r in enumerate(rows)]
    align = ["---"] * label_cols + ["---:"] * (len(headers) - label_cols)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines) + "\n"


def to_csv(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buf.getvalue()


def to_rich(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    bold: set[tuple[int, int]] | None = None,
    last_is_total: bool = False,
    label_cols: int = 1,
) -> Table:
    """A rich table; ``bold`` cells are highlighted (bold green)."""
    bold = bold or set()
    table = Table(title=title, title_justify="left", header_style="bold")
    for j, h in enumerate(headers):
        table.add_column(h, justify="left" if j < label_cols else "right", no_wrap=j < label_cols)
    for i, r in enumerate(rows):
        styled = [f"[bold green]{c}[/bold green]" if (i, j) in bold else str(c) for j, c in enumerate(r)]
        table.add_row(*styled, end_section=last_is_total and i == len(rows) - 2)
    return table


def _title(summary: dict) -> str:
    s = summary.get("settings", {})
    sampling = "greedy" if not s.get("temperature") else f"T={s.get('temperature')}, n={s.get('n')}"
    return (
        f"{summary['model']} · {summary['method']} · {sampling} · max_turns={s.get('max_turns')} "
        f"max_tokens={s.get('max_tokens')}"
    )


def write_results(summary: dict, out: Path) -> None:
    """``results.md`` (title, settings, table) and ``results.csv`` next to ``summary.json``."""
    headers, rows = results_table(summary)
    md = f"# {_title(summary)}\n\n" + to_markdown(headers, rows)
    fam_headers, fam_rows = family_table(summary)
    if fam_rows:
        md += "\nJudge accuracy per family:\n\n" + to_markdown(fam_headers, fam_rows, label_cols=2)
    md += f"\nSettings: `{json.dumps(summary.get('settings', {}))}`\n"
    (out / "results.md").write_text(md)
    (out / "results.csv").write_text(to_csv(headers, rows))


def print_results(summary: dict, console: Console | None = None) -> None:
    headers, rows = results_table(summary)
    console = console or Console()
    console.print(to_rich(headers, rows, title=_title(summary), last_is_total=len(summary["benchmarks"]) > 1))
    fam_headers, fam_rows = family_table(summary)
    if fam_rows:
        console.print(to_rich(fam_headers, fam_rows, title="judge accuracy per family", label_cols=2))


# --- comparison -----------------------------------------------------------------------------------------


def load_summary(path: str | Path) -> dict:
    """``summary.json`` of an eval folder (or the file itself)."""
    p = Path(path)
    p = p / "summary.json" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"{p}: not found; pass folders written by `rema eval`")
    return json.loads(p.read_text())


def _columns(summaries: Sequence[dict]) -> list[str]:
    seen: list[str] = []
    for s in summaries:
        for name in s["benchmarks"]:
            if name not in seen:
                seen.append(name)
    return [b for b in PAPER_ORDER if b in seen] + [b for b in seen if b not in PAPER_ORDER]


def best_cells(values: Sequence[Sequence[float | None]]) -> set[tuple[int, int]]:
    """(row, column) of the maximum of each column (every tied cell); None cells never win."""
    best: set[tuple[int, int]] = set()
    for j in range(len(values[0]) if values else 0):
        col = [(i, r[j]) for i, r in enumerate(values) if r[j] is not None]
        if not col:
            continue
        top = max(v for _, v in col)
        best |= {(i, j) for i, v in col if abs(v - top) < 1e-12}
    return best


def compare_table(summaries: Sequence[dict], *, metric: str = "score") -> tuple[list[str], list[list[str]], set]:
    """(headers, rows, bold cells) comparing evals: rows model × method, columns benchmarks + average.

    The average is over the benchmarks a row has; when a row lacks some of the table's benchmarks its
    average is marked with ``*`` (not comparable with full rows).
    """
    benches = _columns(summaries)
    values: list[list[float | None]] = []
    partial: list[bool] = []
    for s in summaries:
        vals = [s["benchmarks"].get(b, {}).get(metric) for b in benches]
        present = [v for v in vals if v is not None]
        values.append(vals + [sum(present) / len(present) if present else None])
        partial.append(len(present) < len(benches))
    bold = best_cells(values)
    headers = ["model", "method"] + benches + ["average"]
    rows = []
    for s, vals, part in zip(summaries, values, partial):
        cells = [_pct(v) for v in vals]
        if part and vals[-1] is not None:
            cells[-1] += "*"
        rows.append([s.get("model", "?"), s.get("method", "?")] + cells)
    # shift bold columns by the two label columns
    return headers, rows, {(i, j + 2) for i, j in bold}


def compare_markdown(summaries: Sequence[dict], *, metric: str = "score") -> str:
    headers, rows, bold = compare_table(summaries, metric=metric)
    text = to_markdown(headers, rows, bold=bold, label_cols=2)
    if any(r[-1].endswith("*") for r in rows):
        text += "\n\\* average over the benchmarks this row has (not all of the table's columns).\n"
    return text
