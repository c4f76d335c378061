"""``rema eval``: one model (or an MTA/RA pair, or a training run's final weights) × one method × benchmarks.

Flow per benchmark: load problems → skip those already in ``records/<bench>.jsonl`` (resume) → in chunks of
``batch_size`` questions: ``run_eval`` (rollout → scoring) → one record per question appended and fsynced →
at the end, summaries recomputed from the records → ``summary.json``, ``results.md``, ``results.csv``.

Judge benchmarks (pairwise preference data) are evaluated in both orders: every pair is also rolled out with
A and B swapped (label flipped), and the records hold both verdicts (see ``records.judge_record``).

An eval directory is tied to its settings: ``eval.json`` holds the fields that change results (models,
method, sampling, limits, prompts version), and resuming with different ones is refused, so a directory
never mixes two setups.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..config import Config, ConfigError, load_config, validate
from ..prompts import PROMPTS_VERSION, PromptSet, get_prompt_set
from ..rollout import Engine
from ..rollout.factory import resolve_engine
from ..scoring import run_eval
from .records import (append_records, average_benches, judge_record, math_record, read_records,
                      summarize_bench)

METHODS: dict[str, dict] = {
    "vrp": {"method": "vrp", "mode": "single_turn", "action_set": False},
    "mrp": {"method": "mrp", "mode": "single_turn", "action_set": False},
    "rema-single": {"method": "rema", "mode": "single_turn", "action_set": False},
    "rema-multi": {"method": "rema", "mode": "multi_turn", "action_set": False},
    "rema-actions": {"method": "rema", "mode": "single_turn", "action_set": True},
}
"""``--method`` name -> rollout settings (the prompt set follows from them, see ``Config.method_name``)."""


class EvalError(RuntimeError):
    """A setup problem the user must fix (wrong run folder, resume with other settings, ...)."""


@dataclass
class EvalSettings:
    """Everything ``rema eval`` needs; the CLI flags map one-to-one onto these fields."""

    benches: list[str] = field(default_factory=lambda: ["gsm8k"])
    """Benchmark names (``rema.data.BENCHMARKS``), file paths or ``hf:owner/name[:config][:split]`` specs."""
    model: str = "smollm2-135m"
    """Model for both roles: built-in name, Hub id or local folder."""
    mta_model: str | None = None
    """Separate weights: the meta-thinker's model (default ``model``)."""
    ra_model: str | None = None
    """Separate weights: the reasoner's model (default ``model``)."""
    run: str | None = None
    """A training run folder: its final (or ``checkpoint``) weights and its config's method and limits."""
    checkpoint: str | None = None
    """With ``run``: a checkpoint folder name under ``checkpoints/`` (or a path) instead of ``final/``."""
    method: str | None = None
    """vrp | mrp | rema-single | rema-multi | rema-actions (None: the run's method, else vrp)."""
    data_dir: str | None = None
    """Folder with local benchmark files (e.g. ../shared/data); None = the Hugging Face Hub."""
    limit: int | None = None
    """First N questions of each benchmark."""
    n: int = 1
    """Samples per question (pass@k / maj@k for n > 1)."""
    temperature: float | None = None
    """Sampling temperature; None = greedy for n = 1, else 1.0."""
    top_p: float = 1.0
    max_turns: int | None = None
    """Multi-turn round limit (None: run config / default 30)."""
    max_tokens: int | None = None
    """Per-message token limit (None: run config / default 512)."""
    max_context: int | None = None
    """Per-agent context budget (None: run config / default 4096)."""
    batch_size: int = 16
    """Questions per chunk; records are saved after every chunk."""
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    engine: str = "auto"
    """Generation backend: ``auto`` (vLLM when installed, else transformers), ``hf`` or ``vllm``."""
    eager: bool = False
    """vLLM without compiling its model: starts in seconds instead of ~20-80 s, decodes ~1.3x slower."""
    grader_timeout_s: float = 5.0
    grader_workers: int = 1
    out: str | None = None
    """Output folder (default ``evals/<model>-<method>-<time>``); an existing one is resumed."""
    label: str | None = None
    """Model name shown in tables (default: derived from the model / run)."""
    question_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    level_field: str | None = None
    split: str | None = None
    task: str = "auto"
    """For file / hf: benches: math, judge or auto (judge when prompt/response columns exist)."""
    answer_format: str = "auto"


# --- setup ----------------------------------------------------------------------------------------------


