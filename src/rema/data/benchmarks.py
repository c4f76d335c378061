"""Named benchmarks (local file or Hugging Face Hub) and `resolve_dataset`, the one-string data selector.

`load_benchmark("gsm8k", data_dir="../shared/data")` reads ``gsm8k_test.jsonl`` from that folder;
without `data_dir` it downloads the Hub copy named in the registry. The local files follow the layout of
``shared/data/README.md``: every row has a `problem` and an already-extracted `answer`.

Hub ids are what existed when this file was written; they are community uploads and can be renamed,
re-split or deleted. When one disappears, pass a local file, or `load_problems("hf:<new id>", ...)` with
the field mapping, and update `alt_hf_ids` here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .loaders import load_problems
from .problems import DataError, Problem
from .sampler import stratified_split
from .synthetic import synthetic_problems, synthetic_split

__all__ = ["BENCHMARKS", "BenchmarkSpec", "held_out_split", "load_benchmark", "resolve_dataset"]


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a named benchmark lives and how its rows map onto `Problem`."""

    name: str
    """Registry key, also the id prefix of its problems (``gsm8k/17``)."""
    file: str
    """Local file name looked up in `data_dir` (same field layout as the shared data folder)."""
    hf_id: str | None
    """Hugging Face Hub dataset id used when no `data_dir` is given."""
    hf_split: str | None = "test"
    """Hub split."""
    hf_config: str | None = None
    """Hub configuration (``main`` for openai/gsm8k)."""
    hf_question_field: str | None = None
    """Hub question column; None = auto (`problem`, `question`, `prompt`)."""
    hf_answer_field: str | None = None
    """Hub answer column; None = auto (`answer`, `final_answer`, `solution`; `####` and boxes extracted)."""
    level_field: str | None = None
    """Column holding the difficulty level (MATH: ``level``); None = the benchmark has no levels."""
    task: str = "math"
    """``math`` or ``judge``."""
    hf_exclude: str | None = None
    """Another benchmark whose questions are removed from the Hub copy (the local file is pre-filtered)."""
    parts: tuple[str, ...] = ()
    """For a union of benchmarks: their names, loaded in order (then `file`/`hf_id` are unused)."""
    alt_hf_ids: tuple[str, ...] = ()
    """Other Hub copies known to exist (documentation; may need a different field mapping)."""
    description: str = ""


_QWEN_EVAL = "QwenLM/Qwen2.5-Math evaluation/data/{}/test.jsonl"

BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            "gsm8k",
            "gsm8k_test.jsonl",
            "openai/gsm8k",
            "test",
            "main",
            "question",
            "answer",
            description="GSM8K test, 1319 grade-school word problems (answer after ####).",
        ),
        BenchmarkSpec(
            "gsm8k_train",
            "gsm8k_train.jsonl",
            "openai/gsm8k",
            "train",
            "main",
            "question",
            "answer",
            description="GSM8K train, 7473 problems.",
        ),
        BenchmarkSpec(
            "math500",
            "math500_test.jsonl",
            "HuggingFaceH4/MATH-500",
            "test",
            None,
            "problem",
            "answer",
            level_field="level",
            description="MATH-500 (PRM800K split), in-distribution eval.",
        ),
        BenchmarkSpec(
            "aime24",
            "aime24.jsonl",
            "HuggingFaceH4/aime_2024",
            "train",
            None,
            "problem",
            "answer",
            alt_hf_ids=("math-ai/aime24",),
            description="AIME 2024, 30 problems, integer answers.",
        ),
        BenchmarkSpec(
            "amc23",
            "amc23.jsonl",
            "math-ai/amc23",
            "test",
            None,
            "question",
            "answer",
            description="AMC 2023, 40 problems.",
        ),
        BenchmarkSpec(
            "math_train",
            "math_train.jsonl",
            "DigitalLearningGmbH/MATH-lighteval",
            "train",
            None,
            "problem",
            "solution",
            level_field="level",
            alt_hf_ids=("EleutherAI/hendrycks_math",),
            description="Hendrycks MATH train, 7500 problems (answer = last \\boxed{} of the solution).",
        ),
        BenchmarkSpec(
            "math_test4500",
            "math_test4500_excl_math500.jsonl",
            "DigitalLearningGmbH/MATH-lighteval",
            "test",
            None,
            "problem",
            "solution",
            level_field="level",
            hf_exclude="math500",
            description="MATH test minus the MATH-500 problems (4500).",
        ),
        BenchmarkSpec(
            "math12k",
            "",
            None,
            parts=("math_train", "math_test4500"),
            level_field="level",
            description="math_train + math_test4500, the common 12k pool; levels=(3, 4, 5) gives ~8.9k.",
        ),
        # The three sets below are Hub-only here. Ids, splits and columns as the Qwen2.5-Math evaluation uses
        # them (QwenLM/Qwen2.5-Math evaluation/parser.py `parse_question` / `parse_ground_truth` @ a45202b):
        # gaokao2023en: `question`, `answer` with its `$` removed (Hub: MARIO-Math-Reasoning/Gaokao2023-Math-En,
        #   one split `train`, columns question, answer, source, lang, sourcename, id; the same rows as Qwen's
        #   evaluation/data/gaokao2023en/test.jsonl);
        # minerva_math: Qwen's file has `problem` + `solution` (answer = its last \boxed{}); the Hub copy
        #   math-ai/minervamath (split `test`) has the question in `question` and the bare answer in `answer`;
        # olympiadbench: `question`, `final_answer[0]` with its `$` stripped; `final_answer` is a list. Hub: the
        #   authors' upload Hothan/OlympiadBench (README of OpenBMB/OlympiadBench), config OE_TO_maths_en_COMP
        #   (open-ended, text-only, maths, English, competition: Qwen's 675 rows), one split `train`.
        BenchmarkSpec(
            "gaokao2023en",
            "gaokao2023en.jsonl",
            "MARIO-Math-Reasoning/Gaokao2023-Math-En",
            "train",
            None,
            "question",
            "answer",
            description="Gaokao 2023 math, English (385); local copy: " + _QWEN_EVAL.format("gaokao2023en"),
        ),
        BenchmarkSpec(
            "minerva_math",
            "minerva_math.jsonl",
            "math-ai/minervamath",
            "test",
            None,
            "question",
            "answer",
            description="Minerva math (272); local copy: " + _QWEN_EVAL.format("minerva_math"),
        ),
        BenchmarkSpec(
            "olympiadbench",
            "olympiadbench.jsonl",
            "Hothan/OlympiadBench",
            "train",
            "OE_TO_maths_en_COMP",
            "question",
            "final_answer",
            alt_hf_ids=("math-ai/olympiadbench",),
            description="OlympiadBench math, English, text-only, open-ended (675); local copy: "
            + _QWEN_EVAL.format("olympiadbench"),
        ),
        BenchmarkSpec(
            "rewardbench",
            "rewardbench.jsonl",
            "allenai/reward-bench",
            "filtered",
            None,
            "prompt",
            None,
            task="judge",
            description="RewardBench preference pairs for the LLM-as-a-judge task "
            "(chosen placed at A or B by a seeded coin).",
        ),
        BenchmarkSpec(
            "rewardbench_raw",
            "rewardbench_raw.jsonl",
            "allenai/reward-bench",
            "raw",
            None,
            "prompt",
            None,
            task="judge",
            description="RewardBench's 5123 pairs before its filtering (split `raw`), 23 subsets: "
            "the judge task's training pool (split it with split=train|heldout:heldout=N, stratified by subset).",
        ),
        BenchmarkSpec(
            "judgebench",
            "judgebench_gpt.jsonl",
            "ScalerLab/JudgeBench",
            "gpt",
            None,
            "question",
            "label",
            task="judge",
            description="JudgeBench, the 350 pairs of GPT-4o responses (labels A>B / B>A), the "
            "out-of-domain judge test; local copy: ScalerLab/JudgeBench data/dataset=judgebench,"
            "response_model=gpt-4o-2024-05-13.jsonl.",
        ),
        BenchmarkSpec(
            "judgebench_claude",
            "judgebench_claude.jsonl",
            "ScalerLab/JudgeBench",
            "claude",
            None,
            "question",
            "label",
            task="judge",
            description="JudgeBench, the 270 pairs of Claude-3.5-Sonnet responses; local "
            "copy: ScalerLab/JudgeBench data/dataset=judgebench,response_model=claude-3-5-sonnet-20240620.jsonl.",
        ),
    )
}
"""Benchmark name -> spec. Evaluation set of the paper: math500, gsm8k, aime24, amc23, gaokao2023en,
minerva_math, olympiadbench; training: math_train (single turn), math12k levels 3-5 (multi turn). The judge
task: rewardbench_raw (split into train / held out), judgebench and judgebench_claude (out of domain)."""


def _spec(name: str) -> BenchmarkSpec:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise DataError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}") from None


