"""Checkpoints as models: any step of a run written as ``save_pretrained`` folders (``rema export``, and
``rema eval --run RUN --checkpoint step_N``, or ``best``: the best healthy one).

A checkpoint holds what resuming needs (:mod:`rema.runtime.checkpoints`): the *trainable* weights (every weight
under full fine-tuning, the adapters under LoRA) and the optimizer states, in ``state.pt`` (one process, DDP)
or as ``torch.distributed.checkpoint`` shards in ``shards/`` (``train.strategy=fsdp``). A model is rebuilt
from the run's ``config.yaml`` as the trainer built it (:func:`~rema.models.set_training_dtypes`, with
``meta.json``'s bf16 flag and strategy), the checkpoint's trainable weights are loaded into it (from shards
without a process group: DCP reads every shard of a tensor into one whole tensor), and it is written with
LoRA merged by :func:`~rema.models.export_model`: ``OUT/`` for shared weights, ``OUT/mta`` and ``OUT/ra`` for
separate ones. Optimizer states are not read.

The export of a run's last checkpoint equals its own ``final/``: both are the fp32 master weights (an FSDP run
gathers them from the shards for ``final/``).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import torch

from ..config import load_config
from ..models import LoraSpec, export_model, load_model, set_training_dtypes
from ..models.folders import run_model_folders
from .checkpoints import LATEST, best_healthy, latest_checkpoint, load_checkpoint, load_trainable_state
from .resolve import SetupError

BEST = "best"
"""``--checkpoint best``: the healthy checkpoint with the best held-out accuracy
(:func:`~rema.runtime.checkpoints.best_healthy`)."""

EXPORTS = "exports"
"""Where ``rema export`` (and ``rema eval --checkpoint``) writes a run's checkpoints as models:
``RUN/exports/step_N``."""


class CheckpointError(SetupError):
    """A run or checkpoint that cannot be exported; the message names what exists."""


def checkpoint_steps(run: str | Path) -> list[int]:
    """Steps of the run's complete checkpoints (``checkpoints/step_N/state.pt``), oldest first."""
    root = Path(run) / "checkpoints"
    steps = (
        [
            int(p.name[5:])
            for p in root.glob("step_*")
            if re.fullmatch(r"step_\d+", p.name) and (p / "state.pt").is_file()
        ]
        if root.is_dir()
        else []
    )
    return sorted(steps)


def available(run: str | Path) -> str:
    """What a run offers to export or evaluate, for error messages: ``step_000002, step_000004, final``."""
    names = [f"step_{s:06d}" for s in checkpoint_steps(run)] + (["final"] if (Path(run) / "final").is_dir() else [])
    return ", ".join(names) or "nothing (no checkpoint, no final/)"


def parse_step(name: str | int) -> int | None:
    """``step_000050``, ``step_50``, ``50`` -> 50; anything else -> None."""
    m = re.fullmatch(r"(?:step_)?(\d+)", str(name).strip())
    return int(m.group(1)) if m else None


def checkpoint_path(run: str | Path, step: int | None = None) -> Path:
    """The folder of checkpoint ``step`` of ``run`` (None: the latest); errors list the steps there are."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise CheckpointError(f"{run}: not a training run folder (no config.yaml)")
    if step is None:
        path = latest_checkpoint(run / "checkpoints")
        if path is None:
            raise CheckpointError(f"{run}: no checkpoint (checkpoints/{LATEST} is missing); it has: {available(run)}")
        return path
    path = run / "checkpoints" / f"step_{step:06d}"
    if not (path / "state.pt").is_file():
        raise CheckpointError(
            f"{run}: no checkpoint of step {step}; it has: {available(run)} "
            "(train.keep_checkpoints sets how many are kept)"
        )
    return path


def _policies(cfg) -> list[tuple[str, str]]:
    """``(policy name, model name)`` as :func:`~rema.train.policy.build_policies` forms them."""
    if cfg.train.shared_weights:
        return [("shared", cfg.model.name)]
    return [("mta", cfg.model.name), ("ra", cfg.model.ra_name or cfg.model.name)]


def _load_shards(models: dict, folder: Path) -> None:
    """Read each ``{name: model}``'s trainable weights from the DCP shards in ``folder`` (no process group)."""
    import torch.distributed.checkpoint as dcp

    saved = dcp.FileSystemReader(str(folder)).read_metadata().state_dict_metadata
    request = {}
    for name, model in models.items():
        prefix = f"{name}.model."
        keys = {k[len(prefix) :] for k in saved if k.startswith(prefix)}
        own = model.state_dict()
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        missing = sorted(trainable - keys)
        unknown = sorted(keys - own.keys())
        if missing or unknown:
            raise CheckpointError(
                f"{folder} does not match the run's {name} model: missing {missing[:3]}, unexpected {unknown[:3]}"
            )
        request[name] = {"model": {k: own[k] for k in keys}}  # tensors of the model: loaded in place
    with torch.no_grad(), warnings.catch_warnings():  # "no process group: loading in a single process" is the intent
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(request, checkpoint_id=str(folder), no_dist=True)


