"""Running an experiment's grid: one ``rema train`` process per (arm, seed), reused when finished, resumed when cut.

Layout of ``OUT/<experiment>/``::

    configs/<arm>-seed<k>.yaml    the resolved config each run trains with (arm YAML + seed + overrides)
    runs/<arm>-seed<k>/           an ordinary run folder (metrics.jsonl, checkpoints, ...; ``rema report`` works)
    logs/<arm>-seed<k>.log        the run's console output
    summary.json, table.md, figure.png, README.md   written by the command once the runs are done

A run is **finished** when its folder holds ``reproduce.json`` with the config it was asked to run (its hash, or
the same value for every key it recorded and the default for every option added to rema since); a finished run
with another config (an override or the arm's YAML changed) is run again from scratch. A folder
without it but with a checkpoint is **resumed** (``rema train --resume``: exact, weights, optimizer, RNG and data
cursor); one without a checkpoint is started again. Each run is a child process that dies with its parent
(``PR_SET_PDEATHSIG``), so ``kill -9`` of ``rema reproduce`` leaves no trainer writing behind it, and starting the
same command again picks up where it stopped. One ``rema reproduce`` at a time per experiment folder (a lock).

Every run with a cold start points ``sft.cache`` at ``OUT/cold_starts/``: the arm configs fix ``sft.seed``, so the
seeds of an arm (and arms of other experiments with the same cold start) fine-tune once and differ only in RL.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, ConfigError, load_config, save_config
from .analysis import Run
from .experiments import Arm, Experiment

REPO_CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "reproduce"
"""``configs/reproduce/`` of a source checkout (``--configs DIR`` points elsewhere, e.g. for an installed wheel)."""

DONE = "reproduce.json"
COLD_STARTS = "cold_starts"
"""The folder of an output directory where its runs share their cold starts (``sft.cache``)."""


@dataclass
class PlannedRun:
    """One (arm, seed) of an experiment: its config and where it runs."""

    experiment: str
    arm: Arm
    seed: int
    cfg: Config
    config_file: Path
    run_dir: Path
    log_file: Path

    @property
    def name(self) -> str:
        return f"{self.arm.name}-seed{self.seed}"

    def settings(self) -> dict[str, object]:
        """The resolved config as ``{dotted key: value}`` (JSON values), recorded with a finished run."""
        return _flatten(_plain(self.cfg))

    @property
    def digest(self) -> str:
        """Hash of the resolved config less where it lives (what makes a finished run reusable, in any ``--out``)."""
        return _hash(_plain(self.cfg))

    def _legacy_digest(self) -> str:
        """The hash rema wrote before a run folder could move: it held ``log.run_dir``."""
        d = _plain(self.cfg)
        d["log"]["run_dir"] = str(self.run_dir)
        return _hash(d)

    def status(self) -> str:
        """``done``, ``stale`` (done with another config), ``partial`` (a checkpoint to resume) or ``new``."""
        marker = self.run_dir / DONE
        if marker.is_file():
            try:
                record = json.loads(marker.read_text())
            except json.JSONDecodeError:
                return "stale"
            same = record.get("config_hash") in (self.digest, self._legacy_digest()) or same_settings(
                record.get("settings"), self.settings()
            )
            return "done" if same else "stale"
        ckpts = self.run_dir / "checkpoints"
        if ckpts.is_dir() and any(p.is_dir() and p.name.startswith("step_") for p in ckpts.iterdir()):
            return "partial"
        return "new"

    def minutes(self) -> float | None:
        """Wall minutes of a finished run (None otherwise)."""
        marker = self.run_dir / DONE
        return json.loads(marker.read_text()).get("minutes") if marker.is_file() else None


def arm_config_path(exp: Experiment, arm: Arm, scale: str, root: Path | None = None) -> Path:
    path = (root or REPO_CONFIGS) / scale / exp.name / f"{arm.name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{path}: no config for arm {arm.name!r} of {exp.name} at scale {scale!r} (rema reproduce "
            "reads configs/reproduce/ of a source checkout; point --configs at a copy of it)"
        )
    return path


def plan_grid(
    exp: Experiment,
    *,
    scale: str,
    seeds: tuple[int, ...],
    out: Path,
    overrides: list[str],
    ood: str | None = None,
    configs_root: Path | None = None,
) -> list[PlannedRun]:
    """Every run of ``exp``: each arm × each seed (an unseeded arm once, as the first seed), configs resolved
    (the arm's YAML, then the seed, the run folder, ``ood`` in place of every ``data.eval`` set after the first,
    then ``overrides``)."""
    from ..cli_args import as_override
    from ..runtime import command_config

    runs = []
    for arm in (a for a in exp.arms if scale in a.scales):
        path = arm_config_path(exp, arm, scale, configs_root)
        for seed in seeds if arm.seeded else seeds[:1]:
            name = f"{arm.name}-seed{seed}"
            run_dir = out / exp.name / "runs" / name
            fixed = [
                f"train.seed={seed}",
                f"log.run_dir={run_dir}",
                f"log.name={exp.name}-{arm.name}",
                "log.progress=false",
            ]
            if load_config(path).sft.cold_start:  # one cold start per arm and config, shared by its seeds
                fixed.append(f"sft.cache={out / COLD_STARTS}")
            if ood is not None:
                if not exp.ood:
                    raise ConfigError(f"--ood: {exp.name} has no out-of-distribution set (only table1 has one)")
                base = load_config(path).data.eval_specs
                fixed.append(as_override("data.eval", [base[0], ood]))
            cfg = command_config(path, [*fixed, *overrides])  # as `rema train` will build it: the engine resolved
            runs.append(
                PlannedRun(
                    exp.name,
                    arm,
                    seed,
                    cfg,
                    out / exp.name / "configs" / f"{name}.yaml",
                    run_dir,
                    out / exp.name / "logs" / f"{name}.log",
                )
            )
    return runs


# --- time estimates -------------------------------------------------------------------------------------

TOKENS_PER_MINUTE_CORE = 12000.0
"""Tokens as :func:`estimate_minutes` counts them, per minute of one run of the embedded model on one AVX-512 BF16
core with nothing else running: fitted (pooled 12,750) to this project's single-core runs of fig5-ablation and
fig4 (docs/reproduction.md). A CPU without AVX-512 BF16 runs fp32, about 3x slower. Only the dry run's estimate
uses it: a finished run shows its real time."""
CORE_SCALING = 0.5
"""A run on c cores goes c ** CORE_SCALING times faster than on one (measured: the update 210-245 tokens/s on one
core, 300-390 on two), which is why ``--jobs 2`` on two cores gets more done."""
START_MINUTES = 0.7
"""Loading the model and starting vLLM with its compiled graph (inductor's cache warm), once per run."""


def estimate_minutes(cfg: Config, *, cold_start: bool = True, cores: int = 1) -> float:
    """A dry run's guess of one run's wall time from its budget: the tokens generated in RL, evaluation (with
    the one before a cold start) and the cold start (each message assumed half its token limit; ``cold_start``
    False: it comes from the cache) on ``cores`` cores, plus the start."""
    r, t = cfg.rollout, cfg.train
    turns = 1 if r.mode == "single_turn" else r.max_turns
    agents = 1 if r.method in ("vrp", "mrp") else 2
    per_episode = turns * agents * r.max_tokens_per_turn * 0.5
    rl = t.steps * t.questions_per_step * r.samples_per_question * per_episode * 2.0  # generation + update
    n_eval = 60 if cfg.data.eval_limit is None else cfg.data.eval_limit  # typical held-out size
    before = cfg.sft.cold_start and t.eval_before_cold_start
    n_evals = 1 + (t.steps // t.eval_every if t.eval_every else 0) + int(before)
    evals = n_evals * n_eval * len(cfg.data.eval_specs) * per_episode if t.eval_every else 0.0
    sft = cfg.sft.questions * per_episode * cfg.sft.epochs * 0.5 if cfg.sft.cold_start and cold_start else 0.0
    speed = TOKENS_PER_MINUTE_CORE * cores**CORE_SCALING * (1.0 if _has_bf16_cpu() else 1 / 3)
    return START_MINUTES + (rl + evals + sft) / speed


def _has_bf16_cpu() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def machine() -> str:
    """The CPU (model, cores, AVX-512 BF16 or not) and torch version, for the record of every result."""
    import platform

    import torch

    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{model}, {len(os.sched_getaffinity(0))} cores, "
        f"{'AVX-512 BF16' if _has_bf16_cpu() else 'no AVX-512 BF16 (fp32)'}{gpu}, torch {torch.__version__}"
    )


# --- running --------------------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@contextmanager
def grid_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` (one ``rema reproduce`` per experiment folder); raises when another one holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{folder}: another rema reproduce is running on this folder; wait for it or use another --out"
            ) from None
        yield


def last_step(run_dir: Path) -> int:
    """The highest step logged in ``run_dir/metrics.jsonl`` (0 when none)."""
    path = run_dir / "metrics.jsonl"
    step = 0
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                step = max(step, int(json.loads(line).get("step", 0)))
            except (json.JSONDecodeError, TypeError, ValueError):
                continue
    return step


def core_groups(jobs: int) -> list[tuple[int, ...]]:
    """This process's cores split into ``jobs`` disjoint groups of consecutive cores (``--jobs``); a ValueError
    when there are fewer cores than jobs."""
    cores = sorted(os.sched_getaffinity(0))
    if not 1 <= jobs <= len(cores):
        raise ValueError(f"--jobs {jobs}: this process may use {len(cores)} core(s); give 1 to {len(cores)}")
    size = len(cores) // jobs
    return [tuple(cores[i * size : (i + 1) * size]) for i in range(jobs)]


def _child_setup(cpus: tuple[int, ...] | None) -> Callable[[], None]:
    """What the child runs between fork and exec: die with the parent; with ``cpus``, run on those cores only."""

    def setup() -> None:  # pragma: no cover - runs in the child
        _die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


def execute(
    run: PlannedRun,
    *,
    on_poll: Callable[[int], None] | None = None,
    keep_weights: bool = False,
    cpus: tuple[int, ...] | None = None,
) -> float:
    """Run (or resume) ``run`` in a child ``rema train`` and wait; returns its wall minutes. Raises
    ``RuntimeError`` naming the log when the child fails. ``cpus``: pin the child to these cores, with as many
    threads (``OMP_NUM_THREADS``; vLLM's CPU threads bind to the same cores), for runs side by side."""
    status = run.status()
    if status in ("stale", "new") and run.run_dir.exists():
        shutil.rmtree(run.run_dir)  # a stale result or a start without a checkpoint: from scratch
    run.config_file.parent.mkdir(parents=True, exist_ok=True)
    run.log_file.parent.mkdir(parents=True, exist_ok=True)
    save_config(run.cfg, run.config_file)
    cmd = [sys.executable, "-m", "rema.cli", "train"]
    cmd += ["--resume", str(run.run_dir)] if status == "partial" else [str(run.config_file)]
    t0 = time.perf_counter()
    with open(run.log_file, "a", encoding="utf-8") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        log.flush()
        env = dict(os.environ, OMP_NUM_THREADS=str(len(cpus))) if cpus else None
        child = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_child_setup(cpus) if sys.platform.startswith("linux") else None,
        )
        while child.poll() is None:
            if on_poll is not None:
                on_poll(last_step(run.run_dir))
            time.sleep(1.0)
    if child.returncode != 0:
        raise RuntimeError(f"{run.name} failed (exit {child.returncode}); its log: {run.log_file}")
    minutes = round((time.perf_counter() - t0) / 60, 2)
    if not keep_weights:  # the exported final model is ~0.5 GB per run; the metrics are what the grid needs
        shutil.rmtree(run.run_dir / "final", ignore_errors=True)
    (run.run_dir / DONE).write_text(
        json.dumps(
            {
                "config_hash": run.digest,
                "settings": run.settings(),
                "minutes": minutes,
                "arm": run.arm.name,
                "seed": run.seed,
                "resumed": status == "partial",
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
        )
        + "\n"
    )
    return minutes


def _plain(cfg: Config) -> dict:
    """``cfg`` as nested JSON values, less ``sft.cache`` and ``log.run_dir``: where a cold start comes from and where
    the run folder lies do not change what ran (a grid's ``runs/`` copied into another ``--out`` stays done)."""
    d = json.loads(json.dumps(cfg.to_dict(), default=str))
    d["sft"].pop("cache", None)
    d["log"].pop("run_dir", None)
    return d


def _hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _flatten(d: dict, head: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, object] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{head}{k}.") if isinstance(v, dict) else {f"{head}{k}": v})
    return out


def same_settings(recorded: dict[str, object] | None, wanted: dict[str, object]) -> bool:
    """Whether a run that recorded ``recorded`` (:meth:`PlannedRun.settings`) ran what ``wanted`` asks: every key
    it recorded has the wanted value, and every key it did not record (an option added to rema since) is wanted at
    its default, so an upgrade that adds an option does not rerun a grid. Keys rema no longer has are ignored."""
    if not isinstance(recorded, dict):
        return False
    defaults = _flatten(_plain(Config()))
    missing = object()
    for key, value in wanted.items():
        before = recorded.get(key, missing)
        if value != (defaults.get(key, missing) if before is missing else before):
            return False
    return True


def load_results(runs: list[PlannedRun], seeds: tuple[int, ...]) -> dict[str, list[Run]]:
    """``{arm: [Run per seed]}`` of the finished runs (an unseeded arm's one run stands for every seed)."""
    import yaml

    out: dict[str, list[Run]] = {}
    for pr in runs:
        if pr.status() != "done":
            continue
        rows = [json.loads(line) for line in (pr.run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        cfg = yaml.safe_load((pr.run_dir / "config.yaml").read_text())
        run = Run(pr.arm.name, pr.seed, pr.run_dir, rows, cfg, pr.minutes())
        out.setdefault(pr.arm.name, []).extend(
            [run] if pr.arm.seeded else [Run(run.arm, s, run.run_dir, rows, cfg, run.minutes) for s in seeds]
        )
    return out