def _model_folder(folder: Path) -> tuple[str, str] | None:
    """(mta, ra) model paths in a save_pretrained folder: shared (``config.json``) or ``mta/`` + ``ra/``."""
    if (folder / "config.json").is_file():
        return str(folder), str(folder)
    if (folder / "mta" / "config.json").is_file() and (folder / "ra" / "config.json").is_file():
        return str(folder / "mta"), str(folder / "ra")
    if (folder / "model" / "config.json").is_file():
        return str(folder / "model"), str(folder / "model")
    return None


def resolve_models(s: EvalSettings) -> tuple[str, str]:
    """The (MTA, RA) model names/paths the settings point at."""
    if s.run:
        run = Path(s.run)
        if s.checkpoint:
            folder = Path(s.checkpoint) if Path(s.checkpoint).is_dir() else run / "checkpoints" / s.checkpoint
        else:
            folder = run / "final"
        found = _model_folder(folder)
        if found is None:
            listing = ", ".join(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else "missing"
            raise EvalError(f"{folder}: no model found (want config.json, or mta/ and ra/ folders; has: {listing}). "
                            "Is the run finished? Use --checkpoint step_NNNNNN for an intermediate one.")
        return found
    return (s.mta_model or s.model, s.ra_model or s.model)


def model_label(s: EvalSettings) -> str:
    """Short model name for tables and the default output folder."""
    if s.label:
        return s.label
    if s.run:
        return Path(s.run).resolve().name + (f"@{s.checkpoint}" if s.checkpoint else "")
    mta, ra = resolve_models(s)
    short = lambda name: Path(name.rstrip("/")).name or name  # noqa: E731
    return short(ra) if mta == ra else f"{short(mta)}+{short(ra)}"


def build_config(s: EvalSettings) -> Config:
    """The Config the eval runs under: the run's (when ``run``) or defaults, then method and limits."""
    cfg = load_config(Path(s.run) / "config.yaml") if s.run else Config()
    method = s.method or (cfg.method_name if s.run else "vrp")
    if method not in METHODS:
        if s.run and method == "rema-judge":
            method = "rema-multi" if cfg.rollout.mode == "multi_turn" else "rema-single"
        else:
            raise ConfigError(f"--method {method!r} is not valid; choose one of {list(METHODS)}")
    for key, value in METHODS[method].items():
        setattr(cfg.rollout, key, value)
    if METHODS[method]["method"] != "rema":
        cfg.train.shared_weights = True
    r = cfg.rollout
    r.max_turns = s.max_turns or r.max_turns
    r.max_tokens_per_turn = s.max_tokens or r.max_tokens_per_turn
    r.max_context_tokens = s.max_context or max(r.max_context_tokens, r.max_tokens_per_turn + 1)
    r.temperature = temperature(s)
    r.eval_temperature = r.temperature
    r.top_p = s.top_p
    r.samples_per_question = s.n
    r.engine = s.engine
    r.vllm_enforce_eager = r.vllm_enforce_eager or s.eager
    cfg.reward.grader_timeout_s = s.grader_timeout_s
    cfg.reward.grader_workers = s.grader_workers
    validate(cfg)
    return cfg


def temperature(s: EvalSettings) -> float:
    """Greedy for one sample; 1.0 when sampling several unless told otherwise."""
    if s.temperature is not None:
        return s.temperature
    return 0.0 if s.n == 1 else 1.0


def method_of(cfg: Config) -> str:
    """The ``--method`` name of a config (``rema-judge`` reported by mode)."""
    r = cfg.rollout
    for name, values in METHODS.items():
        if all(getattr(r, k) == v for k, v in values.items()) or (r.method == values["method"] != "rema"):
            return name
    return cfg.method_name


def judge_prompts(cfg: Config) -> PromptSet:
    """The judge prompt set for the config's method (``rema-judge`` or ``<method>-judge``)."""
    if cfg.rollout.action_set:
        raise ConfigError("--method rema-actions has no judge prompts; use rema-single or rema-multi for judge data")
    name = "rema-judge" if cfg.rollout.method == "rema" else f"{cfg.rollout.method}-judge"
    try:
        return get_prompt_set(name)
    except KeyError:
        raise ConfigError(f"no judge prompt set '{name}' in rema.prompts; judge benchmarks run with the rema "
                          "methods (rema-single / rema-multi)") from None


def load_engines(s: EvalSettings, cfg: Config) -> dict[str, Engine]:
    """Load the model(s) and wrap them in engines: ``{"mta": ..., "ra": ...}`` (one object when shared)."""
    import torch

    from ..models import load_model
    from ..rollout.factory import engine_options, make_engine

    torch.manual_seed(s.seed)
    device = s.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    mta_name, ra_name = resolve_models(s)
    model, tok = load_model(ra_name, dtype=s.dtype, device=device, seed=s.seed)
    opts = engine_options(cfg.rollout)
    ra = make_engine(model, tok, engine=s.engine, seed=s.seed, **opts)
    engines = {"ra": ra, "mta": ra}
    if cfg.rollout.method == "rema" and mta_name != ra_name:
        m_model, m_tok = load_model(mta_name, dtype=s.dtype, device=device, seed=s.seed)
        engines["mta"] = make_engine(m_model, m_tok, engine=s.engine, seed=s.seed + 1, **opts)
    return engines


def bench_name(spec: str) -> str:
    """File-safe short name of a benchmark spec (``gsm8k``, ``my_file`` for ``data/my_file.jsonl``)."""
    from ..data import BENCHMARKS

    head = spec.split(":", 1)[0]
    if head in BENCHMARKS:
        return spec.replace(":", "_").replace("=", "").replace(",", "-")
    if spec.startswith("hf:"):
        spec = spec[3:].split(":", 1)[0].split("/")[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(spec).stem if Path(spec).suffix else Path(spec).name) or "bench"


def load_bench(spec: str, s: EvalSettings) -> list:
    """Problems of one ``--bench`` value (benchmark name, file, or ``hf:`` spec with the field flags)."""
    from ..data import BENCHMARKS, load_problems, resolve_dataset

    mapping = dict(question_field=s.question_field, answer_field=s.answer_field, id_field=s.id_field,
                   level_field=s.level_field, answer_format=s.answer_format, task=s.task)
    if spec.split(":", 1)[0] in BENCHMARKS or spec.startswith("synthetic"):
        return resolve_dataset(spec, s.data_dir, limit=s.limit)
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        config = parts[1] or None if len(parts) > 1 else None
        split = parts[2] or None if len(parts) > 2 else s.split
        return load_problems(parts[0], config=config, split=split, limit=s.limit, **mapping)
    return load_problems(spec, data_dir=s.data_dir, split=s.split, limit=s.limit, **mapping)


def fingerprint(s: EvalSettings, cfg: Config) -> dict:
    """The settings that change results; an eval folder only resumes under identical ones."""
    mta, ra = resolve_models(s)
    r = cfg.rollout
    return {"mta_model": mta if r.method == "rema" else None, "ra_model": ra, "method": method_of(cfg),
            "n": s.n, "temperature": r.temperature, "top_p": r.top_p, "max_turns": r.max_turns,
            "max_tokens": r.max_tokens_per_turn, "max_context": r.max_context_tokens, "seed": s.seed,
            "engine": resolve_engine(s.engine), "dtype": s.dtype, "prompts_version": PROMPTS_VERSION}


def default_out(s: EvalSettings, cfg: Config) -> Path:
    """``evals/<model>-<method>-<time>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("evals") / f"{re.sub(r'[^A-Za-z0-9_.+-]+', '_', model_label(s))}-{method_of(cfg)}-{stamp}"


def _check_resume(out: Path, fp: dict) -> dict:
    """The folder's ``eval.json`` content; refuses when its fingerprint differs from ``fp``."""
    meta_path = out / "eval.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        diff = {k: (old.get("fingerprint", {}).get(k), v) for k, v in fp.items()
                if old.get("fingerprint", {}).get(k) != v}
        if diff:
            lines = ", ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise EvalError(f"{out} holds an eval with other settings ({lines}); pass a new --out to start afresh")
        return old
    return {"fingerprint": fp, "created": datetime.now().isoformat(timespec="seconds")}


