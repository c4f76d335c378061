"""CLI commands of the evaluation package: ``rema eval``, ``rema compare``, ``rema report``.

``rema eval`` builds its ``Config`` as every command does, ``[CONFIG] [section.key=value ...]``, with flags as
shorthands for config keys (:func:`rema.cli_args.config_from_args`); what to evaluate is the config's ``eval``
section.

    rema eval --model smollm2-135m --method vrp --bench gsm8k --limit 50 --data-dir ../shared/data
    rema eval --run runs/x --bench math500 gsm8k aime24 --data-dir ../shared/data
    rema eval configs/demo.yaml eval.limit=20 --bench gsm8k
    rema eval --model A --ra-model B --method rema-single --bench my.jsonl --question-field q
    rema compare evals/a evals/b --out table.md
    rema compare --config compare.yaml
    rema report runs/x
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from rich.console import Console

from ..cli_args import Shorthands, add_config_args, add_generation_shorthands, as_override, config_from_args, ra_model
from ..config import METHODS, Config, method_of, method_overrides
from ..runtime import SetupError, command_config, load_engines, resolve_models
from .bench_runner import EvalError

_OVERRIDE = re.compile(r"^[A-Za-z_]+\.[A-Za-z_]+=")
"""A ``section.key=value`` override (benchmark specs such as ``math500:levels=1,2`` have a colon first)."""


def _add_eval_args(e: argparse.ArgumentParser) -> Shorthands:
    """Register ``rema eval``'s flags; returns them with the config keys they stand for."""
    sh = Shorthands()
    _add_model_args(sh, e)
    _add_bench_args(sh, e)
    _add_generation_args(sh, e)
    sh.add(
        e,
        "--out",
        key="eval.out",
        help="output folder (default evals/<model>-<method>-<time>); an existing one resumes",
    )
    return sh


def _add_model_args(sh: Shorthands, e: argparse.ArgumentParser) -> None:
    """``rema eval``'s "what to evaluate" flags: the model(s) or a training run, the method, the label."""
    src = e.add_argument_group("what to evaluate")
    sh.add(
        src,
        "--model",
        "--mta-model",
        key="model.name",
        help="model (with --ra-model: the meta-thinker's): built-in name, Hub id or folder",
    )
    sh.add(
        src,
        "--ra-model",
        key=ra_model,
        help="separate weights: the reasoner's model [model.ra_name, train.shared_weights=false]",
    )
    sh.add(
        src,
        "--run",
        key="eval.run",
        help="training run folder: evaluate its final/ weights; its config.yaml is the base config",
    )
    sh.add(
        src,
        "--checkpoint",
        key="eval.checkpoint",
        help="with --run: step_N, latest, best (the healthy checkpoint with the best held-out accuracy) or final "
        "(or a model folder); a checkpoint is exported to RUN/exports first",
    )
    sh.add(
        src,
        "--method",
        choices=list(METHODS),
        key=method_overrides,
        help="default: the config's (a run's own) [rollout.method, rollout.mode, rollout.action_set]",
    )
    sh.add(src, "--label", key="eval.label", help="model name shown in tables")


def _add_bench_args(sh: Shorthands, e: argparse.ArgumentParser) -> None:
    """``rema eval``'s "benchmarks" flags: which benchmarks, where their files are, and how a file's columns
    are read."""
    data = e.add_argument_group("benchmarks")
    sh.add(
        data,
        "--bench",
        nargs="+",
        key="eval.benches",
        help="benchmark names (gsm8k math500 aime24 amc23 gaokao2023en minerva_math olympiadbench), file paths, "
        "or hf:owner/name[:config][:split]",
    )
    sh.add(data, "--data-dir", key="data.data_dir", help="folder with local benchmark files (e.g. ../shared/data)")
    sh.add(data, "--limit", type=int, key="eval.limit", help="first N questions of each benchmark")
    sh.add(data, "--question-field", key="data.question_field", help="file/hf benches: question column")
    sh.add(data, "--answer-field", key="data.answer_field", help="file/hf benches: answer column")
    sh.add(data, "--id-field", key="eval.id_field", help="file/hf benches: id column")
    sh.add(data, "--level-field", key="eval.level_field", help="file/hf benches: difficulty column")
    sh.add(data, "--split", key="eval.split", help="file/hf benches: split")
    sh.add(data, "--task", key="eval.task", help="file/hf benches: task")
    sh.add(data, "--answer-format", key="eval.answer_format", help="file/hf benches: how answers are written")


