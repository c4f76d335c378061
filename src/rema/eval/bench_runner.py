"""``rema eval``: one model (or an MTA/RA pair, or a training run's final weights) × one method × benchmarks.

Flow per benchmark: load problems → skip those already in ``records/<bench>.jsonl`` (resume) → in chunks of
``batch_size`` questions: ``run_eval`` (rollout → scoring) → one record per question appended and fsynced →
at the end, summaries recomputed from the records → ``summary.json``, ``results.md``, ``results.csv``.

Judge benchmarks (pairwise preference data) are evaluated in both orders: every pair is also rolled out with
A and B swapped (label flipped), and the records hold both verdicts (see ``records.judge_record``).

An eval directory is tied to its settings: ``eval.json`` holds the fields that change results (models,
method, sampling, limits, prompts version), and resuming with different ones is refused, so a directory
never mixes two setups.

Settings are a ``Config`` like training's (``rema.config``): what to evaluate is its ``eval`` section, how to
generate its ``rollout``/``model``/``reward`` sections (``rollout.eval_temperature``, ``rollout.max_turns``,
``model.dtype``, ``reward.grader_timeout_s``, ...). :func:`rema.runtime.command_config` builds it the way
every command does (a run's ``config.yaml`` as the base for ``--run RUN``, the engine resolved); the models
and engines come from :func:`rema.runtime.load_engines`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..config import Config, ConfigError, method_of
from ..prompts import PROMPTS_VERSION, PromptSet, get_prompt_set
from ..rollout import Engine
from ..runtime import SetupError, load_engines, resolve_models
from ..scoring import run_eval
from .records import (
    append_records,
    average_benches,
    judge_record,
    math_record,
    read_records,
    summarize_bench,
)


class EvalError(SetupError):
    """A setup problem the user must fix (an eval folder holding other settings, a compare file's unknown key, ...)."""


# --- setup ----------------------------------------------------------------------------------------------


def model_label(cfg: Config) -> str:
    """Short model name for tables and the default output folder."""
    e = cfg.eval
    if e.label:
        return e.label
    if e.run:
        return Path(e.run).resolve().name + (f"@{e.checkpoint}" if e.checkpoint else "")
    mta, ra = resolve_models(cfg)

    def short(name: str) -> str:
        return Path(name.rstrip("/")).name or name

    return short(ra) if mta == ra else f"{short(mta)}+{short(ra)}"


def judge_prompts(cfg: Config) -> PromptSet:
    """The judge prompt set for the config's method and mode (``rema-judge``, ``rema-judge-multi``,
    ``vrp-judge``, ``mrp-judge``: ``Config.method_name`` under ``rollout.task=judge``)."""
    if cfg.rollout.action_set:
        raise ConfigError(
            "--method rema-actions has no judge prompts; use rema-single, rema-multi, vrp or mrp for judge data"
        )
    return get_prompt_set(dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, task="judge")).method_name)


def bench_name(spec: str) -> str:
    """File-safe short name of a benchmark spec (``gsm8k``, ``my_file`` for ``data/my_file.jsonl``)."""
    from ..data import BENCHMARKS

    head = spec.split(":", 1)[0]
    if head in BENCHMARKS:
        return spec.replace(":", "_").replace("=", "").replace(",", "-")
    if spec.startswith("hf:"):
        spec = spec[3:].split(":", 1)[0].split("/")[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(spec).stem if Path(spec).suffix else Path(spec).name) or "bench"


def load_bench(spec: str, cfg: Config, limit: int | None = None) -> list:
    """Problems of one ``eval.benches`` entry (benchmark name, file, or ``hf:`` spec read with the field keys), at
    most ``limit`` (default ``eval.limit``). Only an ``hf:`` spec goes to the Hub: any other name that is neither a
    benchmark nor an existing path fails at once, listing the benchmarks."""
    from ..data import BENCHMARKS, DataError, load_problems, parse_hf_spec, resolve_dataset

    e, d = cfg.eval, cfg.data
    limit = e.limit if limit is None else limit
    mapping = {
        "question_field": d.question_field,
        "answer_field": d.answer_field,
        "id_field": e.id_field,
        "level_field": e.level_field,
        "answer_format": e.answer_format,
        "task": e.task,
    }
    if spec.split(":", 1)[0] in BENCHMARKS or spec.startswith("synthetic") or ":split=" in spec:  # a held-out side
        return resolve_dataset(spec, d.data_dir, limit=limit)
    if spec.startswith("hf:"):
        source, config, split = parse_hf_spec(spec, e.split)
        return load_problems(source, config=config, split=split, limit=limit, **mapping)
    places = [Path(spec).expanduser()] + ([Path(d.data_dir).expanduser() / spec] if d.data_dir else [])
    if not any(p.exists() for p in places):
        raise DataError(
            f"eval.benches: {spec!r} is not a benchmark ({', '.join(sorted(BENCHMARKS))}), nor an existing "
            f"file{' (also looked in ' + d.data_dir + ')' if d.data_dir else ''}; a Hub dataset is "
            "hf:owner/name[:config][:split]"
        )
    return load_problems(spec, data_dir=d.data_dir, split=e.split, limit=limit, **mapping)