# --- the loop -------------------------------------------------------------------------------------------


def _chunks(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _swap(p):
    """The same judge pair with A and B exchanged (label flipped)."""
    flip = {"A": "B", "B": "A"}[p.label]
    return dataclasses.replace(p, id=f"{p.id}#swapped", response_a=p.response_b, response_b=p.response_a,
                               label=flip, answer=flip)


def _for_rollout(p):
    """Judge problems carry their parts in ``meta`` too, where the rollout's question template reads them."""
    return dataclasses.replace(p, meta={**p.meta, "prompt": p.prompt, "response_a": p.response_a,
                                        "response_b": p.response_b})


def evaluate_bench(name: str, problems: Sequence, engines: dict[str, Engine], cfg: Config, s: EvalSettings,
                   out: Path, progress: Progress | None = None, console: Console | None = None) -> dict:
    """Evaluate the problems not yet recorded under ``out/records/<name>.jsonl``; return the bench summary."""
    path = out / "records" / f"{name}.jsonl"
    done = {r["id"] for r in read_records(path)}
    todo = [p for p in problems if str(p.id) not in done]
    judge = any(getattr(p, "is_judge", False) for p in problems)
    bcfg = dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, task="judge" if judge else "math"))
    prompts = judge_prompts(bcfg) if judge else None
    greedy = bcfg.rollout.temperature == 0.0
    task = progress.add_task(name, total=len(problems), completed=len(problems) - len(todo)) if progress else None
    if console and done:
        console.log(f"{name}: resuming, {len(problems) - len(todo)}/{len(problems)} questions already done")
    episode_id, n_done = 0, len(problems) - len(todo)
    for chunk in _chunks(todo, max(1, s.batch_size)):
        t0 = time.perf_counter()
        start = n_done
        units = [_for_rollout(p) for p in chunk] + [_for_rollout(_swap(p)) for p in chunk] if judge else list(chunk)

        def on_progress(done_eps: int, total_eps: int) -> None:
            if progress:
                progress.update(task, completed=start + len(chunk) * done_eps / max(1, total_eps))

        _, episodes = run_eval(units, engines, bcfg, greedy=greedy, n=s.n, on_progress=on_progress,
                               prompts=prompts, first_episode_id=episode_id)
        episode_id += len(episodes)
        seconds = (time.perf_counter() - t0) / len(chunk)
        groups = [episodes[i * s.n:(i + 1) * s.n] for i in range(len(units))]
        if judge:
            k = len(chunk)
            records = [judge_record(p, groups[i], groups[k + i], bench=name, seconds=seconds)
                       for i, p in enumerate(chunk)]
        else:
            records = [math_record(p, groups[i], bench=name, seconds=seconds) for i, p in enumerate(chunk)]
        append_records(path, records)
        if progress:
            progress.update(task, completed=start + len(chunk))
        n_done += len(chunk)
        if console:
            console.log(f"{name}: {n_done}/{len(problems)} done ({seconds * len(chunk):.0f}s for "
                        f"{len(chunk)}), chunk acc {sum(r['correct'] for r in records) / len(records):.1%}")
    wanted = {str(p.id) for p in problems}
    return summarize_bench([r for r in read_records(path) if r["id"] in wanted])


