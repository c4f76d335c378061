"""Data parallelism under ``torchrun`` / ``accelerate launch``: who does what, and every collective rema itself
makes (FSDP's and vLLM's are their own).

Every rank draws the same global batch of questions (same seed) and rolls out its own share,
``questions[rank::world]``, so the G samples of a question — a GRPO group — never straddle ranks.
Gradients are summed across ranks after each mini-batch (the loss is already normalised by the *global*
unit count, so the sum is the gradient of the global loss); batch-wide statistics (REINFORCE++ whitening,
metrics) are reduced explicitly. Only rank 0 writes files. On one process every call here is a no-op.

How the process group is made right for GPUs:

1. **One group, two backends.** On CUDA the group is ``cuda:nccl,cpu:gloo``: NCCL carries CUDA tensors (the
   gradients, FSDP's shards), gloo carries CPU ones (the object all-gathers of metrics and episodes, barriers).
   A plain NCCL group — what ``accelerate``'s ``PartialState`` makes — accepts CUDA tensors only and fails with
   "No backend type associated with device type cpu".
2. **Tensors on the communication device.** Every tensor :class:`Dist` reduces is moved to :attr:`Dist.device`
   (this process's GPU; the CPU under gloo) and the result copied back where it came from, so callers pass
   whatever they hold: a count built on the CPU, a gradient on the GPU. Scalars go through
   :meth:`Dist.sum_value` / :meth:`Dist.all_max`, never a ``torch.tensor`` of the caller's.
3. **A generous timeout** (``train.dist_timeout_min``, 60 min): ranks wait on each other through a whole
   rollout, an evaluation and rank 0's writes (an export, a checkpoint); NCCL's own default is 10 minutes.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_MIN = 60.0
"""``train.dist_timeout_min``'s default."""


def process_group_backend(device_type: str) -> str | None:
    """The ``init_process_group`` backend for a process computing on ``device_type``: ``cuda:nccl,cpu:gloo``
    on CUDA (note 1), ``gloo`` on CPU, None elsewhere (torch's own default per device)."""
    return {"cuda": "cuda:nccl,cpu:gloo", "cpu": "gloo"}.get(device_type)


class Dist:
    """Rank/world of this process (1 process unless launched with several), and rema's collectives.

    ``device``: this process's compute device, where the collectives' tensors go (note 2); CPU by default.
    ``timeout_min``: how long a collective may wait for the other ranks before the job fails."""

    def __init__(self, device: torch.device | str | None = None, *, timeout_min: float = DEFAULT_TIMEOUT_MIN) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(device or "cpu")
        """The communication device: every tensor a collective of this class sends is on it."""
        if self.world > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend=process_group_backend(self.device.type),
                                    timeout=timedelta(minutes=timeout_min))
        self.rank = dist.get_rank() if self.world > 1 else 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This rank's share of a global batch (whole items, so groups stay on one rank)."""
        return items[self.rank::self.world] if self.enabled else items

    def _reduce_(self, tensor: torch.Tensor, op) -> torch.Tensor:
        """``tensor`` reduced by ``op`` over processes, in place, through the communication device."""
        if not self.enabled:
            return tensor
        sent = tensor.to(self.device)  # the same tensor when it is there already
        dist.all_reduce(sent, op=op)
        if sent is not tensor:
            tensor.copy_(sent)
        return tensor

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over processes (in place; returned), wherever it lives."""
        return self._reduce_(tensor, dist.ReduceOp.SUM)

    def sum_value(self, value: float) -> float:
        """The sum of ``value`` over processes, in float32 (exact for counts below 2**24; a single process gets
        ``value`` rounded to float32 too, as the trainer always reduced it)."""
        return float(self._reduce_(torch.tensor(float(value)), dist.ReduceOp.SUM))

    def all_max(self, value: float) -> float:
        """The largest ``value`` over processes."""
        return float(self._reduce_(torch.tensor(float(value)), dist.ReduceOp.MAX))

    def sum_grads_(self, params) -> None:
        """Sum every parameter's gradient across ranks (in place), through one flat buffer."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = self._reduce_(torch.cat([g.reshape(-1) for g in grads]), dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (a list of one on a single process); pickled over the CPU
        backend."""
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Wait for every rank, then tear the process group down (safe to call repeatedly). Left to the
        interpreter's exit, gloo's threads can be destroyed while a peer is still closing its connections, and
        the process aborts ("terminate called without an active exception") after the work is done. Called while
        an exception propagates (from a ``finally``), it skips the wait: the other ranks may never arrive."""
        if self.enabled and dist.is_initialized():
            if sys.exc_info()[0] is None:
                dist.barrier()
            dist.destroy_process_group()


def merge_metrics(per_rank: list[dict], weights: list[float]) -> dict:
    """Weighted mean of each key over ranks (weights: e.g. episodes per rank); keys missing on a rank skip it."""
    keys = {k for m in per_rank for k in m}
    out = {}
    for k in keys:
        pairs = [(m[k], w) for m, w in zip(per_rank, weights) if k in m and isinstance(m[k], (int, float))]
        total = sum(w for _, w in pairs)
        if pairs and total > 0:
            out[k] = sum(v * w for v, w in pairs) / total
    return out