def load_benchmark(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    levels: Sequence[int] | None = None,
) -> list[Problem]:
    """Problems of a registered benchmark, from ``data_dir/<spec.file>`` or else the Hugging Face Hub.

    Args:
        name: a key of `BENCHMARKS`.
        data_dir: folder with the local files; when given the file must be there (no silent Hub
            fallback: an eval that quietly switched data source would not be comparable).
        limit: keep the first `limit` problems (after the level filter).
        levels: keep only these difficulty levels (MATH: 1-5); an error for benchmarks without levels.
    """
    spec = _spec(name)
    if levels is not None and spec.level_field is None:
        raise DataError(f"benchmark {name!r} has no difficulty levels; drop levels=...")
    if spec.parts:
        problems = [p for part in spec.parts for p in load_benchmark(part, data_dir=data_dir, levels=levels)]
        return problems[:limit] if limit is not None else problems
    if data_dir is not None:
        path = Path(data_dir).expanduser() / spec.file
        if not path.is_file():
            hub = f"; or omit data_dir to load {spec.hf_id} from the Hugging Face Hub" if spec.hf_id else ""
            raise DataError(
                f"benchmark {name!r} expects the file {path} (not found). Get it from the data README "
                f"({spec.description}){hub}"
            )
        # Local files follow the shared layout: `problem` plus an already-extracted `answer`.
        return load_problems(path, levels=levels, limit=limit, level_field=spec.level_field, task=spec.task, name=name)
    if spec.hf_id is None:
        raise DataError(f"benchmark {name!r} has no Hub copy; pass data_dir=... holding {spec.file}")
    exclude: set[str] = set()
    if spec.hf_exclude:
        exclude = {p.question.strip() for p in load_benchmark(spec.hf_exclude)}
    problems = load_problems(
        spec.hf_id,
        config=spec.hf_config,
        split=spec.hf_split,
        question_field=spec.hf_question_field,
        answer_field=spec.hf_answer_field,
        level_field=spec.level_field,
        task=spec.task,
        levels=levels,
        limit=None if exclude else limit,
        name=name,
    )
    if exclude:
        problems = [p for p in problems if p.question.strip() not in exclude]
        problems = problems[:limit] if limit is not None else problems
    return problems


