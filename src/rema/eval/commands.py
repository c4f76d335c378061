"""CLI commands of the evaluation package: ``rema eval``, ``rema compare``, ``rema report``.

    rema eval --model smollm2-135m --method vrp --bench gsm8k --limit 50 --data-dir ../shared/data
    rema eval --run runs/x --bench math500 gsm8k aime24 --data-dir ../shared/data
    rema eval --mta-model A --ra-model B --method rema-single --bench my.jsonl --question-field q
    rema compare evals/a evals/b --out table.md
    rema compare --config compare.yaml
    rema report runs/x
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from rich.console import Console

from .bench_runner import METHODS, EvalError, EvalSettings


def _add_eval_args(e: argparse.ArgumentParser) -> None:
    src = e.add_argument_group("what to evaluate")
    src.add_argument("--model", default="smollm2-135m", help="model for both roles: built-in name, Hub id or folder")
    src.add_argument("--mta-model", help="separate weights: the meta-thinker's model")
    src.add_argument("--ra-model", help="separate weights: the reasoner's model")
    src.add_argument("--run", help="training run folder: evaluate its final/ weights with its config's method")
    src.add_argument("--checkpoint", help="with --run: checkpoints/<name> (or a path) instead of final/")
    src.add_argument("--method", choices=list(METHODS), help="default: the run's method, else vrp")
    src.add_argument("--label", help="model name shown in tables")
    data = e.add_argument_group("benchmarks")
    data.add_argument("--bench", nargs="+", default=["gsm8k"],
                      help="benchmark names (gsm8k math500 aime24 amc23 gaokao2023en minerva_math olympiadbench), "
                           "file paths, or hf:owner/name[:config][:split]")
    data.add_argument("--data-dir", help="folder with local benchmark files (e.g. ../shared/data); default: the Hub")
    data.add_argument("--limit", type=int, help="first N questions of each benchmark")
    data.add_argument("--question-field", help="file/hf benches: question column")
    data.add_argument("--answer-field", help="file/hf benches: answer column")
    data.add_argument("--id-field", help="file/hf benches: id column")
    data.add_argument("--level-field", help="file/hf benches: difficulty column")
    data.add_argument("--split", help="file/hf benches: split")
    data.add_argument("--task", default="auto", choices=["auto", "math", "judge"], help="file/hf benches: task")
    data.add_argument("--answer-format", default="auto", choices=["auto", "boxed", "gsm8k", "raw"])
    gen = e.add_argument_group("generation")
    gen.add_argument("--n", type=int, default=1, help="samples per question (pass@k, maj@k)")
    gen.add_argument("--temperature", type=float, help="default: greedy for --n 1, else 1.0")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--max-turns", type=int, help="multi-turn round limit (default: run config / 30)")
    gen.add_argument("--max-tokens", type=int, help="token limit per message (default: run config / 512)")
    gen.add_argument("--max-context", type=int, help="context budget per agent (default: run config / 4096)")
    gen.add_argument("--batch-size", type=int, default=16, help="questions per chunk (progress is saved per chunk)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", default="auto")
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    gen.add_argument("--engine", default="auto", choices=["auto", "hf", "vllm"],
                     help="generation backend (auto: vLLM when installed, else transformers)")
    gen.add_argument("--eager", action="store_true",
                     help="vLLM without compiling its model (starts in seconds, decodes ~1.3x slower)")
    gen.add_argument("--grader-timeout", type=float, default=5.0, help="seconds per graded answer")
    gen.add_argument("--grader-workers", type=int, default=1)
    e.add_argument("--out", help="output folder (default evals/<model>-<method>-<time>); an existing one resumes")


def _console() -> Console:
    """A rich console; when output is not a terminal (nohup, CI logs) use a wide fixed width so tables do
    not wrap their headers at rich's 80-column default."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    """Map parsed ``rema eval`` flags onto ``EvalSettings``."""
    return EvalSettings(
        benches=list(args.bench), model=args.model, mta_model=args.mta_model, ra_model=args.ra_model,
        run=args.run, checkpoint=args.checkpoint, method=args.method, data_dir=args.data_dir, limit=args.limit,
        n=args.n, temperature=args.temperature, top_p=args.top_p, max_turns=args.max_turns,
        max_tokens=args.max_tokens, max_context=args.max_context, batch_size=args.batch_size, seed=args.seed,
        device=args.device, dtype=args.dtype, engine=args.engine, eager=args.eager,
        grader_timeout_s=args.grader_timeout, grader_workers=args.grader_workers, out=args.out, label=args.label,
        question_field=args.question_field, answer_field=args.answer_field, id_field=args.id_field, level_field=args.level_field, split=args.split,
        task=args.task, answer_format=args.answer_format,
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from ..data import DataError
    from .bench_runner import run_benchmarks

    console = _console()
    try:
        run_benchmarks(settings_from_args(args), console=console)
    except (EvalError, DataError) as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    return 0


# --- compare --------------------------------------------------------------------------------------------


def run_compare_config(path: str | Path, *, console: Console | None = None, engines_factory=None) -> list[dict]:
    """Run every (model × method) eval a compare YAML lists (each resumable), return their summaries.

    YAML keys: ``models`` (names, or mappings of ``EvalSettings`` fields such as ``{run: runs/x, label: ReMA}``),
    ``methods``, ``benchmarks``, ``data_dir``, ``out`` (parent folder, default ``evals/compare``) and ``eval``
    (any other ``EvalSettings`` fields, e.g. ``{limit: 50, max_turns: 4}``). ``engines_factory(settings,
    cfg)`` replaces model loading (tests).
    """
    import re

    import yaml

    from .bench_runner import (build_config, load_engines, method_of, model_label, resolve_models,
                               run_benchmarks)

    spec = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(spec) - {"models", "methods", "benchmarks", "data_dir", "out", "eval", "description"}
    if unknown:
        raise EvalError(f"{path}: unknown key(s) {sorted(unknown)}; use models, methods, benchmarks, data_dir, "
                        "out, eval")
    fields = {f.name for f in dataclasses.fields(EvalSettings)}
    common = dict(spec.get("eval") or {})
    bad = set(common) - fields
    if bad:
        raise EvalError(f"{path}: eval: unknown field(s) {sorted(bad)}; valid: {sorted(fields)}")
    parent = Path(spec.get("out") or "evals/compare")
    models = spec.get("models") or ["smollm2-135m"]
    methods = spec.get("methods") or [None]
    cache: dict = {}
    summaries = []
    for m in models:
        entry = {"model": m} if isinstance(m, str) else dict(m)
        for method in methods:
            s = EvalSettings(**{**common, **entry, "method": method, "benches": list(spec.get("benchmarks") or ["gsm8k"]),
                                "data_dir": spec.get("data_dir", common.get("data_dir"))})
            cfg = build_config(s)
            s.out = str(parent / re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"{model_label(s)}-{method_of(cfg)}"))
            key = (resolve_models(s), s.dtype, s.device, cfg.rollout.method == "rema")
            if key not in cache:
                cache[key] = (engines_factory or load_engines)(s, cfg)
            summaries.append(run_benchmarks(s, engines=cache[key], console=console)[1])
    return summaries


