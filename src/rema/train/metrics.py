"""Metrics: the sinks (JSONL always, tensorboard and wandb when asked, the samples file), the step's phase
timer, and what the console shows of them."""

from __future__ import annotations

import json
import math
import re
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from .memory import PhasePeak


def _clean(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None if math.isnan(v) else (1e308 if v > 0 else -1e308)
        out[k] = v
    return out


def truncate_jsonl(
    path: Path, max_step: int, *, keep_events: int = 0, aside: Path | None = None, tag: dict | None = None
) -> None:
    """Drop records with ``step > max_step`` (a resumed run rewrites the steps after its checkpoint), except
    health events numbered below ``keep_events`` (``health/event``: events the checkpoint's guard knows of).
    ``aside``: append the dropped records there instead (with ``tag``'s keys), as a rollback does."""
    if not path.is_file():
        return
    keep, dropped = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        event = record.get("health/event")
        late = record.get("step", 0) > max_step and not (isinstance(event, int) and event < keep_events)
        (dropped if late else keep).append(json.dumps({**record, **(tag or {})}) if late else line)
    if aside is not None and dropped:
        with aside.open("a") as f:
            f.write("".join(line + "\n" for line in dropped))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    tmp.replace(path)


ROLLED_BACK = "_rolled_back"
"""``metrics.jsonl`` -> ``metrics_rolled_back.jsonl``: where a rollback moves the abandoned steps' records."""


class MetricsLogger:
    """Writes one JSON object per step to ``metrics.jsonl`` and mirrors scalars to tensorboard / wandb."""

    def __init__(
        self,
        run_dir: Path,
        *,
        tensorboard: bool = True,
        wandb: bool = False,
        name: str = "rema",
        config: dict | None = None,
        resume_step: int | None = None,
        enabled: bool = True,
        keep_events: int = 0,
    ):
        """``resume_step``: the step of the checkpoint a resumed run starts from (later records are dropped but for
        the first ``keep_events`` health events, which its guard remembers)."""
        self.enabled = enabled
        self.run_dir = run_dir
        self.path = run_dir / "metrics.jsonl"
        self.samples_path = run_dir / "samples.jsonl"
        self.tb = self.wandb = None
        if not enabled:  # non-zero ranks of a data-parallel run write nothing
            return
        if resume_step is not None:
            truncate_jsonl(self.path, resume_step, keep_events=keep_events)
            truncate_jsonl(self.samples_path, resume_step)
        self._file = self.path.open("a")
        self._samples = self.samples_path.open("a")
        self.tb = None
        if tensorboard:
            self.tb = self._tensorboard(resume_step)
        self.wandb = None
        if wandb:
            try:
                import wandb as wb
            except ImportError as err:
                raise RuntimeError("log.wandb=true needs `pip install wandb`") from err
            self.wandb = wb.init(project="rema", name=name, config=config, dir=str(run_dir), resume="allow")

    def _tensorboard(self, from_step: int | None):
        """A tensorboard writer; with ``from_step``, scalars after that step are dropped (it rewrites them)."""
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "tb"), purge_step=from_step + 1 if from_step is not None else None)

    def rewind(self, step: int, rollback: int) -> None:
        """After a rollback to ``step``: move the later records of ``metrics.jsonl`` and ``samples.jsonl`` to
        ``metrics_rolled_back.jsonl`` and ``samples_rolled_back.jsonl`` (tagged ``"rollback": rollback``) and drop
        tensorboard's later scalars; health events stay. wandb cannot forget logged steps: it keeps both."""
        if not self.enabled:
            return
        for path, f in ((self.path, self._file), (self.samples_path, self._samples)):
            f.close()
            truncate_jsonl(
                path,
                step,
                keep_events=1 << 62,
                aside=path.with_name(path.stem + ROLLED_BACK + ".jsonl"),
                tag={"rollback": rollback},
            )
        self._file, self._samples = self.path.open("a"), self.samples_path.open("a")
        if self.tb is not None:
            self.tb.close()
            self.tb = self._tensorboard(step)

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, **_clean(metrics)}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def samples(self, step: int, split: str, episodes) -> None:
        if not self.enabled:
            return
        for ep in episodes:
            self._samples.write(json.dumps({"step": step, "split": split, **ep.to_dict()}, ensure_ascii=False) + "\n")
        self._samples.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        self._samples.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