def _parse_options(parts: Sequence[str], where: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise DataError(f"{where}: expected key=value, got {part!r}")
        options[key.strip()] = value.strip()
    return options


def _int_list(value: str, where: str) -> tuple[int, ...]:
    """ "1,2,3" -> (1, 2, 3); "3-5" -> (3, 4, 5)."""
    try:
        if "-" in value:
            lo, hi = value.split("-")
            return tuple(range(int(lo), int(hi) + 1))
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise DataError(f"{where}: levels must look like 1,2,3 or 3-5, got {value!r}") from None


def parse_hf_spec(spec: str, default_split: str | None = None) -> tuple[str, str | None, str | None]:
    """``hf:owner/name[:config][:split]`` -> ``(owner/name, config, split)`` (empty parts are None; the split
    defaults to ``default_split``). Anything else is a :class:`DataError` naming the form."""
    parts = spec.strip()[3:].split(":") if spec.strip().startswith("hf:") else []
    if not parts or not parts[0] or len(parts) > 3:
        raise DataError(f"{spec!r}: expected hf:owner/name[:config][:split], e.g. hf:openai/gsm8k:main:test")
    config = (parts[1] or None) if len(parts) > 1 else None
    split = (parts[2] or None) if len(parts) > 2 else default_split
    return parts[0], config, split


def resolve_dataset(
    spec: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
) -> list[Problem]:
    """Problems from one string, so the CLI and YAML configs need a single field. Accepted forms:

    * a benchmark name, optionally with options: ``math500``, ``math12k:levels=3,4,5``,
      ``gsm8k:limit=100`` (``levels=3-5`` also works); uses `data_dir` when given, else the Hub;
    * a file or folder path: ``data/train.jsonl``, ``x.parquet`` (relative to `data_dir` first);
    * either of the two with a seeded held-out split: ``split=train|heldout:heldout=N`` (N problems, or a
      share such as ``0.2``, held out; ``rewardbench_raw:split=heldout:heldout=970``), stratified by
      ``meta[by]`` in proportion (``by=subset`` by default; ``by=level`` for MATH), ``seed=S`` (default 0).
      ``train`` and ``heldout`` of the same options never share a problem (`held_out_split`);
    * synthetic: ``synthetic:levels=1,2,3:n=200:seed=0`` with optional ``word=0|1|0.5``,
      ``phrasing=all|train|heldout`` (which wordings: ``train`` and ``heldout`` share no template, so a model
      trained on one is tested on phrasings it never saw; default ``all``, see :mod:`rema.data.synthetic`) and
      ``split=all|train|heldout`` (``train``/``heldout`` come from `synthetic_split` with
      ``heldout=N`` problems per level, default 100; for ``split=heldout`` `n` is ignored);
    * a Hub dataset: ``hf:owner/name[:config][:split]``, e.g. ``hf:openai/gsm8k:main:test``.

    `limit` caps the result (a ``limit=`` option in the string wins). `question_field` / `answer_field` name the
    columns of a file or Hub dataset (with or without options); benchmarks know their own.
    """
    text = spec.strip()
    if not text:
        raise DataError("empty data spec: give a benchmark name, a file, synthetic:... or hf:owner/name")
    if text.startswith("synthetic"):
        return _resolve_synthetic(text, limit)
    if text.startswith("hf:"):
        source, config, split_name = parse_hf_spec(text)
        return load_problems(
            source,
            config=config,
            split=split_name,
            limit=limit,
            question_field=question_field,
            answer_field=answer_field,
        )
    name, _, rest = text.partition(":")
    if name in BENCHMARKS:
        return _resolve_benchmark(name, rest, spec, data_dir, limit)
    if rest and "=" in rest and not Path(text).expanduser().exists():  # a file with options: "x.jsonl:split=train:..."
        opts = _parse_options(rest.split(":"), spec)
        unknown = set(opts) - {"limit", *_SPLIT_OPTIONS}
        if "split" in opts and not unknown:
            limit = int(opts["limit"]) if "limit" in opts else limit
            return held_out_split(
                load_problems(name, data_dir=data_dir, question_field=question_field, answer_field=answer_field),
                opts,
                spec,
                limit,
            )

    candidates = [Path(text).expanduser()]
    if data_dir is not None and not Path(text).is_absolute():
        candidates.insert(0, Path(data_dir).expanduser() / text)
    if any(c.exists() for c in candidates):
        return load_problems(
            text, data_dir=data_dir, limit=limit, question_field=question_field, answer_field=answer_field
        )
    looked = f" (also looked in {os.fspath(data_dir)})" if data_dir is not None else ""
    raise DataError(
        f"cannot resolve dataset {spec!r}: not a benchmark ({', '.join(sorted(BENCHMARKS))}), not an existing "
        f"path{looked}, and not 'synthetic:levels=1,2,3:n=200:seed=0' or 'hf:owner/name[:config][:split]'"
    )


def _resolve_benchmark(
    name: str, rest: str, spec: str, data_dir: str | os.PathLike[str] | None, limit: int | None
) -> list[Problem]:
    """Benchmark ``name`` with the options after it (``rest``: ``levels=``, ``limit=``, a held-out split's);
    errors quote the whole `spec`."""
    opts = _parse_options([r for r in rest.split(":") if r], spec)
    unknown = set(opts) - {"levels", "limit", *_SPLIT_OPTIONS}
    if unknown:
        raise DataError(
            f"{spec!r}: unknown option(s) {sorted(unknown)}; benchmarks take levels=, limit=, "
            "split=train|heldout with heldout=N, by=, seed="
        )
    levels = _int_list(opts["levels"], spec) if "levels" in opts else None
    limit = int(opts["limit"]) if "limit" in opts else limit
    if "split" not in opts:
        return load_benchmark(name, data_dir=data_dir, limit=limit, levels=levels)
    return held_out_split(load_benchmark(name, data_dir=data_dir, levels=levels), opts, spec, limit)


_SPLIT_OPTIONS = ("split", "heldout", "by", "seed")


def held_out_split(
    problems: Sequence[Problem], opts: dict[str, str], spec: str, limit: int | None = None
) -> list[Problem]:
    """One side of a seeded, stratified train / held-out split of ``problems`` (`stratified_split`):
    ``opts["split"]`` is ``train`` or ``heldout``, ``opts["heldout"]`` how many problems are held out (an
    integer, or a share below 1 such as ``0.2``), ``opts["by"]`` the ``meta`` key whose groups keep their
    proportions (default ``subset``), ``opts["seed"]`` the seed (default 0). The same options give the same
    split on every machine and run (sha256-seeded), so a config re-creates it. `limit` caps the side returned."""
    which = opts.get("split")
    if which not in ("train", "heldout"):
        raise DataError(f"{spec!r}: split must be train or heldout, got {which!r}")
    if "heldout" not in opts:
        raise DataError(f"{spec!r}: split={which} needs heldout=N (problems held out, or a share like 0.2)")
    try:
        share = float(opts["heldout"])
        seed = int(opts.get("seed", "0"))
    except ValueError as e:
        raise DataError(f"{spec!r}: bad option value ({e})") from None
    if not math.isfinite(share):
        raise DataError(f"{spec!r}: heldout={opts['heldout']} must be a share in (0, 1) or a whole number of problems")
    n_test = round(share * len(problems)) if 0 < share < 1 else int(share)
    if share != n_test and not 0 < share < 1 or not 0 <= n_test <= len(problems):
        raise DataError(
            f"{spec!r}: heldout={opts['heldout']} must be a share in (0, 1) or a whole number of "
            f"problems up to {len(problems)} (the set has {len(problems)})"
        )
    train, heldout = stratified_split(problems, n_test, key=opts.get("by", "subset"), seed=seed)
    side = train if which == "train" else heldout
    return side[:limit] if limit is not None else side


def _resolve_synthetic(text: str, limit: int | None) -> list[Problem]:
    """``synthetic:levels=1,2,3:n=200:seed=0[:word=1][:phrasing=all|train|heldout][:split=all|train|heldout]
    [:heldout=100][:limit=N]``."""
    head, *rest = text.split(":")
    if head != "synthetic":
        raise DataError(f"{text!r}: did you mean 'synthetic:levels=1,2,3:n=200:seed=0'?")
    opts = _parse_options(rest, text)
    unknown = set(opts) - {"levels", "n", "seed", "word", "phrasing", "split", "heldout", "limit"}
    if unknown:
        raise DataError(
            f"{text!r}: unknown option(s) {sorted(unknown)}; use levels, n, seed, word, phrasing, split, heldout"
        )
    phrasing = opts.get("phrasing", "all")
    try:
        levels = _int_list(opts.get("levels", "1,2,3"), text)
        n, seed = int(opts.get("n", "200")), int(opts.get("seed", "0"))
        word_text = opts.get("word", "1")
        word: bool | float = bool(int(word_text)) if word_text in ("0", "1") else float(word_text)
        n_heldout = int(opts.get("heldout", "100"))
        limit = int(opts["limit"]) if "limit" in opts else limit
    except ValueError as e:
        raise DataError(f"{text!r}: bad option value ({e})") from None
    which = opts.get("split", "all")
    if which == "all":
        problems = synthetic_problems(n, levels=levels, seed=seed, word_problems=word, phrasing=phrasing)
    elif which in ("train", "heldout"):
        split = synthetic_split(
            levels, n if which == "train" else 0, n_heldout, seed, word_problems=word, phrasing=phrasing
        )
        problems = split.train if which == "train" else [p for lv in levels for p in split.heldout[lv]]
    else:
        raise DataError(f"{text!r}: split must be all, train or heldout, got {which!r}")
    return problems[:limit] if limit is not None else problems


def dataset_names(specs: Sequence[str]) -> list[str]:
    """Short, distinct names for data specs, used in metric keys (``eval/<name>/acc``): a benchmark's registry
    name without its options (``math12k:levels=3-5`` -> ``math12k``), ``synthetic``, a Hub dataset's name
    (``hf:openai/gsm8k:main:test`` -> ``gsm8k``), or a file's stem, also without options (``pairs.jsonl:split=
    heldout:heldout=8`` -> ``pairs``); characters outside ``[A-Za-z0-9_.-]`` become ``_``. Repeats get ``-2``,
    ``-3``...; ``avg`` (the average's key) is never a set's name."""
    names: list[str] = []
    for spec in specs:
        text = spec.strip()
        head = text.partition(":")[0]
        if head in BENCHMARKS or head == "synthetic":
            base = head
        elif text.startswith("hf:"):
            base = text[3:].split(":")[0].rstrip("/").split("/")[-1]
        else:
            options = text.partition(":")[2]
            path = Path((head if "=" in options else text).rstrip("/"))
            base = path.stem if path.suffix in (".jsonl", ".json", ".parquet") else path.name
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", base) or "set"
        name, k = base, 1
        while name in names or name == "avg":
            k += 1
            name = f"{base}-{k}"
        names.append(name)
    return names


def load_split(
    spec: str | None,
    *,
    data_dir: str | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    levels: Sequence[int] | None = None,
    limit: int | None = None,
) -> list[Problem]:
    """The problems of one data spec (``data.train``, ``data.eval``): a file read with the given field
    mapping, or anything :func:`resolve_dataset` accepts; then only the given difficulty ``levels``.
    ``None`` gives no problems; a spec that yields none fails, naming the filter."""
    if spec is None:
        return []
    problems = resolve_dataset(spec, data_dir, limit=limit, question_field=question_field, answer_field=answer_field)
    if levels:
        problems = [p for p in problems if p.meta.get("level") in set(levels)]
    if not problems:
        raise DataError(
            f"data spec {spec!r} gave no problems (levels filter: {levels}); check the spec and data.levels"
        )
    return problems
