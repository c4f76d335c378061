"""``rema reproduce EXPERIMENT``: run the grid behind one of the paper's results, then write its figure, table and
verdict lines.

    rema reproduce table1                         # 5 methods × 3 seeds on the embedded model (CPU scale)
    rema reproduce fig5-ablation --seeds 0        # one seed
    rema reproduce all --dry-run                  # every run of every experiment, with estimated times
    rema reproduce table1 --ood my_questions.jsonl   # your own out-of-distribution questions
    rema reproduce table1 train.steps=4           # any override, applied to every run of the grid
    rema reproduce fig3 --scale paper --dry-run   # the paper's models and data (8 GPUs): runs and memory plan

Each experiment writes ``OUT/<experiment>/`` (see :mod:`rema.reproduce.grid`): its run folders, then
``figure.png``, ``table.md``, ``summary.json`` and a ``README.md`` with the verdicts, the commands and wall
times. ``rema report OUT`` shows every experiment's figure and verdicts on one page.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..config import ConfigError
from .analysis import Analysis
from .experiments import EXPERIMENTS, Experiment, get_experiments
from .grid import PlannedRun, core_groups, estimate_minutes, execute, grid_lock, load_results, machine, plan_grid
from .page import build_page, is_reproduce_folder


def add_parser(sub) -> None:
    """``rema reproduce``'s arguments on the CLI's subparsers."""
    p = sub.add_parser(
        "reproduce",
        help="run one of the paper's experiments as a seeded grid: figure, table, verdict",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("experiment", choices=[*EXPERIMENTS, "all"], help="which result (all: the whole suite)")
    p.add_argument("overrides", nargs="*", help="dotted config overrides for every run (section.key=value)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the experiment's own, e.g. 0,1,2)")
    p.add_argument("--out", default="reproduce", help="output folder (default: ./reproduce)")
    p.add_argument(
        "--scale",
        choices=["cpu", "paper"],
        default="cpu",
        help="cpu: the embedded 135M model on synthetic arithmetic, 2 CPU cores; paper: the paper's "
        "models and data from the Hub, 8 GPUs",
    )
    p.add_argument(
        "--ood",
        default=None,
        metavar="DATA",
        help="replace the out-of-distribution set (table1) with this data spec or JSONL file",
    )
    p.add_argument(
        "--arms",
        default=None,
        help="comma-separated arms to run now (default: all); the figure and verdicts use every finished run",
    )
    p.add_argument("--dry-run", action="store_true", help="print every run and its estimated time; run nothing")
    p.add_argument("--configs", default=None, help="the configs/reproduce folder (default: the checkout's)")
    p.add_argument("--keep-weights", action="store_true", help="keep each run's exported final/ model (~0.5 GB each)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs side by side, each pinned to its share of the cores (default 1: one run on every core; "
        "2 on a 2-core CPU gets more done per hour: docs/reproduction.md)",
    )
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    out = Path(args.out)
    try:
        experiments = get_experiments(args.experiment)
        plans = []
        for exp in experiments:
            seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else exp.seeds
            runs = plan_grid(
                exp,
                scale=args.scale,
                seeds=seeds,
                out=out,
                overrides=list(args.overrides),
                ood=args.ood if exp.ood else None,
                configs_root=Path(args.configs) if args.configs else None,
            )
            plans.append((exp, seeds, runs))
        todo = _chosen_arms(args.arms, plans)
        core_groups(args.jobs)  # more jobs than cores: refused before anything runs
    except (ConfigError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        return dry_run(plans, args.scale, args.jobs, todo)
    if args.scale == "paper":
        print(
            "note: --scale paper trains 8B models on the Hub's data: launch it on a GPU node "
            "(see docs/reproduction.md); this machine runs it as asked",
            file=sys.stderr,
        )
    failed = 0
    for exp, seeds, runs in plans:
        with grid_lock(out / exp.name):
            failed += run_grid(exp, only_arms(runs, todo), keep_weights=args.keep_weights, jobs=args.jobs)
            write_outputs(exp, runs, seeds, out / exp.name, command=" ".join(["rema", "reproduce", *sys.argv[2:]]))
    if is_reproduce_folder(out):
        print(f"all experiments on one page: {build_page(out)}  (rema report {out})")
    return 1 if failed else 0


def _chosen_arms(arms: str | None, plans) -> set[str] | None:
    """The arms ``--arms`` names (None: all); an arm no planned experiment has raises listing the valid ones."""
    if arms is None:
        return None
    chosen = {a.strip() for a in arms.split(",") if a.strip()}
    valid = {r.arm.name for _, _, runs in plans for r in runs}
    if chosen - valid:
        raise ValueError(
            f"--arms: unknown arm(s) {', '.join(sorted(chosen - valid))}; valid: {', '.join(sorted(valid))}"
        )
    return chosen


def only_arms(runs: list[PlannedRun], arms: set[str] | None) -> list[PlannedRun]:
    """The runs of ``arms`` (``--arms``; None: every run)."""
    return [r for r in runs if arms is None or r.arm.name in arms]


def dry_run(plans, scale: str, jobs: int = 1, arms: set[str] | None = None) -> int:
    """Print every run (status, estimated minutes; a cold start counted once per cache entry) per experiment,
    the wall time at ``jobs`` runs side by side, and for ``--scale paper`` the memory plan. ``arms`` (``--arms``):
    only those arms' runs, as the real command would run them."""
    from ..runtime.cold_starts import cold_start_key, is_stored

    total, cached, cores = 0.0, set(), len(core_groups(jobs)[0])
    for exp, seeds, planned in plans:
        runs = only_arms(planned, arms)
        if not runs:
            continue
        left = f" (--arms: {len(planned) - len(runs)} runs of other arms left out)" if len(runs) < len(planned) else ""
        print(f"{exp.name}: {exp.title}\n  seeds {','.join(map(str, seeds))}; {len(runs)} runs{left}")
        exp_min = 0.0
        for r in runs:
            key = cold_start_key(r.cfg) if r.cfg.sft.cold_start else None
            stored = key is not None and is_stored(r.cfg.sft.cache, key)
            est = None
            if r.status() == "done":
                est = r.minutes()
            elif scale == "cpu":
                est = estimate_minutes(r.cfg, cold_start=key not in cached and not stored, cores=cores)
            cached.add(key)
            exp_min += est or 0.0
            what = f"~{est:.0f} min" if est is not None else _paper_plan(r)
            note = " (cold start cached)" if stored and r.status() != "done" else ""
            print(f"  {r.status():8s} {r.name:28s} {what}{note}   rema train {r.config_file}")
        if scale == "cpu":
            print(f"  estimated {exp_min / jobs:.0f} min wall ({jobs} at a time) on {machine()}")
        total += exp_min
    if scale == "cpu" and len(plans) > 1:
        print(f"all: estimated {total / jobs / 60:.1f} h")
    return 0


