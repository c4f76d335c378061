"""vLLM tensor parallelism across the job's own processes (``rollout.vllm_tensor_parallel_size``).

With ``external_launcher`` one vLLM engine spans ``tp`` consecutive ranks of the ``torchrun``/``accelerate``
job, each holding a slice of every layer. vLLM then requires the processes of a group to make *the same*
calls with *the same* inputs (same prompts, same sampling seeds), in the same order: each rank's sampler
must draw the same tokens from the all-reduced logits.

The trainer's data split stays what it is without tensor parallelism (every rank rolls out and trains on its
own share of the questions), so the ranks of a group ask for different prompts. :class:`TPGroupEngine` puts
them together: every ``generate`` of a rank is one *round* in which the group's ranks exchange their requests
(an object all-gather over a gloo subgroup), every rank runs the union through the engine, and each keeps
its own slice. A multi-turn rollout asks for different numbers of turns on different ranks (one rank's
episodes may all have ended at turn 3, another's go on to turn 5): a rank whose rollout is over keeps taking
part in rounds (:meth:`TPGroupEngine.end_rollout`, which the protocol calls) until every rank of its group is
done. With separate weights the MTA's and the RA's engines share one :class:`TPGroup`, so a round can carry
requests for both; they are served one engine after the other, in a fixed order, on every rank.

The same layout as TRL's colocate mode (``vllm_tensor_parallel_size``: prompts gathered within the TP group,
completions sliced back), extended to a multi-turn protocol.
"""

from __future__ import annotations

from .engine import Completion, Engine, SamplingParams

Request = tuple[str | None, list[list[int]], list[SamplingParams]]
"""(engine key, prompts, params) one rank brings to a round; key None: this rank's rollout is over."""


def tp_groups(world: int, tp: int) -> list[list[int]]:
    """Consecutive ranks in groups of ``tp`` (vLLM's layout under ``external_launcher``): 4, 2 -> [[0, 1], [2, 3]]."""
    if tp < 1 or world % tp:
        raise ValueError(f"rollout.vllm_tensor_parallel_size={tp} must divide the number of processes ({world})")
    return [list(range(start, start + tp)) for start in range(0, world, tp)]


def plan_round(requests: list[Request]) -> list[tuple[str, list[tuple[int, int, int]]]]:
    """How a round's requests are served: for each engine key asked for (sorted), the spans
    ``(rank in group, start, count)`` of each asking rank's prompts in the union, concatenated in rank order.

    >>> plan_round([("ra", [[1], [2]], [None, None]), (None, [], []), ("ra", [[3]], [None]), ("mta", [[4]], [None])])
    [('mta', [(3, 0, 1)]), ('ra', [(0, 0, 2), (2, 2, 1)])]
    """
    plan = []
    for key in sorted({k for k, _, _ in requests if k is not None}):
        spans, start = [], 0
        for rank, (k, prompts, _) in enumerate(requests):
            if k == key:
                spans.append((rank, start, len(prompts)))
                start += len(prompts)
        plan.append((key, spans))
    return plan


class TPGroup:
    """The ranks one engine spans and the engines they share (by key: the policy's name).

    ``group`` is a process group of these ranks with a CPU backend (gloo: the requests are Python objects);
    ``rank`` this process's index in it. ``exchange`` may replace the all-gather (tests)."""

    def __init__(self, group, rank: int, size: int, exchange=None):
        self.group, self.rank, self.size = group, rank, size
        self.engines: dict[str, Engine] = {}
        self._exchange = exchange
        self.rounds = 0  # rounds taken part in so far (every rank of the group counts the same)

    def exchange(self, mine: Request) -> list[Request]:
        if self._exchange is not None:
            return self._exchange(mine)
        import torch.distributed as dist

        out: list = [None] * self.size
        dist.all_gather_object(out, mine, group=self.group)
        return out

    def round(self, mine: Request) -> tuple[list[Completion] | None, bool]:
        """Take part in one round with this rank's request; returns its completions (None when it asked for
        nothing) and whether every rank of the group has ended its rollout."""
        requests = self.exchange(mine)
        self.rounds += 1
        own = None
        for key, spans in plan_round(requests):
            prompts = [p for k, ps, _ in requests if k == key for p in ps]
            params = [p for k, _, ps in requests if k == key for p in ps]
            outs = self.engines[key].generate(prompts, params) if prompts else []
            for rank, start, count in spans:
                if rank == self.rank:
                    own = outs[start:start + count]
        return own, all(k is None for k, _, _ in requests)


class TPGroupEngine(Engine):
    """One policy's engine as seen by one rank of a tensor-parallel group (see the module docstring).

    ``inner`` is this process's part of the vLLM engine (built with ``tensor_parallel_size`` and the same
    seed on every rank of the group). Weight syncs, the post-sync check, memory release and state are the
    inner engine's: the trainer makes those calls on every rank in the same order already."""

    def __init__(self, inner: Engine, group: TPGroup, key: str):
        self.inner, self.group, self.key = inner, group, key
        self.tokenizer = inner.tokenizer
        group.engines[key] = inner

    def generate(self, prompts: list[list[int]], params: list[SamplingParams]) -> list[Completion]:
        own, _ = self.group.round((self.key, list(prompts), list(params)))
        return own if own is not None else []

    @property
    def needs_sync(self) -> bool:
        return self.inner.needs_sync

    def end_rollout(self) -> None:
        """Serve the other ranks' rounds until every rank of the group has ended its rollout."""
        while True:
            _, everyone_done = self.group.round((None, [], []))
            if everyone_done:
                return

    def describe(self) -> str:
        return f"{self.inner.describe()}, tensor parallel over {self.group.size} processes"

    def sync_weights(self, model) -> dict:
        return self.inner.sync_weights(model)

    def release_memory(self) -> dict:
        return self.inner.release_memory()

    def close(self) -> None:
        self.inner.close()

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)

    def reseed(self, salt: int) -> None:
        self.inner.reseed(salt)


def make_tp_group(world: int, rank: int, tp: int, *, timeout_min: float | None = None) -> TPGroup:
    """This rank's :class:`TPGroup`: every process of the job must call this (creating subgroups is a
    collective), with the same ``tp``. ``timeout_min``: how long a round waits for the group's other ranks
    (None: torch's default)."""
    from datetime import timedelta

    import torch.distributed as dist

    groups = tp_groups(world, tp)
    mine = None
    timeout = timedelta(minutes=timeout_min) if timeout_min else None
    for ranks in groups:
        group = dist.new_group(ranks, backend="gloo", timeout=timeout)  # every rank creates every group, in order
        if rank in ranks:
            mine = (group, ranks.index(rank))
    return TPGroup(mine[0], mine[1], tp)
