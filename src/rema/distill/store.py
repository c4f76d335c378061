"""The files of ``rema distill``: kept dialogues (OUT, read by ``sft.data=OUT`` as it is) and rejected rows
(``<OUT stem>.rejected.jsonl`` beside it, each with its reason and the teacher's reply).

Both are appended one JSON line per row, flushed and fsync'ed before the next row is asked, so a crash loses
nothing written. Every line carries the row's ``id``: a re-run reads both files and asks only for the rows in
neither. A ``kill -9`` in the middle of a write leaves a last line without its newline; :func:`read_rows` cuts
that torn line off the file (the row is asked again) instead of appending after it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class DistillError(ValueError):
    """A setup problem the user must fix (missing setting, an output file from another input); says what to do."""


def rejected_path(out: Path) -> Path:
    """``dialogues.jsonl`` -> ``dialogues.rejected.jsonl`` (beside the output)."""
    return out.with_name(f"{out.stem}.rejected{out.suffix or '.jsonl'}")


def read_rows(path: Path) -> tuple[list[dict], int]:
    """``(rows, torn_bytes)`` of a file this command appends to; an absent file has none.

    A last line without its newline (a write cut by a kill) is removed from the file and its size returned;
    any other unreadable line fails naming ``file:line``.
    """
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    torn = 0
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        torn = len(data) - keep
        with open(path, "r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    rows = []
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DistillError(
                f"{path}:{n}: not valid JSON ({err.msg}); fix or delete that line, or write to another output (--out)"
            ) from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise DistillError(
                f"{path}:{n}: a row without a string 'id': not a file rema distill wrote; write to "
                "another output (--out)"
            )
        rows.append(row)
    return rows, torn


def rewrite_rows(path: Path, rows: list[dict]) -> None:
    """Replace ``path`` by ``rows`` atomically (write a sibling, then rename over it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


class Appender:
    """Appends JSON lines to a file; each row is on disk (flushed and fsync'ed) when :meth:`write` returns."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()