class PhaseTimer:
    """Wall time and peak resident memory of each phase of one step::

        timer = PhaseTimer()
        with timer.phase("rollout"):
            ...
        timer.metrics()  # {"time/rollout": s, "perf/peak_rss_gb/rollout": GiB, ..., "time/step": s}

    A phase entered several times (one update per policy) adds up its time and keeps its highest peak. On a
    GPU each phase's peak allocated memory is kept too (``perf/peak_gpu_gib/<phase>``)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.peaks: dict[str, float] = {}
        self.gpu_peaks: dict[str, float] = {}
        self._peak = PhasePeak()
        self._cuda = torch.cuda.is_available() and torch.cuda.is_initialized()

    @contextmanager
    def phase(self, name: str):
        self._peak.reset()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self._cuda:
                torch.cuda.synchronize()
                gpu = torch.cuda.max_memory_allocated() / 2**30
                self.gpu_peaks[name] = max(self.gpu_peaks.get(name, gpu), gpu)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            peak = self._peak.read_gb()
            self.peaks[name] = max(self.peaks.get(name, peak), peak)

    def metrics(self) -> dict[str, float]:
        out = {f"time/{k}": v for k, v in self.seconds.items()}
        out.update({f"perf/peak_rss_gb/{k}": v for k, v in self.peaks.items()})
        out.update({f"perf/peak_gpu_gib/{k}": v for k, v in self.gpu_peaks.items()})
        out["time/step"] = time.perf_counter() - self.start
        return out


def eval_record(per_set: dict[str, dict[str, float]], prefix: str = "eval") -> dict[str, float]:
    """The logged keys of one held-out evaluation from each set's metrics (``{set name: {metric: value}}``).

    One set: ``<prefix>/<metric>`` (the keys of every run before several sets existed). Several:
    ``<prefix>/<set>/<metric>`` for each, and ``<prefix>/avg/<metric>`` for each metric every set has: the mean
    over sets, each set weighing the same whatever its size (the paper's Fig. 5 average of its 7 benchmarks).
    """
    if len(per_set) == 1:
        (metrics,) = per_set.values()
        return {f"{prefix}/{k}": v for k, v in metrics.items()}
    out = {f"{prefix}/{name}/{k}": v for name, metrics in per_set.items() for k, v in metrics.items()}
    shared = set.intersection(*(set(metrics) for metrics in per_set.values())) if per_set else set()
    for k in sorted(shared):
        out[f"{prefix}/avg/{k}"] = sum(metrics[k] for metrics in per_set.values()) / len(per_set)
    return out


def step_summary(m: dict, roles: tuple[str, ...]) -> str:
    """One line for the progress bar: rewards, accuracy, turns, speed and where the time went."""
    parts = [f"{a} {m[f'train/reward/{a}']:+.2f}" for a in roles if f"train/reward/{a}" in m]
    parts.append(f"acc {m.get('train/acc', 0):.2f}")
    if "eval/acc" in m or "eval/avg/acc" in m:
        parts.append(f"eval {m.get('eval/acc', m.get('eval/avg/acc')):.2f}")
    parts.append(f"turns {m.get('train/turns/mean', 0):.1f}")
    parts.append(f"{m.get('perf/tokens_per_s', 0):.0f} tok/s")
    parts.append(f"roll {m.get('time/rollout', 0):.0f}s upd {m.get('time/update', 0):.0f}s")
    return "  ".join(parts)


def print_before_after(metrics_path: Path, console) -> None:
    """Held-out accuracy (overall and per level; with several eval sets, their average and each set) at the first
    and last evaluation of a run's metrics file."""

    def has(row: dict, prefix: str) -> bool:
        return f"{prefix}/acc" in row or f"{prefix}/avg/acc" in row

    evals = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    evals = [e for e in evals if has(e, "eval") or has(e, "base_eval")]
    if len(evals) < 2 and not (evals and has(evals[0], "base_eval")):
        return
    from rich.table import Table

    first, last = evals[0], evals[-1]
    base = has(first, "base_eval")
    if base and len(evals) == 1:  # `rema sft`: before and after the cold start
        last, first = (
            first,
            {
                "step": first["step"],
                **{k.replace("base_eval/", "eval/", 1): v for k, v in first.items() if k.startswith("base_eval/")},
            },
        )
        base = False
    title = f"held-out accuracy, step {first['step']} -> step {last['step']}"
    table = Table(title=title + (" (cold start at step 0)" if base else ""))
    table.add_column("")
    columns = ("base", "after SFT", "after RL", "RL change") if base else ("before", "after", "change")
    for col in columns:
        table.add_column(col, justify="right")
    head = "eval/avg/" if "eval/avg/acc" in last else "eval/"  # several sets: their average, then each set
    keys = [f"{head}acc"]
    if head == "eval/avg/":
        keys += [k for k in last if re.fullmatch(r"eval/[^/]+/acc", k) and k != "eval/avg/acc"]
    else:
        keys += sorted(k for k in last if k.startswith("eval/acc/level_"))
    keys += [
        f"{head}{k}" for k in ("boxed_rate", "leak_rate", "plan_leak_rate", "end/finished") if f"{head}{k}" in last
    ]
    for k in keys:
        if k in first:
            label = k.removeprefix("eval/").replace("acc/level_", "level ")
            if head == "eval/avg/":
                label = (
                    "average"
                    if label == "avg/acc"
                    else (
                        label.removesuffix("/acc") if label.endswith("/acc") else f"{label.removeprefix('avg/')} (avg)"
                    )
                )
            cells = [f"{first[k]:.1%}", f"{last[k]:.1%}", f"{last[k] - first[k]:+.1%}"]
            if base:
                cells.insert(0, f"{first.get(k.replace('eval/', 'base_eval/', 1), float('nan')):.1%}")
            table.add_row(label, *cells)
    console.print(table)
