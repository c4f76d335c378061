"""A resumable batch cursor over problems for RL, a stratified train/test split, and the record of a split.

RL training draws a batch of questions per step. `ProblemSampler` deals them out in shuffled epochs
(each problem once per epoch) and its whole state is three integers, so a resumed run sees exactly the
questions the uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from .problems import DataError, Problem, stable_int

__all__ = ["ProblemSampler", "split_record", "stratified_split"]


def _fingerprint(problems: Sequence[Problem]) -> str:
    """Short digest of the problem ids in order: detects resuming onto a different dataset."""
    h = hashlib.sha256()
    for p in problems:
        h.update(p.id.encode("utf-8") + b"\x00")
    return h.hexdigest()[:16]


class ProblemSampler:
    """Endless batches of problems in shuffled epochs, with exact resume.

    Every batch has `batch_size` problems: when an epoch runs out mid-batch, the batch is completed from
    the next (freshly shuffled) epoch, so no step trains on a short batch and no problem is skipped.

    The order of epoch `e` is a shuffle by ``random.Random(stable_int(seed, e))``. The RNG state is
    therefore a pure function of (seed, epoch), and `state_dict()` = (epoch, position, seed) plus a
    dataset fingerprint is the complete state: no 2.5 KB Mersenne-Twister tuple to serialise, and the
    state is JSON-friendly for checkpoints.

    Example::

        sampler = ProblemSampler(problems, batch_size=8, seed=0)
        batch = sampler.next_batch()            # list[Problem], len 8
        state = sampler.state_dict()            # save with the checkpoint
        ...
        resumed = ProblemSampler(problems, batch_size=8, seed=0)
        resumed.load_state_dict(state)          # next_batch() continues exactly where it stopped
    """

    def __init__(self, problems: Sequence[Problem], batch_size: int, seed: int = 0) -> None:
        if not problems:
            raise DataError("ProblemSampler needs at least one problem; the dataset is empty")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.problems: list[Problem] = list(problems)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        """Index of the epoch the next problem comes from."""
        self.position = 0
        """How many problems of the current epoch's order were already dealt."""
        self._fingerprint = _fingerprint(self.problems)
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.problems)))
        random.Random(stable_int("problem-sampler", self.seed, epoch)).shuffle(order)
        return order

    @property
    def batches_per_epoch(self) -> int:
        """Batches needed to see every problem once (the last one may spill into the next epoch)."""
        return math.ceil(len(self.problems) / self.batch_size)

    def next_batch(self) -> list[Problem]:
        """The next `batch_size` problems."""
        n = len(self.problems)
        batch: list[Problem] = []
        while len(batch) < self.batch_size:
            if self.position == n:
                self.epoch += 1
                self.position = 0
                self._order = self._epoch_order(self.epoch)
            take = min(self.batch_size - len(batch), n - self.position)
            batch.extend(self.problems[i] for i in self._order[self.position : self.position + take])
            self.position += take
        return batch

    def __iter__(self) -> Iterator[list[Problem]]:
        """Endless: ``for step, batch in zip(range(steps), sampler)``."""
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; `load_state_dict` on a sampler over the same problems resumes exactly."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_problems": len(self.problems),
            "fingerprint": self._fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`; fails if the problems or seed differ (the order would not match)."""
        if state["num_problems"] != len(self.problems) or state["fingerprint"] != self._fingerprint:
            raise DataError(
                f"sampler checkpoint was taken over a different dataset ({state['num_problems']} problems, "
                f"fingerprint {state['fingerprint']}; now {len(self.problems)}, {self._fingerprint}); "
                f"resume with the same data source, limit and order"
            )
        if state["seed"] != self.seed:
            raise DataError(
                f"sampler checkpoint used seed {state['seed']} but this sampler has seed {self.seed}; "
                f"construct it with seed={state['seed']} to resume the same order"
            )
        if not 0 <= state["position"] <= len(self.problems) or state["epoch"] < 0:
            raise DataError(f"sampler checkpoint has an invalid position/epoch: {state}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = self._epoch_order(self.epoch)


def stratified_split(
    problems: Sequence[Problem], n_test: int, *, key: str = "subset", seed: int = 0
) -> tuple[list[Problem], list[Problem]]:
    """(train, test) with `n_test` test problems drawn from each group of ``meta[key]`` in proportion.

    This is how the paper splits RewardBench (by subset, 5k train / 970 test). Group shares are rounded
    by largest remainder so the total is exactly `n_test`; both outputs keep the input order.
    Problems without ``meta[key]`` form their own group.
    """
    if not 0 <= n_test <= len(problems):
        raise DataError(f"n_test must be in [0, {len(problems)}], got {n_test}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(problems):
        groups[str(p.meta.get(key))].append(i)
    total = len(problems)
    exact = {g: n_test * len(idx) / total for g, idx in groups.items()}
    quota = {g: math.floor(x) for g, x in exact.items()}
    # Largest remainder; ties broken by group name so the split never depends on dict order.
    for g in sorted(exact, key=lambda g: (-(exact[g] - quota[g]), g))[: n_test - sum(quota.values())]:
        quota[g] += 1
    test_idx: set[int] = set()
    for g, idx in groups.items():
        shuffled = list(idx)
        random.Random(stable_int("stratified-split", seed, g)).shuffle(shuffled)
        test_idx.update(shuffled[: quota[g]])
    train = [p for i, p in enumerate(problems) if i not in test_idx]
    test = [p for i, p in enumerate(problems) if i in test_idx]
    return train, test


def split_record(sets: dict[str, tuple[str | None, Sequence[Problem]]]) -> dict[str, Any]:
    """What a run trained and evaluated on, for its run folder (``data_split.json``): per named set, the data
    spec that re-creates it, the number of problems, a fingerprint of their ids in order, and the ids.

    ``{"train": ("rewardbench_raw:split=train:heldout=970", problems), "eval": (...)}`` ->
    ``{"train": {"spec": ..., "n": 4153, "fingerprint": "3f2a...", "ids": [...]}, ...}``.
    """
    return {
        name: {"spec": spec, "n": len(problems), "fingerprint": _fingerprint(problems), "ids": [p.id for p in problems]}
        for name, (spec, problems) in sets.items()
    }
