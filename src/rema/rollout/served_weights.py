"""The weights vLLM serves: the trainer's merged weights in vLLM's dtype, their fingerprint, and the folder
they are served from.

In vLLM's own processes the weights travel as one safetensors file (:func:`write_weights`) in a folder that
:func:`claim_served_folder` holds with a lock; in this process they are handed over one at a time
(:func:`iter_served_tensors`). Either way :class:`Fingerprint` digests their exact bits, so a sync can tell
whether anything changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from ..models import iter_merged_weights

WEIGHTS_FILE = "model.safetensors"


class Fingerprint:
    """A cheap digest of the exact bits of named tensors (changes when any of them changes), fed one tensor
    at a time in any order: ``fp.add(name, t)`` ... ``fp.hexdigest()``."""

    def __init__(self):
        self.words: dict[str, int] = {}

    def add(self, name: str, t: torch.Tensor) -> None:
        bits = t.view(torch.int16) if t.element_size() == 2 else t.view(torch.int32) if t.element_size() == 4 else t
        # xor-reduction of the 64-bit words: any changed element changes it (~0.3 s for 135M weights)
        self.words[name] = torch.hash_tensor(bits.reshape(-1)).view(torch.int64).item()

    def tap(self, items: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        """Pass ``items`` through, adding each to the digest on the way."""
        for name, t in items:
            self.add(name, t)
            yield name, t

    def hexdigest(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for name in sorted(self.words):
            h.update(name.encode())
            h.update(self.words[name].to_bytes(8, "little", signed=True))
        return h.hexdigest()


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """The :class:`Fingerprint` of a dict of tensors."""
    fp = Fingerprint()
    for name, t in tensors.items():
        fp.add(name, t)
    return fp.hexdigest()


def iter_served_tensors(model, dtype: torch.dtype, device: str | None = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """``model``'s (merged) weights as vLLM loads them, one at a time: checkpoint names, ``dtype``, on
    ``device`` (None: where they are, e.g. the GPU both the trainer and an in-process vLLM use, so a sync
    never goes through host memory), contiguous. Sharded weights are gathered one at a time (every process
    iterates in step)."""
    for name, value in iter_merged_weights(model):  # (a tied LM head is not among them: vLLM ties it itself)
        yield (
            name,
            value.detach().to(device or value.device, dtype if value.is_floating_point() else value.dtype).contiguous(),
        )


def served_tensors(model, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """:func:`iter_served_tensors` as one dict."""
    return dict(iter_served_tensors(model, dtype))


def write_weights(model, folder: Path, dtype: torch.dtype) -> str:
    """Write ``model``'s (merged) weights as ``folder/model.safetensors`` in ``dtype``, atomically.

    Any other weight file in ``folder`` (e.g. shards linked from a saved model) is removed first, so vLLM
    loads exactly this one. Returns the :func:`fingerprint` of what was written.
    """
    from safetensors.torch import save_file

    tensors = served_tensors(model, dtype)
    for old in folder.iterdir():
        if old.name != WEIGHTS_FILE and (
            old.suffix in (".safetensors", ".bin", ".pt") or old.name.endswith(".index.json")
        ):
            old.unlink()
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, folder / WEIGHTS_FILE)  # a reader never sees a half-written file
    return fingerprint(tensors)


def claim_served_folder(parent: str | Path | None = None) -> tuple[Path, int]:
    """An empty folder for the served model, at the same path from run to run, and the lock that holds it.

    A fresh temporary name every run would leave a run killed by SIGKILL's weights in RAM (``/dev/shm``) for
    good, and vLLM's AOT compile cache keys on the model path. The folder is ``<parent>/rema-vllm-<uid>-<slot>``:
    the lowest slot whose lock file no live engine holds (``flock``, released by the OS when a process dies,
    so a dead run's slot is reused and its leftovers replaced). Returns ``(folder, lock_fd)``;
    :func:`release_served_folder` removes the folder and releases the lock (the empty lock file stays).
    """
    import fcntl

    root = Path(parent or tempfile.gettempdir())
    user = os.getuid() if hasattr(os, "getuid") else 0
    for slot in range(4096):
        fd = os.open(root / f"rema-vllm-{user}-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live engine (this process's or another's) serves from this slot
            os.close(fd)
            continue
        folder = root / f"rema-vllm-{user}-{slot}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(mode=0o700)
        return folder, fd
    raise RuntimeError(f"no free slot for a served-model folder in {root} (4096 engines alive?)")


def release_served_folder(folder: str, lock_fd: int | None = None) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    if lock_fd is not None:
        try:
            os.close(lock_fd)  # releases the slot's lock
        except OSError:
            pass
