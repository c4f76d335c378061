"""Metrics sinks: JSONL (always), tensorboard and wandb (when asked), and the samples file."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _clean(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None if math.isnan(v) else (1e308 if v > 0 else -1e308)
        out[k] = v
    return out


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Drop records with ``step > max_step`` (a resumed run rewrites the steps after its checkpoint)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= max_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    tmp.replace(path)


class MetricsLogger:
    """Writes one JSON object per step to ``metrics.jsonl`` and mirrors scalars to tensorboard / wandb."""

    def __init__(self, run_dir: Path, *, tensorboard: bool = True, wandb: bool = False, name: str = "rema",
                 config: dict | None = None, resume_step: int | None = None, enabled: bool = True):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.samples_path = run_dir / "samples.jsonl"
        self.tb = self.wandb = None
        if not enabled:  # non-zero ranks of a data-parallel run write nothing
            return
        if resume_step is not None:
            truncate_jsonl(self.path, resume_step)
            truncate_jsonl(self.samples_path, resume_step)
        self._file = self.path.open("a")
        self._samples = self.samples_path.open("a")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step is not None else None)
        self.wandb = None
        if wandb:
            try:
                import wandb as wb
            except ImportError as err:
                raise RuntimeError("log.wandb=true needs `pip install wandb`") from err
            self.wandb = wb.init(project="rema", name=name, config=config, dir=str(run_dir), resume="allow")

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
