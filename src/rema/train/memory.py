"""Process memory on the host: peak and per-phase resident memory, and handing freed heap back to the OS.

The trainer and its generation engine share one machine's memory on CPU, so the update returns what it
freed before the next rollout, and each phase's peak is logged (``perf/peak_rss_gb/<phase>``). Benchmarks
(``bench/``) measure with the same helpers.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import torch

GLIBC_MMAP_THRESHOLD_MAX_MB = 32
"""glibc's ceiling for its self-raising mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``)."""


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GiB)."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 2**20 if sys.platform != "darwin" else kb / 2**30


def release_freed_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    glibc keeps most memory that torch frees on CPU: after an update the trainer process would hold its
    peak through the next rollout, while the engine needs the memory. It only releases pages that are
    already free."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def set_malloc_mmap_threshold(mb: float) -> bool:
    """glibc: allocations of at least ``mb`` MiB get their own memory map (returned to the OS when freed);
    a fixed threshold also stops glibc from raising it. Returns whether it was set (no-op off glibc)."""
    if mb <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, int(mb * 2**20)))  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        return False


@contextmanager
def update_heap(mb: float, device: torch.device):
    """Within: ``train.malloc_mmap_threshold_mb`` (tensors of ``mb`` MiB or more mapped and unmapped on their
    own), with freed memory returned to the OS on the way in and out. After: the threshold at glibc's
    ceiling, where its own raising would put it, because generation wants the heap: vLLM's per-step tensors
    mapped afresh each step cost a large share of rollout speed (bench/rollout_speed.py). ``mb <= 0`` or a
    non-CPU device: the threshold is left alone."""
    active = mb > 0 and device.type == "cpu" and set_malloc_mmap_threshold(mb)
    release_freed_memory()
    try:
        yield
    finally:
        if active:
            set_malloc_mmap_threshold(GLIBC_MMAP_THRESHOLD_MAX_MB)
        release_freed_memory()


class PhasePeak:
    """Peak resident memory of this process per phase (Linux: ``VmHWM``, reset through ``clear_refs``)."""

    def __init__(self):
        self.ok = Path("/proc/self/clear_refs").exists()

    def reset(self) -> None:
        if self.ok:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts from the current RSS
            except OSError:
                self.ok = False

    def read_gb(self) -> float:
        """The peak since the last reset (GiB); NaN where the kernel does not say."""
        if self.ok:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
        return float("nan")


def children_rss_gb() -> float:
    """Resident memory of this process's children now (vLLM's engine processes; GiB, PSS where known)."""
    try:
        import psutil
    except ImportError:
        return float("nan")
    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            info = child.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return total / 2**30