def fingerprint(cfg: Config) -> dict:
    """The settings that change results; an eval folder only resumes under identical ones."""
    mta, ra = resolve_models(cfg)
    r = cfg.rollout
    return {
        "mta_model": mta if r.method == "rema" else None,
        "ra_model": ra,
        "method": method_of(cfg),
        "n": cfg.eval.n,
        "temperature": r.eval_temperature,
        "top_p": r.top_p,
        "max_turns": r.max_turns,
        "max_tokens": r.max_tokens_per_turn,
        "max_context": r.max_context_tokens,
        "seed": cfg.eval.seed,
        "engine": r.engine,
        "dtype": cfg.model.dtype,
        "prompts_version": PROMPTS_VERSION,
    }


def default_out(cfg: Config) -> Path:
    """``evals/<model>-<method>-<time>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("evals") / f"{re.sub(r'[^A-Za-z0-9_.+-]+', '_', model_label(cfg))}-{method_of(cfg)}-{stamp}"


def _check_resume(out: Path, fp: dict) -> dict:
    """The folder's ``eval.json`` content; refuses when its fingerprint differs from ``fp``."""
    meta_path = out / "eval.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        diff = {
            k: (old.get("fingerprint", {}).get(k), v) for k, v in fp.items() if old.get("fingerprint", {}).get(k) != v
        }
        if diff:
            lines = ", ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise EvalError(f"{out} holds an eval with other settings ({lines}); pass a new --out to start afresh")
        return old
    return {"fingerprint": fp, "created": datetime.now().isoformat(timespec="seconds")}


# --- the loop -------------------------------------------------------------------------------------------