def _paper_plan(run: PlannedRun) -> str:
    """One line of ``rema plan`` for a paper-scale run on 8 × 80 GB GPUs (offline: shipped model shapes)."""
    from ..plan import model_config, model_shape, plan, setup_from_config

    try:
        s = setup_from_config(run.cfg, gpus=8, gpu_mem_gib=80.0)
        p = plan(model_shape(model_config(run.cfg.model.name), run.cfg.model.name), s)
    except Exception as err:  # noqa: BLE001 - a plan that cannot be made is reported, not fatal for a dry run
        return f"plan: {type(err).__name__}: {err}"
    return f"{run.cfg.model.name}, 8 GPUs: peak {p.peak_gib:.1f} GiB/GPU ({'fits' if p.fits else 'does NOT fit'} 80)"


def run_grid(exp: Experiment, runs: list[PlannedRun], *, keep_weights: bool, jobs: int = 1) -> int:
    """Run every unfinished run of ``exp`` under one progress bar, ``jobs`` at a time (each on its own cores,
    seed by seed so that runs side by side are different arms and a seed's cold start is cached for the next);
    returns how many failed."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    todo = [r for r in runs if r.status() != "done"]
    console.print(
        f"[bold]{exp.name}[/]: {len(runs)} runs, {len(runs) - len(todo)} finished already (reused); "
        f"logs in {runs[0].log_file.parent if runs else '-'}"
    )
    failed = 0
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        grid = progress.add_task(f"{exp.name} grid (runs)", total=len(runs), completed=len(runs) - len(todo))
        free: queue.Queue = queue.Queue()
        for group in core_groups(jobs) if jobs > 1 else [None]:
            free.put(group)

        def one(r: PlannedRun) -> bool:
            cpus = free.get()
            step = progress.add_task(f"  {r.name} (steps)", total=r.cfg.train.steps)
            try:
                minutes = execute(
                    r, keep_weights=keep_weights, cpus=cpus, on_poll=lambda s: progress.update(step, completed=s)
                )
                progress.console.print(f"  {r.name}: done in {minutes:.1f} min" + (f" on cores {cpus}" if cpus else ""))
                return True
            except RuntimeError as err:
                progress.console.print(f"[red]  {err}")
                return False
            finally:
                progress.remove_task(step)
                progress.advance(grid)
                free.put(cpus)

        order = sorted(todo, key=lambda r: r.seed) if jobs > 1 else todo  # stable: arm order within a seed
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            failed = sum(not ok for ok in pool.map(one, order))
    return failed


def write_outputs(
    exp: Experiment, runs: list[PlannedRun], seeds: tuple[int, ...], folder: Path, *, command: str
) -> Analysis | None:
    """The figure, table, verdicts and summary of the finished runs (a partial grid says what is missing)."""
    results = load_results(runs, seeds)
    missing = [r.name for r in runs if r.status() != "done"]
    if not results:
        print(f"{exp.name}: no finished run yet", file=sys.stderr)
        return None
    analysis = exp.analyse(results)
    exp.plot(results, folder / "figure.png")
    (folder / "table.md").write_text(analysis.markdown() + "\n")
    minutes = {r.name: r.minutes() for r in runs if r.status() == "done"}
    summary = {
        "experiment": exp.name,
        "title": exp.title,
        "paper": exp.paper,
        "seeds": list(seeds),
        "verdicts": analysis.verdicts,
        "numbers": analysis.numbers,
        "table": analysis.markdown(),
        "missing": missing,
        "minutes": minutes,
        "machine": machine(),
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    (folder / "README.md").write_text(render_readme(summary))
    print(f"\n{exp.title}\n\n{analysis.markdown()}\n")
    for v in analysis.verdicts:
        print(f"- {v}")
    if missing:
        print(f"(incomplete: {len(missing)} run(s) not finished: {', '.join(missing)})")
    print(f"figure: {folder / 'figure.png'}")
    return analysis


def render_readme(s: dict) -> str:
    """An experiment folder's README.md: the claim, the verdicts, the table, the figure, how it was run."""
    total = sum(m for m in s["minutes"].values() if m)
    lines = [f"# {s['title']}", "", f"Paper: {s['paper']}", "", "## Verdicts", ""]
    lines += [f"- {v}" for v in s["verdicts"]] + [
        "",
        s["table"],
        "",
        "![figure](figure.png)",
        "",
        f"Command: `{s['command']}` — {s['date']}, {s['machine']}; "
        f"{len(s['minutes'])} runs, {total:.0f} min of runs in all.",
    ]
    if s["missing"]:
        lines.append(f"\nIncomplete: {', '.join(s['missing'])} not finished.")
    return "\n".join(lines) + "\n"
