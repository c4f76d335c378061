"""Load `Problem`s from JSONL, JSON, parquet, a `datasets` folder, or a Hugging Face Hub dataset.

Every source goes through one row converter, so field mapping, answer extraction and error messages are
the same whatever the format. A malformed row stops the load at once with ``where: what; what to do``
(``data/x.jsonl:17: missing field 'answer' (available: problem, solution); pass answer_field=...``):
training on silently skipped or half-parsed rows is worse than not starting.

The `datasets` library is imported lazily: it costs about a second, and JSONL/parquet do not need it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .problems import DataError, Problem, judge_problem_from_pair, normalize_answer_value, parse_level

__all__ = ["ANSWER_FIELDS", "QUESTION_FIELDS", "load_problems", "row_to_problem"]

QUESTION_FIELDS: tuple[str, ...] = ("problem", "question", "prompt")
"""Question columns tried in order when `question_field` is not given."""
ANSWER_FIELDS: tuple[str, ...] = ("answer", "final_answer", "solution")
"""Answer columns tried in order when `answer_field` is not given (a `solution` yields its last box)."""
ID_FIELDS: tuple[str, ...] = ("id", "unique_id", "idx", "pair_id")
LEVEL_FIELDS: tuple[str, ...] = ("level", "difficulty")
SUBJECT_FIELDS: tuple[str, ...] = ("subject", "type")
FILE_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".parquet")


def load_problems(
    source: str | os.PathLike[str],
    *,
    split: str | None = None,
    config: str | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    level_field: str | None = None,
    answer_format: str = "auto",
    task: str = "auto",
    levels: Sequence[int] | None = None,
    limit: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    id_prefix: str | None = None,
    revision: str | None = None,
    judge_seed: int = 0,
    name: str | None = None,
) -> list[Problem]:
    """Load problems from a file, a local `datasets` folder, or a Hugging Face Hub dataset id.

    Args:
        source: ``*.jsonl`` (one object per line), ``*.json`` (a list of objects or ``{"data": [...]}``),
            ``*.parquet``, a folder written by ``Dataset.save_to_disk`` (or any folder `datasets` can
            read), or a Hub id such as ``"openai/gsm8k"``. A relative path is looked up in `data_dir`
            first, then the working directory; a string that is no existing path and has no file suffix
            is treated as a Hub id.
        split: Hub/`datasets` split (e.g. ``"test"``). None: the only split, or an error listing them.
        config: Hub configuration name (``"main"`` for openai/gsm8k).
        question_field: column holding the question; default: the first of `QUESTION_FIELDS` present.
        answer_field: column holding the answer; default: the first of `ANSWER_FIELDS` present.
        id_field: column holding a stable id; default: ``id``, ``unique_id``, ``idx``, else the row index.
        level_field: column holding the difficulty; default ``level`` then ``difficulty``.
            ``"Level 3"`` and ``3`` both become ``meta["level"] == 3``.
        answer_format: ``auto`` (GSM8K ``####`` tail, last ``\\boxed{}``, or the value as is),
            ``boxed``, ``gsm8k`` or ``raw`` (see `normalize_answer_value`).
        task: ``math``, ``judge`` (rows with prompt/chosen/rejected as in RewardBench, or
            response_a/response_b/label, also JudgeBench's response_A/response_B with labels ``A>B``/``B>A``), or
            ``auto`` (judge when those columns are present).
        levels: keep only problems whose level is in this set (rows without a level are dropped).
        limit: stop after this many problems (after the level filter).
        data_dir: folder to resolve relative file names against.
        id_prefix: prefix for every id; default ``"<file stem or dataset name>/"``; ``""`` for none.
        revision: Hub revision (commit, tag or branch) to pin; Hub datasets change without notice.
        judge_seed: seed for placing the chosen response at A or B in preference pairs.
        name: short name recorded as ``meta["source"]`` (and the default id prefix); default: the file
            stem or the Hub dataset's name.

    Raises:
        DataError: missing file, unreadable row, missing or empty field, with ``file:line`` and a fix.
    """
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}")
    if task not in ("auto", "math", "judge"):
        raise DataError(f"unknown task {task!r}; use one of: auto, math, judge")
    level_set = set(levels) if levels is not None else None
    rows, source_name = _open_rows(source, split=split, config=config, data_dir=data_dir, revision=revision)
    source_name = name or source_name
    prefix = f"{source_name}/" if id_prefix is None else id_prefix

    problems: list[Problem] = []
    if limit == 0:
        return problems
    for index, (location, row) in enumerate(rows):
        problem = row_to_problem(
            row,
            location=location,
            index=index,
            source=source_name,
            question_field=question_field,
            answer_field=answer_field,
            id_field=id_field,
            level_field=level_field,
            answer_format=answer_format,
            task=task,
            id_prefix=prefix,
            judge_seed=judge_seed,
        )
        if level_set is not None and problem.level not in level_set:
            continue
        problems.append(problem)
        if limit is not None and len(problems) >= limit:
            break
    return problems


def row_to_problem(
    row: Any,
    *,
    location: str,
    index: int,
    source: str,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    level_field: str | None = None,
    answer_format: str = "auto",
    task: str = "auto",
    id_prefix: str = "",
    judge_seed: int = 0,
) -> Problem:
    """Convert one source row (a dict) into a `Problem`; `location` (``file:line``) prefixes every error."""
    if not isinstance(row, dict):
        raise DataError(f"{location}: expected a JSON object per row, got {type(row).__name__}")
    available = ", ".join(map(str, row)) or "none"
    pid = _problem_id(row, id_field, index, id_prefix, location=location, available=available)

    is_pair = "chosen" in row and "rejected" in row
    is_ab = _ab_fields(row) is not None
    if task == "judge" or (task == "auto" and (is_pair or is_ab)):
        return _judge_row(
            row,
            location=location,
            pid=pid,
            source=source,
            available=available,
            question_field=question_field,
            answer_field=answer_field,
            judge_seed=judge_seed,
        )

    q_name = _pick_field(row, question_field, QUESTION_FIELDS, "question", "question_field", location, available)
    question = row[q_name]
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{location}: empty question in field {q_name!r}; fix or remove the row")

    a_name = _pick_field(row, answer_field, ANSWER_FIELDS, "answer", "answer_field", location, available)
    raw_answer = row[a_name]
    answer = _reference_answer(raw_answer, a_name, answer_format, location=location, available=available)

    meta = {k: v for k, v in row.items() if k not in (q_name, a_name)}
    if isinstance(raw_answer, str) and raw_answer.strip() != answer:
        # Keep the worked solution (GSM8K's "... #### 72", MATH's boxed text): SFT and viewers use it.
        meta.setdefault("solution", raw_answer)
    meta.update(_normalized_meta(row, level_field=level_field, location=location, available=available))
    meta["source"] = source
    return Problem(id=pid, question=question, answer=answer, meta=meta)


def _pick_field(
    row: dict[str, Any],
    explicit: str | None,
    candidates: Sequence[str],
    what: str,
    arg: str,
    location: str,
    available: str,
) -> str:
    """The column that holds `what`: `explicit` (the row must have it), else the first of `candidates` it has;
    errors name the argument `arg` that picks it."""
    if explicit is not None:
        if explicit not in row:
            raise DataError(f"{location}: missing field {explicit!r} (available: {available}); pass {arg}=...")
        return explicit
    for name in candidates:
        if name in row:
            return name
    tried = ", ".join(repr(c) for c in candidates)
    raise DataError(f"{location}: no {what} field (tried {tried}; available: {available}); pass {arg}=...")


def _problem_id(
    row: dict[str, Any], id_field: str | None, index: int, id_prefix: str, *, location: str, available: str
) -> str:
    """``id_prefix`` + the row's id (`id_field`, else the first of `ID_FIELDS` it has, else its `index`)."""
    raw_id = row.get(id_field) if id_field is not None else next((row[k] for k in ID_FIELDS if k in row), None)
    if id_field is not None and id_field not in row:
        raise DataError(f"{location}: missing field {id_field!r} (available: {available}); pass id_field=...")
    return f"{id_prefix}{raw_id if raw_id is not None else index}"


def _reference_answer(raw_answer: Any, a_name: str, answer_format: str, *, location: str, available: str) -> str:
    """The reference answer in column `a_name`, normalized under `answer_format`; an empty one is an error."""
    mode = answer_format
    if a_name == "solution" and answer_format == "auto":
        # A worked solution only counts through its final marker (GSM8K "####" or MATH's last box):
        # the whole text is never a usable reference answer.
        mode = "gsm8k" if isinstance(raw_answer, str) and "####" in raw_answer else "boxed"
    answer = normalize_answer_value(raw_answer, mode=mode)
    if not answer:
        why = {"boxed": "no \\boxed{} in", "gsm8k": "no '####' in"}.get(mode, "empty answer in")
        if answer == "":
            why = "empty answer (e.g. an empty \\boxed{}) in"
        raise DataError(
            f"{location}: {why} field {a_name!r}; fix the row, or pass answer_field=/answer_format= "
            f"(available: {available})"
        )
    return answer


JUDGE_LABELS: dict[str, str] = {"A": "A", "B": "B", "A>B": "A", "B>A": "B"}
"""Label spellings of the judge task: plain (also ``[[A]]``, lower case) and JudgeBench's ``A>B`` / ``B>A``."""
JUDGE_PARTS = ("prompt", "response_a", "response_b")
"""The fields of a judge pair (a row, a dialogue file's row, a served request's JSON question)."""


def judge_label(value) -> str | None:
    """'A' or 'B' from a judge label as rows and users write it (``A``, ``[[b]]``, ``A>B``, ``B>A``); None
    for anything else."""
    return JUDGE_LABELS.get(str(value if value is not None else "").strip().strip("[]").upper())


def _ab_fields(row: dict[str, Any]) -> tuple[str, str] | None:
    """The names of a row's two response columns: ``response_a``/``response_b``, or JudgeBench's
    ``response_A``/``response_B``; None when it has neither pair."""
    for a, b in (("response_a", "response_b"), ("response_A", "response_B")):
        if a in row and b in row:
            return a, b
    return None


def _judge_row(
    row: dict[str, Any],
    *,
    location: str,
    pid: str,
    source: str,
    available: str,
    question_field: str | None,
    answer_field: str | None,
    judge_seed: int,
) -> Problem:
    """A judge Problem from prompt/chosen/rejected (preference pair) or prompt/response_a/response_b/label.

    The row's other columns go to ``meta``; a column named ``source`` (JudgeBench: ``mmlu-pro-law``, ...) is kept
    as ``meta["subset"]`` (RewardBench's name for the same thing), since ``meta["source"]`` names the data source.
    """
    q_name = question_field or next((k for k in ("prompt", *QUESTION_FIELDS) if k in row), None)
    if q_name is None or q_name not in row:
        raise DataError(f"{location}: judge row has no prompt field (available: {available}); pass question_field=...")
    prompt = _judge_text(row, q_name, location)
    if "chosen" in row and "rejected" in row:
        meta = _judge_meta(row, {q_name, "chosen", "rejected"}, source)
        chosen, rejected = _judge_text(row, "chosen", location), _judge_text(row, "rejected", location)
        return judge_problem_from_pair(
            id=pid, prompt=prompt, chosen=chosen, rejected=rejected, seed=judge_seed, meta=meta
        )
    names = _ab_fields(row)
    if names is None:
        raise DataError(
            f"{location}: judge row needs chosen/rejected or response_a/response_b (available: "
            f"{available}); fix the row or pass task=math"
        )
    label_name = answer_field or "label"
    label = judge_label(row.get(label_name))
    if label is None:
        raise DataError(
            f"{location}: judge label in field {label_name!r} must be 'A' or 'B' (or 'A>B' / 'B>A'), got "
            f"{row.get(label_name)!r}; pass answer_field=... (available: {available})"
        )
    meta = _judge_meta(row, {q_name, *names, label_name}, source)
    return Problem(
        id=pid,
        question=prompt,
        answer=label,
        meta=meta,
        prompt=prompt,
        response_a=_judge_text(row, names[0], location),
        response_b=_judge_text(row, names[1], location),
        label=label,
    )


def _judge_text(row: dict[str, Any], name: str, location: str) -> str:
    """The text of judge field `name`: a string that is not blank, or an error."""
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{location}: empty or missing judge field {name!r}; fix or remove the row")
    return value


def _judge_meta(row: dict[str, Any], used: set[str], source: str) -> dict[str, Any]:
    """The row's columns other than the `used` ones, a ``source`` column kept as ``subset``; ``source``: the data
    source."""
    meta = {k: v for k, v in row.items() if k not in used}
    if "source" in meta:
        meta.setdefault("subset", meta.pop("source"))
    meta["source"] = source
    return meta


def _normalized_meta(row: dict[str, Any], *, level_field: str | None, location: str, available: str) -> dict[str, Any]:
    """`level` as int-or-None (raw kept in `level_raw` when it does not parse) and `subject`."""
    out: dict[str, Any] = {}
    if level_field is not None and level_field not in row:
        raise DataError(f"{location}: missing field {level_field!r} (available: {available}); pass level_field=...")
    l_name = level_field or next((k for k in LEVEL_FIELDS if k in row), None)
    raw_level = row.get(l_name) if l_name else None
    out["level"] = parse_level(raw_level)
    if out["level"] is None and raw_level is not None:
        out["level_raw"] = raw_level  # e.g. MATH's "Level ?" or OlympiadBench's "Competition"
    s_name = next((k for k in SUBJECT_FIELDS if row.get(k)), None)
    if s_name is not None:
        out["subject"] = row[s_name]
    return out


# --- row sources ------------------------------------------------------------------------------------------

Rows = Iterator[tuple[str, Any]]


def _open_rows(
    source: str | os.PathLike[str],
    *,
    split: str | None,
    config: str | None,
    data_dir: str | os.PathLike[str] | None,
    revision: str | None,
) -> tuple[Rows, str]:
    """(iterator of (location, row), short source name) for any supported source."""
    path = _find_local(source, data_dir)
    if path is None:
        text = os.fspath(source)
        if isinstance(source, os.PathLike) or text.lower().endswith(FILE_SUFFIXES) or text.startswith((".", "/", "~")):
            where = f" (also looked in data_dir={os.fspath(data_dir)})" if data_dir is not None else ""
            raise DataError(f"{text}: file not found{where}; check the path or pass data_dir=...")
        return _hub_rows(text, split=split, config=config, revision=revision), text.rstrip("/").split("/")[-1]
    shown = os.fspath(source) if Path(os.fspath(source)) == path else str(path)
    name = path.stem if path.is_file() else path.name
    if path.is_dir():
        return _dataset_dir_rows(path, shown, split=split, config=config), name
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_rows(path, shown), name
    if suffix == ".json":
        return _json_rows(path, shown), name
    if suffix == ".parquet":
        return _parquet_rows(path, shown), name
    raise DataError(f"{shown}: unsupported file type {suffix!r}; use .jsonl, .json or .parquet")


def _find_local(source: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None) -> Path | None:
    p = Path(os.fspath(source)).expanduser()
    if data_dir is not None and not p.is_absolute():
        candidate = Path(data_dir).expanduser() / p
        if candidate.exists():
            return candidate
    return p if p.exists() else None


def _jsonl_rows(path: Path, shown: str) -> Rows:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{shown}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start}); fix the line") from e
            if not line.strip():
                continue  # blank lines (a trailing newline, hand-edited files) are not rows
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{shown}:{lineno}: invalid JSON ({e.msg} at column {e.colno}); fix or remove the line"
                ) from e
            yield f"{shown}:{lineno}", row


