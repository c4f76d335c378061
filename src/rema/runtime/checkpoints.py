"""Atomic checkpoints: write everything to a temp folder, then rename it into place.

A checkpoint holds what a resumed run needs to continue *exactly* as the uninterrupted one would: trainable
weights, optimizer and scheduler states, the samplers' RNG states, the data cursor, the step and the
trainer's counters. ``checkpoints/latest`` names the newest complete one; it is replaced atomically after
the folder is in place, so a crash at any moment leaves the previous checkpoint usable. With the health guard
on (``train.health``), each folder also holds ``health.json``, the checkpoint's health mark; the best healthy
checkpoint is :func:`best_healthy`'s (``rema eval --checkpoint best``).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path

import torch

LATEST = "latest"


def rng_state() -> dict:
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Parameters that train (all of them for full fine-tuning, the adapter for LoRA)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    unknown = [n for n in state if n not in params]
    if missing or unknown:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing[:3]}, unexpected {unknown[:3]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def partial_folder(ckpt_root: Path, step: int) -> Path:
    """Where the processes of a sharded run write their shards of step ``step`` before it is complete."""
    return ckpt_root / f".step_{step:06d}.partial"


def save_checkpoint(
    ckpt_root: Path,
    step: int,
    state: dict,
    *,
    keep: int = 2,
    partial: Path | None = None,
    files: dict[str, str] | None = None,
    spare: Collection[Path] = (),
) -> Path:
    """Write ``state`` as ``ckpt_root/step_{step:06d}`` atomically; keep the newest ``keep`` checkpoints.
    ``partial``: a folder already holding the run's weight shards (:func:`partial_folder`), completed with
    ``state.pt`` and renamed into place in the same way. ``files``: small text files written into the folder
    with it (name -> text: the health mark). ``spare``: checkpoints kept besides (those a rollback may need)."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:06d}"
    tmp = partial or Path(tempfile.mkdtemp(prefix=f".step_{step:06d}.", dir=ckpt_root))
    try:
        torch.save(state, tmp / "state.pt")
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _atomic_write_text(ckpt_root / LATEST, final.name + "\n")
    steps = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        if old not in spare:
            shutil.rmtree(old, ignore_errors=True)
    return final


def drop_checkpoints_after(ckpt_root: Path, step: int) -> None:
    """Delete the checkpoints taken after ``step`` (a rollback abandons them) and point ``latest`` at ``step``'s."""
    for path in ckpt_root.glob("step_*"):
        if path.is_dir() and path.name[5:].isdigit() and int(path.name[5:]) > step:
            shutil.rmtree(path, ignore_errors=True)
    _atomic_write_text(ckpt_root / LATEST, f"step_{step:06d}\n")


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / LATEST
    if not pointer.is_file():
        return None
    path = ckpt_root / pointer.read_text().strip()
    return path if (path / "state.pt").is_file() else None


def load_checkpoint(path: Path) -> dict:
    return torch.load(path / "state.pt", map_location="cpu", weights_only=False)


# ---------------------------------------------------------------------------------- health marks (train.health)

HEALTH_FILE = "health.json"
"""A checkpoint's health mark, written by the trainer's health guard: ``{"step", "healthy", "rollbacks",
"firing"}`` (``rema.train.guard``)."""


def read_mark(ckpt: Path) -> dict | None:
    """A checkpoint folder's health mark, or None (written with the guard off, or before it existed)."""
    path = Path(ckpt) / HEALTH_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_healthy(ckpt: Path) -> bool:
    """Marked healthy, or not marked at all (nothing says otherwise)."""
    return bool((read_mark(ckpt) or {}).get("healthy", True))


def mark_text(mark: dict) -> str:
    return json.dumps(mark) + "\n"


def checkpoint_step(ckpt: Path) -> int:
    return int(Path(ckpt).name.removeprefix("step_"))


def healthy_checkpoints(ckpt_root: Path) -> list[Path]:
    """The complete checkpoints of ``ckpt_root`` that are healthy (see :func:`is_healthy`), oldest first."""
    found = [
        p
        for p in Path(ckpt_root).glob("step_*")
        if (p / "state.pt").is_file() and p.name[5:].isdigit() and is_healthy(p)
    ]
    return sorted(found, key=checkpoint_step)


def healthy_before(ckpt_root: Path, step: int) -> Path | None:
    """The newest healthy checkpoint taken before ``step``."""
    found = [p for p in healthy_checkpoints(ckpt_root) if checkpoint_step(p) < step]
    return found[-1] if found else None


def best_healthy(run: str | Path) -> Path | None:
    """The healthy checkpoint of ``run`` with the best held-out accuracy at its step (``eval/acc``, or
    ``eval/avg/acc``; ties: the newer); when none of them was evaluated, the newest healthy one. None when the run
    has no healthy checkpoint."""
    found = healthy_checkpoints(Path(run) / "checkpoints")
    if not found:
        return None
    acc = _held_out_accuracy(Path(run) / "metrics.jsonl")
    scored = [(acc[checkpoint_step(p)], checkpoint_step(p), p) for p in found if checkpoint_step(p) in acc]
    return max(scored)[2] if scored else found[-1]


def _held_out_accuracy(path: Path) -> dict[int, float]:
    """Step -> held-out accuracy of a run's ``metrics.jsonl`` (the last record of a step wins)."""
    out: dict[int, float] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        value = record.get("eval/acc", record.get("eval/avg/acc"))
        if isinstance(value, (int, float)) and math.isfinite(value) and "step" in record:
            out[int(record["step"])] = float(value)
    return out
