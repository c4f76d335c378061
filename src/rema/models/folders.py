"""Writing a model folder atomically: a crash or a concurrent writer never leaves half of one behind."""

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