def _json_rows(path: Path, shown: str) -> Rows:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{shown}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{shown}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        got = f"an object with keys {sorted(data)}" if isinstance(data, dict) else type(data).__name__
        raise DataError(f'{shown}: expected a list of objects or {{"data": [...]}}, got {got}')
    for i, row in enumerate(data):
        yield f"{shown}[item {i}]", row


def _parquet_rows(path: Path, shown: str) -> Rows:
    import pyarrow.parquet as pq

    i = 0
    try:
        reader = pq.ParquetFile(path)
    except Exception as e:  # pyarrow's errors (ArrowInvalid, OSError) have no common base of their own
        raise DataError(f"{shown}: not a readable parquet file ({type(e).__name__}: {e})") from e
    # Streamed in record batches so `limit` on a large file does not read all of it.
    for batch in reader.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield f"{shown}[row {i}]", row
            i += 1


def _choose_split(ds: Any, split: str | None, shown: str) -> tuple[Any, str]:
    """Pick one split from a DatasetDict (or pass a Dataset through)."""
    if not hasattr(ds, "keys"):  # already a single Dataset
        return ds, split or "?"
    names = list(ds.keys())
    if split is None:
        if len(names) == 1:
            return ds[names[0]], names[0]
        raise DataError(f"{shown}: several splits ({', '.join(names)}); pass split=...")
    if split not in ds:
        raise DataError(f"{shown}: no split {split!r} (available: {', '.join(names)}); pass split=...")
    return ds[split], split


