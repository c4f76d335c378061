"""Atomic checkpoints: write everything to a temp folder, then rename it into place.

A checkpoint holds what a resumed run needs to continue *exactly* as the uninterrupted one would: trainable
weights, optimizer and scheduler states, the samplers' RNG states, the data cursor, the step and the
trainer's counters. ``checkpoints/latest`` names the newest complete one; it is replaced atomically after
the folder is in place, so a crash at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

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


def save_checkpoint(ckpt_root: Path, step: int, state: dict, *, keep: int = 2, partial: Path | None = None,
                    files: dict[str, str] | None = None, spare: Collection[Path] = ()) -> Path:
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
