"""A folder of finished cold starts (``sft.cache``), so that runs with the same cold start train it once.

A cold start is a pure function of its inputs: the model and its LoRA shape, the rollout format the dialogues
are replayed in, the training data, the ``sft`` settings and the cold start's seed (``sft.seed``, else
``train.seed``). :func:`cold_start_key` hashes exactly those; an entry holds each policy's trained parameters
(the LoRA adapters, or every parameter that trains), the dialogues and the ``sft/*`` metrics. ``rema reproduce``
points all the runs of a folder at one cache, so the three seeds of an arm, and arms that share a cold start
(Table 1's ReMA and Fig. 3's "RL from SFT"), fine-tune once. Entries are written to a temporary folder and
renamed into place, so a killed run never leaves half of one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..config import Config

UNUSED_ROLLOUT_KEYS = ("samples_per_question", "eval_temperature")
"""Rollout settings that do not change a cold start (how many samples RL draws, evaluation's temperature; the
``vllm_*`` memory and threading keys too); every other one may (the format, the turn limits a dialogue is
replayed and cut under, the engine and temperature that sample ``sft.data=self``)."""
TRAIN_KEYS = ("weight_decay", "grad_clip", "autocast", "shared_weights", "micro_batch_tokens")
"""Training settings the fine-tuning reads."""


def sft_seed(cfg: Config) -> int:
    """The cold start's seed: ``sft.seed``, else ``train.seed``."""
    return cfg.train.seed if cfg.sft.seed is None else cfg.sft.seed


def cold_start_key(cfg: Config) -> str:
    """A 16-hex-digit hash of what decides a cold start's result (module docstring)."""
    d = cfg.to_dict()
    rollout = {k: v for k, v in d["rollout"].items() if k not in UNUSED_ROLLOUT_KEYS and not k.startswith("vllm_")}
    data = {k: v for k, v in d["data"].items() if k not in ("eval", "eval_limit")}
    sft = {k: v for k, v in d["sft"].items() if k != "cache"} | {"seed": sft_seed(cfg)}
    inputs = {
        "model": d["model"],
        "rollout": rollout,
        "data": data,
        "sft": sft,
        "train": {k: d["train"][k] for k in TRAIN_KEYS},
        # a model's own samples (sft.data=self) also depend on the engine's seed, which is the run's
        "sampling_seed": cfg.train.seed if cfg.sft.data == "self" else None,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    meta = folder / "metrics.json"
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
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
        if folder.exists():
            return
        os.rename(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
