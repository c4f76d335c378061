"""Data parallelism under ``accelerate launch``: who does what, and the few collectives the trainer needs.

Every rank draws the same global batch of questions (same seed) and rolls out its own share,
``questions[rank::world]``, so the G samples of a question — a GRPO group — never straddle ranks.
Gradients are summed across ranks after each mini-batch (the loss is already normalised by the *global*
unit count, so the sum is the gradient of the global loss); batch-wide statistics (REINFORCE++ whitening,
metrics) are reduced explicitly. Only rank 0 writes files. On one process every call here is a no-op.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


class Dist:
    """Rank/world of this process (1 process unless launched with several)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        if self.world > 1 and not dist.is_initialized():
            from accelerate import PartialState

            PartialState()  # initialises the process group (gloo on CPU, nccl on CUDA)
        self.rank = dist.get_rank() if self.world > 1 else 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This rank's share of a global batch (whole items, so groups stay on one rank)."""
        return items[self.rank::self.world] if self.enabled else items

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_grads_(self, params) -> None:
        """Sum every parameter's gradient across ranks (in place), one flat buffer per dtype."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def all_max(self, value: float) -> float:
        """The largest ``value`` over processes."""
        if not self.enabled:
            return value
        t = torch.tensor(float(value))
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (a list of one on a single process)."""
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
