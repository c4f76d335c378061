"""Model folders: writing one atomically (a crash or a concurrent writer never leaves half of one behind), and
finding the model(s) a run folder holds."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_save(target: Path, write: Callable[[Path], None]) -> None:
    """``write(folder)`` into a temp dir beside ``target``, then rename it to ``target``, so a crash never
    leaves a half-written model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        write(tmp)
        (tmp / "REMA_COMPLETE").write_text("ok\n")
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def pretrained_writer(model, tokenizer) -> Callable[[Path], None]:
    """The ``write`` for :func:`atomic_save` of ``model`` and ``tokenizer`` (``save_pretrained``, safetensors)."""

    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    return write


# --- a run folder -> its models (rema eval, chat, serve, export) --------------------------------------


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``rema train`` / ``rema sft`` (it holds ``config.yaml``)."""
    return (Path(path) / "config.yaml").is_file()


def model_folders(folder: str | Path) -> tuple[Path, Path] | None:
    """The (MTA, RA) ``save_pretrained`` folders in ``folder``: the folder itself twice when it holds one model
    (``config.json``: shared weights), its ``mta/`` and ``ra/`` (separate weights), or its ``model/``; None
    when it holds none of these."""
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder, folder
    if (folder / "mta" / "config.json").is_file() and (folder / "ra" / "config.json").is_file():
        return folder / "mta", folder / "ra"
    if (folder / "model" / "config.json").is_file():
        return folder / "model", folder / "model"
    return None


def run_model_folders(run: str | Path, checkpoint: str | None = None) -> tuple[Path, Path]:
    """The (MTA, RA) model folders of a training run: its ``final/`` (written when the run ends), or
    ``checkpoint``, a folder under ``checkpoints/`` or a path, when that holds a model.

    Raises FileNotFoundError naming the folder and what it holds when there is no model to load."""
    run = Path(run)
    if checkpoint:
        folder = Path(checkpoint) if Path(checkpoint).is_dir() else run / "checkpoints" / checkpoint
    else:
        folder = run / "final"
    found = model_folders(folder)
    if found is None:
        listing = ", ".join(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else "missing"
        raise FileNotFoundError(
            f"{folder}: no model found (want config.json, or mta/ and ra/ folders; has: "
            f"{listing}). Is the run finished? (rema train --resume {run} finishes it)"
        )
    return found