def _chunks(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _swap(p):
    """The same judge pair with A and B exchanged (label flipped)."""
    flip = {"A": "B", "B": "A"}[p.label]
    return dataclasses.replace(
        p, id=f"{p.id}#swapped", response_a=p.response_b, response_b=p.response_a, label=flip, answer=flip
    )


def evaluate_bench(
    name: str,
    problems: Sequence,
    engines: dict[str, Engine],
    cfg: Config,
    out: Path,
    progress: Progress | None = None,
    console: Console | None = None,
) -> dict:
    """Evaluate the problems not yet recorded under ``out/records/<name>.jsonl``; return the bench summary."""
    path = out / "records" / f"{name}.jsonl"
    done = {r["id"] for r in read_records(path)}
    todo = [p for p in problems if str(p.id) not in done]
    judge = any(getattr(p, "is_judge", False) for p in problems)
    bcfg = _bench_config(cfg, judge=judge)
    prompts = judge_prompts(bcfg) if judge else None
    greedy = bcfg.rollout.temperature == 0.0
    n, batch_size = cfg.eval.n, cfg.eval.batch_size
    task = progress.add_task(name, total=len(problems), completed=len(problems) - len(todo)) if progress else None
    if console and done:
        console.log(f"{name}: resuming, {len(problems) - len(todo)}/{len(problems)} questions already done")
    episode_id, n_done = 0, len(problems) - len(todo)
    for chunk in _chunks(todo, max(1, batch_size)):
        t0 = time.perf_counter()
        start = n_done
        units = list(chunk) + [_swap(p) for p in chunk] if judge else list(chunk)  # judge: both orders

        def on_progress(done_eps: int, total_eps: int, start: int = start, size: int = len(chunk)) -> None:
            if progress:
                progress.update(task, completed=start + size * done_eps / max(1, total_eps))

        _, episodes = run_eval(
            units,
            engines,
            bcfg,
            greedy=greedy,
            n=n,
            on_progress=on_progress,
            prompts=prompts,
            first_episode_id=episode_id,
        )
        episode_id += len(episodes)
        seconds = (time.perf_counter() - t0) / len(chunk)
        records = _chunk_records(name, chunk, episodes, n=n, judge=judge, seconds=seconds)
        append_records(path, records)
        if progress:
            progress.update(task, completed=start + len(chunk))
        n_done += len(chunk)
        if console:
            console.log(
                f"{name}: {n_done}/{len(problems)} done ({seconds * len(chunk):.0f}s for "
                f"{len(chunk)}), chunk acc {sum(r['correct'] for r in records) / len(records):.1%}"
            )
    wanted = {str(p.id) for p in problems}
    return summarize_bench([r for r in read_records(path) if r["id"] in wanted])


def _bench_config(cfg: Config, *, judge: bool) -> Config:
    """``cfg`` as one benchmark is sampled under it: its task (judge or math), at ``rollout.eval_temperature``
    (the rollout samples at ``rollout.temperature``)."""
    rollout_cfg = dataclasses.replace(
        cfg.rollout, task="judge" if judge else "math", temperature=cfg.rollout.eval_temperature
    )
    return dataclasses.replace(cfg, rollout=rollout_cfg)


def _chunk_records(name: str, chunk: Sequence, episodes: list, *, n: int, judge: bool, seconds: float) -> list[dict]:
    """One record per question of ``chunk`` from its ``n`` episodes per unit; a judge pair's from both orders
    (the swapped units follow the chunk's)."""
    groups = [episodes[i * n : (i + 1) * n] for i in range(len(chunk) * (2 if judge else 1))]
    if judge:
        k = len(chunk)
        return [judge_record(p, groups[i], groups[k + i], bench=name, seconds=seconds) for i, p in enumerate(chunk)]
    return [math_record(p, groups[i], bench=name, seconds=seconds) for i, p in enumerate(chunk)]


def run_benchmarks(
    cfg: Config, *, engines: dict[str, Engine] | None = None, console: Console | None = None, write_tables: bool = True
) -> tuple[Path, dict]:
    """Run ``rema eval`` under ``cfg`` (built by :func:`rema.runtime.command_config`: ``rollout.engine``
    resolved): returns (output folder, summary). ``engines`` skips model loading (tests)."""
    from .tables import print_results, write_results

    console = console or Console()
    e = cfg.eval
    benches = {bench_name(b): load_bench(b, cfg) for b in e.benches}  # bad data fails before any model or folder
    out = Path(e.out) if e.out else default_out(cfg)
    fp = fingerprint(cfg)
    meta = _check_resume(out, fp)
    if engines is None:
        with console.status(f"loading {model_label(cfg)} …"):
            engines = load_engines(cfg)
    out.mkdir(parents=True, exist_ok=True)
    meta.setdefault("invocations", []).append(
        {"started": datetime.now().isoformat(timespec="seconds"), "benches": list(e.benches), "limit": e.limit}
    )
    (out / "eval.json").write_text(json.dumps({**meta, "config": cfg.to_dict()}, indent=2))
    t0 = time.perf_counter()
    summaries: dict[str, dict] = {}
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        for name, problems in benches.items():
            summaries[name] = evaluate_bench(name, problems, engines, cfg, out, progress, console)
    summary = _merge_summary(out, cfg, summaries, time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if write_tables:
        write_results(summary, out)
        print_results(summary, console)
        console.print(f"[dim]wrote {out}/results.md, results.csv, summary.json, records/[/dim]")
    return out, summary


def _merge_summary(out: Path, cfg: Config, summaries: dict, wall_s: float) -> dict:
    """This invocation's bench summaries plus those of earlier invocations into the same folder."""
    old_path = out / "summary.json"
    old = json.loads(old_path.read_text()).get("benchmarks", {}) if old_path.is_file() else {}
    benches = {**{k: v for k, v in old.items() if k not in summaries}, **summaries}
    return {
        "model": model_label(cfg),
        "method": method_of(cfg),
        "settings": fingerprint(cfg),
        "benches": list(benches),
        "benchmarks": benches,
        "average": average_benches(benches),
        "wall_s": wall_s,
        "finished": datetime.now().isoformat(timespec="seconds"),
    }


def dry_run(cfg: Config) -> list[str]:
    """``rema eval --dry-run``: the first rows of every benchmark, the tokenizer and chat template, one episode's
    prompts checked against the context (:func:`rema.preflight.budget`), and what the eval would generate; no
    model weights load and nothing is written (a run's checkpoint is not exported)."""
    from ..preflight import FIRST_ROWS, budget, load_tokenizers

    e, r = cfg.eval, cfg.rollout
    cap = min(e.limit or FIRST_ROWS, FIRST_ROWS)
    benches = {bench_name(b): load_bench(b, cfg, limit=cap) for b in e.benches}
    tokenizer = load_tokenizers(cfg, materialize=False)  # a run's own tokenizer is its base model's
    where = f"run {e.run}" + (f" at {e.checkpoint}" if e.checkpoint else "") if e.run else cfg.model.name
    lines = [
        "rema eval --dry-run: the config resolves and its inputs load; nothing was written",
        f"  model        {where}: tokenizer and chat template of {cfg.model.name} load; "
        f"engine {r.engine}, method {method_of(cfg)}",
    ]
    for name, problems in benches.items():
        judge = any(getattr(p, "is_judge", False) for p in problems)
        prompts = judge_prompts(cfg) if judge else get_prompt_set(cfg.method_name)
        b = budget(cfg, prompts, tokenizer, problems)
        b.refuse_unless_a_turn_fits()
        openings = ", ".join(f"{agent.upper()} {n}" for agent, n in b.opening.items())
        cut = "" if b.rounds_that_fit == b.rounds else f"; {b.rounds_that_fit} of {b.rounds} rounds fit at full length"
        lines.append(
            f"  bench        {name}: first {len(problems)} rows read ({prompts.name}; opening tokens "
            f"{openings}; context up to {b.need} of {b.context}{cut})"
        )
    sampling = "greedy" if r.eval_temperature == 0 else f"T={r.eval_temperature:g}, n={e.n}"
    lines += [
        f"  generation   {sampling}, up to {r.max_turns if r.mode == 'multi_turn' else 1} round(s) of "
        f"{r.max_tokens_per_turn} tokens per message, {e.limit or 'every'} question(s) per benchmark",
        f"  output       {e.out or 'evals/<model>-<method>-<time>'} (not created)",
    ]
    return lines