def cmd_compare(args: argparse.Namespace) -> int:
    from .tables import compare_markdown, compare_table, load_summary, to_rich

    console = _console()
    try:
        summaries = [load_summary(d) for d in args.results]
        if args.config:
            summaries += run_compare_config(args.config, console=console)
    except (EvalError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    if not summaries:
        console.print("[red]error:[/red] give eval folders (RESULT_DIR ...) or --config compare.yaml")
        return 2
    headers, rows, bold = compare_table(summaries, metric=args.metric)
    console.print(to_rich(headers, rows, title=f"{args.metric} (%) — best per column highlighted", bold=bold,
                          label_cols=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(compare_markdown(summaries, metric=args.metric))
        console.print(f"[dim]wrote {args.out}[/dim]")
    return 0


# --- report ---------------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from .report import ReportError, build_report

    console = _console()
    try:
        out = build_report(args.run_dir, args.out, max_samples=args.max_samples)
    except ReportError as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    console.print(f"wrote {out}/report.html and {len(list(out.glob('*.png')))} plots")
    return 0


def add_eval_commands(sub) -> None:
    """Register the evaluation subcommands on the ``rema`` argparse subparsers."""
    e = sub.add_parser("eval", help="evaluate a model/method on benchmarks (resumable)",
                       description="Evaluate one model (or MTA/RA pair, or a run's final weights) with one method "
                                   "on benchmarks. Re-running with the same --out finishes what is missing.")
    _add_eval_args(e)
    e.set_defaults(func=cmd_eval)

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