def _add_generation_args(sh: Shorthands, e: argparse.ArgumentParser) -> None:
    """``rema eval``'s "generation" flags: samples, temperature, batching, dtype, vLLM eager, the grader."""
    gen = e.add_argument_group("generation")
    sh.add(gen, "--n", type=int, key="eval.n", help="samples per question (pass@k, maj@k; needs --temperature > 0)")
    sh.add(gen, "--temperature", type=float, key="rollout.eval_temperature", help="0 = greedy")
    add_generation_shorthands(sh, gen)
    sh.add(
        gen, "--batch-size", type=int, key="eval.batch_size", help="questions per chunk (progress is saved per chunk)"
    )
    sh.add(gen, "--dtype", key="model.dtype", help="weights' dtype")
    sh.add(
        gen,
        "--eager",
        action="store_const",
        const=True,
        key="rollout.vllm_enforce_eager",
        help="vLLM without compiling its model (starts in seconds, decodes ~1.3x slower)",
    )
    sh.add(gen, "--grader-timeout", type=float, key="reward.grader_timeout_s", help="seconds per graded answer")
    sh.add(gen, "--grader-workers", type=int, key="reward.grader_workers", help="grader processes")


def _console() -> Console:
    """A rich console; when output is not a terminal (nohup, CI logs) use a wide fixed width so tables do
    not wrap their headers at rich's 80-column default."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def eval_config_from_args(args: argparse.Namespace) -> Config | None:
    """The Config of a parsed ``rema eval`` line (:func:`~rema.cli_args.config_from_args`: base CONFIG, else the
    ``--run``'s config.yaml, else the defaults; then the flags; then the dotted overrides); None when
    ``--help-config`` printed it."""
    bench = list(args.bench or [])
    # `--bench a b CONFIG k=v`: argparse hands the trailing config file and overrides to --bench's list
    trailing = [b for b in bench if _OVERRIDE.match(b) or b.endswith((".yaml", ".yml"))]
    args.overrides = list(args.overrides) + trailing
    args.bench = [b for b in bench if b not in trailing] or None
    return config_from_args(args)


def cmd_eval(args: argparse.Namespace) -> int:
    """``rema eval``: errors (a bad key, an unknown benchmark, a bad row) are ``rema``'s one-line errors."""
    from .bench_runner import dry_run, run_benchmarks

    cfg = eval_config_from_args(args)
    if cfg is None:
        return 0
    if args.dry_run:
        print("\n".join(dry_run(cfg)))
        return 0
    run_benchmarks(cfg, console=_console())
    return 0


# --- compare --------------------------------------------------------------------------------------------


_OLD_NAMES = {"mta_model": "model.name", "benches": "eval.benches", "grader_timeout_s": "reward.grader_timeout_s"}
"""Field names of the former ``EvalSettings`` that differ from a flag's name (compare files written for it)."""


def _compare_overrides(mapping: dict, where: str) -> list[str]:
    """Dotted overrides from a compare YAML mapping whose keys are config keys, dotted (``eval.limit: 50``) or
    nested (``rollout: {max_turns: 4}``), or ``rema eval`` flag names (``limit: 50``, ``max_tokens: 32``)."""
    flags = _add_eval_args(argparse.ArgumentParser())
    sections = {f.name for f in dataclasses.fields(Config)}
    out: list[str] = []
    for key, value in mapping.items():
        name = str(key).replace("-", "_")
        if name in sections and isinstance(value, dict):
            out += [as_override(f"{name}.{k}", v) for k, v in value.items()]
        elif "." in name:
            out.append(as_override(name, value))
        elif name in _OLD_NAMES:
            out.append(as_override(_OLD_NAMES[name], value))
        elif name in flags.keys:
            out += [as_override(k, v) for k, v in flags.pairs(name, value)]
        else:
            raise EvalError(
                f"{where}: unknown key {key!r}; use config keys (eval.limit: 50, or rollout: "
                f"{{max_turns: 4}}; see rema eval --help-config) or flag names {sorted(flags.keys)}"
            )
    return out


def run_compare_config(path: str | Path, *, console: Console | None = None, engines_factory=None) -> list[dict]:
    """Run every (model × method) eval a compare YAML lists (each resumable), return their summaries.

    YAML keys: ``models`` (names, or mappings such as ``{run: runs/x, label: ReMA}``), ``methods``
    (``rema eval --method`` names; none = the config's), ``benchmarks``, ``data_dir``, ``out`` (parent folder,
    default ``evals/compare``), ``config`` (a base config file; default: each run's own, else the defaults)
    and ``eval`` (settings for all: config keys, dotted or nested, e.g. ``{eval.limit: 50, rollout:
    {max_turns: 4}}``; ``rema eval`` flag names such as ``limit`` or ``max_tokens`` are read too). Later wins:
    ``eval``, the model's entry, ``benchmarks``/``data_dir``, the method. ``engines_factory(cfg)`` replaces
    model loading (tests).
    """
    import yaml

    from .bench_runner import model_label, run_benchmarks

    spec = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(spec) - {"models", "methods", "benchmarks", "data_dir", "out", "eval", "config", "description"}
    if unknown:
        raise EvalError(
            f"{path}: unknown key(s) {sorted(unknown)}; use models, methods, benchmarks, data_dir, out, config, eval"
        )
    common = _compare_overrides(spec.get("eval") or {}, f"{path}: eval")
    shared = ([as_override("eval.benches", list(spec["benchmarks"]))] if spec.get("benchmarks") else []) + (
        [as_override("data.data_dir", spec["data_dir"])] if spec.get("data_dir") is not None else []
    )
    parent = Path(spec.get("out") or "evals/compare")
    cache: dict = {}
    summaries = []
    for m in spec.get("models") or ["smollm2-135m"]:
        entry = _compare_overrides({"model": m} if isinstance(m, str) else dict(m), f"{path}: models")
        for method in spec.get("methods") or [None]:
            chosen = [as_override(k, v) for k, v in method_overrides(method)] if method else []
            cfg = command_config(spec.get("config"), common + entry + shared + chosen)
            cfg.eval.out = str(parent / re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"{model_label(cfg)}-{method_of(cfg)}"))
            key = (
                resolve_models(cfg),
                cfg.model.dtype,
                cfg.model.device,
                cfg.rollout.engine,
                cfg.rollout.method == "rema",
            )
            if key not in cache:
                cache[key] = (engines_factory or load_engines)(cfg)
            summaries.append(run_benchmarks(cfg, engines=cache[key], console=console)[1])
    return summaries