def _iter_dataset(ds: Any, where: str) -> Rows:
    for i, row in enumerate(ds):
        yield f"{where}[row {i}]", dict(row)


def _dataset_dir_rows(path: Path, shown: str, *, split: str | None, config: str | None) -> Rows:
    import datasets

    try:
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            ds = datasets.load_from_disk(str(path))  # written by Dataset(Dict).save_to_disk
        else:
            ds = datasets.load_dataset(str(path), config)  # a folder of data files `datasets` can infer
    except Exception as e:  # `datasets` raises many types (EmptyDatasetError, FileNotFoundError, ValueError, ...)
        raise DataError(
            f"{shown}: a folder, but not a dataset `datasets` can read ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]}); give a .jsonl/.json/.parquet file"
        ) from e
    ds, split_name = _choose_split(ds, split, shown)
    yield from _iter_dataset(ds, f"{shown}[{split_name}]")


def _hub_rows(name: str, *, split: str | None, config: str | None, revision: str | None) -> Rows:
    """Rows of a Hugging Face Hub dataset via `datasets.load_dataset` (downloads and caches on first use)."""
    import datasets

    shown = f"hf:{name}" + (f":{config}" if config else "")
    try:
        ds = datasets.load_dataset(name, config, split=split, revision=revision)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as e:
        # The Hub moves: ids get renamed, configs split, and offline machines cannot reach it at all.
        raise DataError(
            f"{shown}: could not load from the Hugging Face Hub ({type(e).__name__}: {e}); check the dataset "
            f"id/config/split, or download the data and pass a local file (data_dir=...)"
        ) from e
    ds, split_name = _choose_split(ds, split, shown)
    yield from _iter_dataset(ds, f"{shown}[{split_name}]")
