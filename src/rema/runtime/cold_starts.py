"""What decides a cold start, as a key: a run's ``sft.cache`` entry (:mod:`rema.train.sft_cache`) and the dry run of
``rema reproduce`` (a cold start counted once per entry) both read it, so it lives below the commands."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..config import Config

TEACHER_NAME = "synthetic-program@2026.12.3"
"""The program teacher's version (:mod:`rema.data.teacher`), recorded in each of its dialogues' ``meta["teacher"]``
and part of a teacher cold start's key: change it whenever a phrasing there changes, so that no cached cold start
of the old phrasings is reused."""
ENTRY_METRICS = "metrics.json"
"""The file an ``sft.cache`` entry's folder holds its cold start's metrics in (:mod:`rema.train.sft_cache` writes an
entry whole, then renames it into place): a folder with it is a finished cold start."""
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
        "teacher": TEACHER_NAME if cfg.sft.data == "teacher" else None,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_stored(cache: str | Path | None, key: str) -> bool:
    """Whether the ``sft.cache`` folder ``cache`` holds a finished cold start under ``key`` (:data:`ENTRY_METRICS`)."""
    return cache is not None and (Path(cache) / key / ENTRY_METRICS).is_file()