def cmd_compare(args: argparse.Namespace) -> int:
    from .tables import compare_markdown, compare_table, load_summary, to_rich

    console = _console()
    try:
        summaries = [load_summary(d) for d in args.results]
        if args.config:
            summaries += run_compare_config(args.config, console=console)
    except (SetupError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    if not summaries:
        console.print("[red]error:[/red] give eval folders (RESULT_DIR ...) or --config compare.yaml")
        return 2
    headers, rows, bold = compare_table(summaries, metric=args.metric)
    console.print(
        to_rich(headers, rows, title=f"{args.metric} (%) — best per column highlighted", bold=bold, label_cols=2)
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(compare_markdown(summaries, metric=args.metric))
        console.print(f"[dim]wrote {args.out}[/dim]")
    return 0


# --- report ---------------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from .report import ReportError, build_report, event_lines, read_jsonl

    console = _console()
    try:
        out = build_report(args.run_dir, args.out, max_samples=args.max_samples)
    except ReportError as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    console.print(f"wrote {out}/report.html and {len(list(out.glob('*.png')))} plots")
    lines = event_lines(read_jsonl(Path(args.run_dir) / "metrics.jsonl"))
    if lines:  # train.health's events, also marked on the plots
        console.print(f"[bold]{len(lines)} health event(s)[/bold]")
        for line in lines:
            console.print(f"  {line}", highlight=False)
    return 0


def add_eval_commands(sub) -> None:
    """Register the evaluation subcommands on the ``rema`` argparse subparsers."""
    e = sub.add_parser(
        "eval",
        help="evaluate a model/method on benchmarks (resumable)",
        description="rema eval [CONFIG] [section.key=value ...] [flags]: evaluate one model (or MTA/RA pair, or a "
        "run's final weights) with one method on benchmarks, under a config built as `rema train` "
        "builds it (base: CONFIG, else the --run's config.yaml, else the defaults). Each flag is a "
        "shorthand for the config key in brackets; dotted overrides win over flags. Re-running with "
        "the same --out finishes what is missing.",
    )
    add_config_args(e, "eval.limit=50 rollout.max_turns=4")
    e.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config, the first rows of every benchmark, the tokenizer and one episode's prompts "
        "against the context, and print what would run; no weights load, nothing is written",
    )
    e.set_defaults(func=cmd_eval, shorthands=_add_eval_args(e))

    c = sub.add_parser("compare", help="compare eval results in one table (paper Table 1 layout)")
    c.add_argument("results", nargs="*", help="folders written by `rema eval`")
    c.add_argument("--config", help="YAML listing models × methods × benchmarks to evaluate first")
    c.add_argument("--metric", default="score", help="summary key to compare (score, maj@8, pass@8, ...)")
    c.add_argument("--out", help="write the table as Markdown here")
    c.set_defaults(func=cmd_compare)

    r = sub.add_parser("report", help="plots and an HTML dialogue browser for a training run")
    r.add_argument("run_dir", help="run folder (metrics.jsonl, samples.jsonl, config.yaml)")
    r.add_argument("--out", help="output folder (default RUN_DIR/report)")
    r.add_argument("--max-samples", type=int, default=3000, help="most dialogues embedded in the page")
    r.set_defaults(func=cmd_report)
