"""What rema adds to vLLM's worker: the RPC methods mixed into it (:class:`RemaWorkerExtension`, loaded by
vLLM by name, also in a worker process of its own), the CPU thread binding it is started with, and which
engine of a process may use sleep mode."""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Iterable

import torch


def cpu_list(cpus: list[int]) -> str:
    """[0, 1, 2, 5, 6] -> "0-2,5-6": the form of ``VLLM_CPU_OMP_THREADS_BIND``."""
    parts, start = [], None
    for i, c in enumerate(cpus):
        if start is None:
            start = c
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            parts.append(f"{start}-{c}" if c != start else str(c))
            start = None
    return ",".join(parts)


class RemaWorkerExtension:
    """Mixed into every vLLM worker (``worker_extension_cls``); its methods are called by name over RPC."""

    def rema_reload_weights(self, weights_path: str | None = None,
                            tensors: Iterable[tuple[str, torch.Tensor]] | None = None) -> list[str]:
        """Reload the weights in place from ``weights_path`` (a folder with the safetensors file) or from
        ``tensors`` ((name, tensor) pairs, only when this worker runs in the caller's process), then
        re-prepare layers that share a weight.

        vLLM's in-place reload re-processes every layer whose weights it loads; on CPU, processing packs a
        linear layer's weight for oneDNN. A tied ``lm_head`` loads nothing of its own (it shares
        ``embed_tokens``'s tensor, which is updated in place), so its packed copy stays stale and the sampler
        keeps scoring with the old output embedding (SmolLM2 ties them: the post-sync check measured 0.12 max
        |Δ log-prob| before this fix). Re-running its ``process_weights_after_loading`` re-packs it from the
        shared, updated tensor. Returns the names of the layers re-prepared.
        """
        if tensors is not None:
            self.reload_weights(weights_iterator=iter(tensors))
        else:
            self.reload_weights(weights_path=weights_path)
        model = self.model_runner.get_model()
        owners: dict[int, list[tuple[str, torch.nn.Module]]] = {}
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.numel() > 0 and not weight.is_meta:
                owners.setdefault(weight.data_ptr(), []).append((name, module))
        refreshed = []
        for shared in owners.values():
            for name, module in shared if len(shared) > 1 else ():
                method = getattr(module, "quant_method", None)
                if method is not None and hasattr(method, "process_weights_after_loading"):
                    method.process_weights_after_loading(module)
                    refreshed.append(name)
        return refreshed

    def rema_release_kv_cache(self) -> int:
        """Return the pages of this worker's KV cache to the OS; their contents become zeros. Returns bytes.

        Only safe with no request running and the prefix cache empty (:meth:`VLLMEngine.release_memory`
        drops it first): every block is then written before it is read again. The tensors stay allocated at
        the same addresses; touching a page faults in a fresh zero page."""
        import ctypes
        import mmap

        storages: dict[int, int] = {}
        for cache in _flatten_tensors(getattr(self.model_runner, "kv_caches", [])):
            storage = cache.untyped_storage()
            if storage.device.type == "cpu":
                storages[storage.data_ptr()] = storage.nbytes()
        libc = ctypes.CDLL(None, use_errno=True)
        page, released = mmap.PAGESIZE, 0
        for ptr, nbytes in storages.items():
            start, end = -(-ptr // page) * page, (ptr + nbytes) // page * page  # whole pages inside the buffer
            if end > start:
                if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED):
                    raise OSError(ctypes.get_errno(), "madvise(MADV_DONTNEED) on vLLM's KV cache failed")
                released += end - start
        return released


_MADV_DONTNEED = 4  # Linux


def _flatten_tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _flatten_tensors(item)]
    return []


def bind_cpu_threads(cpu_threads_bind: str | None, *, is_cpu: bool) -> None:
    """Set ``VLLM_CPU_OMP_THREADS_BIND`` for a CPU worker: ``"all"`` = every core this process may run on, none
    reserved; another value as given; None leaves vLLM's default (all cores but one). No effect on a GPU."""
    if cpu_threads_bind == "all":
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        cpu_threads_bind = cpu_list(sorted(cpus))
    if cpu_threads_bind is not None and is_cpu:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads_bind
        if cpu_threads_bind not in ("auto",):
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


# -- sleep mode: one engine per process --------------------------------------------------------------------
# On a GPU vLLM's sleep mode allocates through its CuMemAllocator, a singleton of the process whose worker
# runs the engine: a second engine with sleep mode in the same process fails to load its weights
# ("CuMem allocator can only be used for one instance per process.", vllm/v1/worker/gpu_worker.py). With
# separate weights (two engines per process) the first engine started gets sleep mode, the other stays awake.

_sleeper: weakref.ref | None = None
"""The engine of this process that holds vLLM's sleep-mode allocator (None: none alive)."""


def sleep_mode_taken() -> bool:
    """Whether an engine of this process already holds vLLM's sleep-mode allocator."""
    return _sleeper is not None and _sleeper() is not None


def claim_sleep_mode(engine) -> None:
    """Record ``engine`` as this process's sleeping engine (it was started with sleep mode, in this process)."""
    global _sleeper
    _sleeper = weakref.ref(engine)


def allowed_sleep_level(level: int, *, in_process: bool, available: bool) -> int:
    """The sleep level an engine may use: 0 where vLLM has no sleep mode (``available`` False: CPUs), or when
    its worker runs in this process and another engine here holds the sleep-mode allocator (warned)."""
    if not level or not available:
        return 0
    if in_process and sleep_mode_taken():
        warnings.warn(f"rollout.vllm_sleep={level}: vLLM's sleep mode allows one engine per process (its CuMem "
                      "allocator); this process's second engine stays awake (rema plan counts it so)", stacklevel=3)
        return 0
    return level