def run_benchmarks(s: EvalSettings, *, engines: dict[str, Engine] | None = None, console: Console | None = None,
                   write_tables: bool = True) -> tuple[Path, dict]:
    """Run ``rema eval``: returns (output folder, summary). ``engines`` skips model loading (tests)."""
    from .tables import print_results, write_results

    console = console or Console()
    cfg = build_config(s)
    out = Path(s.out) if s.out else default_out(s, cfg)
    out.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(s, cfg)
    meta = _check_resume(out, fp)
    meta.setdefault("invocations", []).append({"started": datetime.now().isoformat(timespec="seconds"),
                                               "benches": list(s.benches), "limit": s.limit})
    (out / "eval.json").write_text(json.dumps({**meta, "settings": dataclasses.asdict(s)}, indent=2))
    benches = {bench_name(b): load_bench(b, s) for b in s.benches}
    if engines is None:
        with console.status(f"loading {model_label(s)} …"):
            engines = load_engines(s, cfg)
    t0 = time.perf_counter()
    summaries: dict[str, dict] = {}
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        for name, problems in benches.items():
            summaries[name] = evaluate_bench(name, problems, engines, cfg, s, out, progress, console)
    summary = _merge_summary(out, s, cfg, summaries, time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if write_tables:
        write_results(summary, out)
        print_results(summary, console)
        console.print(f"[dim]wrote {out}/results.md, results.csv, summary.json, records/[/dim]")
    return out, summary


def _merge_summary(out: Path, s: EvalSettings, cfg: Config, summaries: dict, wall_s: float) -> dict:
    """This invocation's bench summaries plus those of earlier invocations into the same folder."""
    old_path = out / "summary.json"
    old = json.loads(old_path.read_text()).get("benchmarks", {}) if old_path.is_file() else {}
    benches = {**{k: v for k, v in old.items() if k not in summaries}, **summaries}
    return {
        "model": model_label(s), "method": method_of(cfg), "settings": fingerprint(s, cfg),
        "benches": list(benches), "benchmarks": benches, "average": average_benches(benches),
        "wall_s": wall_s, "finished": datetime.now().isoformat(timespec="seconds"),
    }
