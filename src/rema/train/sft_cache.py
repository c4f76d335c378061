"""A folder of finished cold starts (``sft.cache``), so that runs with the same cold start train it once.

A cold start is a pure function of its inputs: the model and its LoRA shape, the rollout format the dialogues
are replayed in, the training data, the ``sft`` settings and the cold start's seed (``sft.seed``, else
``train.seed``). :func:`~rema.runtime.cold_starts.cold_start_key` hashes exactly those; an entry holds each
policy's trained parameters (the LoRA adapters, or every parameter that trains), the dialogues and the ``sft/*``
metrics. ``rema reproduce``
points all the runs of a folder at one cache, so the three seeds of an arm, and arms that share a cold start
(Table 1's ReMA and Fig. 3's "RL from SFT"), fine-tune once. Entries are written to a temporary folder and
renamed into place, so a killed run never leaves half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..runtime.cold_starts import ENTRY_METRICS
from .policy import sync_engine


@contextmanager
def cache_lock(folder: Path) -> Iterator[None]:
    """Hold ``<folder>.lock`` while a cold start for ``folder`` is looked up, trained and stored, so that two runs
    side by side (``rema reproduce --jobs``) with the same cold start train it once: the second waits, then loads."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def trained_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters a cold start changes: those that require a gradient, by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def load_entry(folder: Path, policies) -> dict[str, float] | None:
    """Copy a cached cold start into ``policies`` (their trained parameters, in place) and return its metrics
    (with ``sft/cached`` = 1); None, leaving every policy untouched, when ``folder`` is not a complete entry for
    them (another policy layout, a missing tensor)."""
    meta = folder / ENTRY_METRICS
    if not meta.is_file():
        return None
    states = {}
    for pol in policies:
        file = folder / f"{pol.name}.safetensors"
        params = trained_parameters(pol.model)
        if not file.is_file():
            return None
        state = load_file(str(file))
        if set(state) != set(params) or any(state[n].shape != p.shape for n, p in params.items()):
            return None
        states[pol.name] = state
    with torch.no_grad():
        for pol in policies:
            for n, p in trained_parameters(pol.model).items():
                p.copy_(states[pol.name][n].to(p.device, p.dtype))
    return {**json.loads(meta.read_text()), "sft/cached": 1.0}


def store_entry(folder: Path, policies, metrics: dict[str, float], dialogues_file: Path) -> None:
    """Write an entry for ``policies`` (their trained parameters, the metrics, the dialogues) atomically: into a
    temporary folder beside ``folder``, then renamed into place (an entry already there is kept)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for pol in policies:
            state = {n: p.detach().to("cpu").contiguous() for n, p in trained_parameters(pol.model).items()}
            save_file(state, str(tmp / f"{pol.name}.safetensors"))
        if dialogues_file.is_file():
            shutil.copyfile(dialogues_file, tmp / "dialogues.jsonl")
        (tmp / ENTRY_METRICS).write_text(json.dumps(metrics, indent=1, sort_keys=True))
        if folder.exists():
            return
        os.rename(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def through_cache(
    folder: Path, policies, run_dir: Path, console, train: Callable[[], dict], should_stop: Callable[[], bool]
) -> dict[str, float]:
    """The cold start of ``folder``'s entry: loaded into ``policies`` (their engines synced, the dialogues copied
    to ``run_dir``) when it is there, else ``train()``-ed and stored (unless stopped). Held under
    :func:`cache_lock`, so a run beside this one with the same cold start waits for it, then loads it."""
    with cache_lock(folder):
        if (out := load_entry(folder, policies)) is not None:
            if (folder / "dialogues.jsonl").is_file():
                shutil.copyfile(folder / "dialogues.jsonl", run_dir / "cold_start_dialogues.jsonl")
            console.print(f"cold start: the one in {folder} (sft.cache; same model, format, data and settings)")
            for pol in policies:
                out.update({f"sft/sync/{pol.name}/{k}": v for k, v in sync_engine(pol).items()})
            return out
        out = train()
        if not should_stop():
            kept = {k: v for k, v in out.items() if "sync/" not in k}
            store_entry(folder, policies, kept, run_dir / "cold_start_dialogues.jsonl")
        return out