def load_checkpoint_models(run: str | Path, step: int | None = None) -> tuple[dict, Path]:
    """``({policy name: (model, tokenizer)}, checkpoint folder)``: the run's models on CPU with the weights of
    checkpoint ``step`` (None: the latest)."""
    run = Path(run)
    path = checkpoint_path(run, step)
    cfg = load_config(run / "config.yaml")
    meta_file = run / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    m = cfg.model
    lora = LoraSpec(r=m.lora_r, alpha=m.lora_alpha, dropout=m.lora_dropout, fused=m.lora_fused)
    state = load_checkpoint(path)
    sharded = state.get("strategy", "ddp") != "ddp"
    models = {}
    for name, model_name in _policies(cfg):
        if name not in state["policies"]:
            raise CheckpointError(
                f"{path} holds the policies {sorted(state['policies'])}, the run's config asks "
                f"for {name!r} (train.shared_weights changed?)"
            )
        model, tok = load_model(model_name, dtype=m.dtype, device="cpu", lora=lora, seed=cfg.train.seed)
        set_training_dtypes(model, bf16=bool(meta.get("update_bf16_autocast")), lora=m.lora_r > 0, sharded=sharded)
        if not sharded:
            load_trainable_state(model, state["policies"][name]["model"])
        models[name] = (model.eval(), tok)
    if sharded:
        _load_shards({name: model for name, (model, _) in models.items()}, path / "shards")
    return models, path


def export_checkpoint(run: str | Path, step: int | None = None, out: str | Path | None = None) -> Path:
    """Write checkpoint ``step`` of ``run`` (None: the latest) as ``save_pretrained`` folders with LoRA merged:
    ``out`` (default ``RUN/exports/step_N``) for shared weights, ``out/mta`` and ``out/ra`` for separate ones.
    Returns ``out``."""
    models, path = load_checkpoint_models(run, step)
    target = Path(out) if out is not None else Path(run) / EXPORTS / path.name
    for name, (model, tok) in models.items():
        export_model(model, tok, target if name == "shared" else target / name)
    return target


def run_models(run: str | Path, checkpoint: str | None = None) -> tuple[Path, Path]:
    """The (MTA, RA) model folders of a training run: its ``final/`` (``checkpoint`` None or ``final``), a model
    folder, or a checkpoint (``step_N``, ``N``, ``latest``, ``best``, or a ``checkpoints/step_N`` folder) exported
    by :func:`exported_checkpoint`. Raises CheckpointError naming what the run has."""
    run = Path(run)
    given = Path(checkpoint) if checkpoint else None
    if given is not None and checkpoint != "final" and not (given.is_dir() and not (given / "state.pt").is_file()):
        if given.is_dir():  # a checkpoint folder: RUN/checkpoints/step_N
            run, checkpoint = given.resolve().parent.parent, given.name
        checkpoint = str(exported_checkpoint(run, checkpoint))
    try:
        return run_model_folders(run, None if checkpoint == "final" else checkpoint)
    except FileNotFoundError as err:
        raise CheckpointError(
            f"{err}; the run has: {available(run)} (--checkpoint step_N, latest, best, final)"
        ) from None


def resolve_best(run: str | Path) -> str:
    """The name (``step_N``) of ``run``'s best healthy checkpoint; CheckpointError when it has none."""
    best = best_healthy(run)
    if best is None:
        raise CheckpointError(
            f"--checkpoint best: {run} has no checkpoint marked healthy (train.health); it has: {available(run)}"
        )
    return best.name


def exported_checkpoint(run: str | Path, name: str) -> Path:
    """The model folder of checkpoint ``name`` (``step_N``, ``N``, ``latest`` or ``best``) of ``run``, exported to
    ``RUN/exports/step_N`` on first use and reused while newer than the checkpoint (``rema eval --checkpoint``)."""
    name = resolve_best(run) if name == BEST else name
    step = None if name == LATEST else parse_step(name)
    if step is None and name != LATEST:
        raise CheckpointError(
            f"--checkpoint {name!r}: name a checkpoint (step_N, N, latest, best), final, or a "
            f"model folder; {run} has: {available(run)}"
        )
    path = checkpoint_path(run, step)
    target = Path(run) / EXPORTS / path.name
    folders = [target] if (target / "config.json").is_file() else [target / "mta", target / "ra"]
    marks = [f / "REMA_COMPLETE" for f in folders]
    if all(m.is_file() for m in marks) and min(m.stat().st_mtime for m in marks) >= (path / "state.pt").stat().st_mtime:
        return target
    return export_checkpoint(run, parse_step(path.name), target)
