"""A small asyncio batcher: requests queue, one loop drains the queue and runs them as one batch.

The engines generate a whole turn for many sequences in one call, and the rollout protocol plays a batch of
questions turn by turn (``rema.rollout.rollout``). So the server gathers the requests that are waiting into
one batch and runs the protocol once for all of them: a batch of B requests costs one engine call per turn,
not B. The batch runs in one worker thread (the engines are not made for concurrent calls), and the event
loop stays free to accept, refuse and stream meanwhile.

* ``submit`` returns a future at once, or raises :class:`Busy` when ``max_pending`` requests are held already
  (the server answers 429: a bounded queue, so waits cannot grow without limit);
* a request whose future was cancelled (its client went away) before its batch starts is left out;
* when a batch fails, each of its requests gets the exception; the loop goes on with the next batch.

Requests that arrive while a batch runs wait for the next one: a batch is played to its end (the protocol
has no way to let a new question join at a later turn).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .api import BatchInfo

log = logging.getLogger("rema.serve")


class Busy(Exception):
    """``max_pending`` requests are held already."""


@dataclass
class _Job:
    item: Any
    future: asyncio.Future
    arrived: float


class Batcher:
    """Runs ``run(items) -> results`` (one result per item, in order) over batches of submitted items.

    Args:
        run: the blocking batch function (called in the worker thread).
        max_pending: items held at once (queued or running); also the largest batch.
        wait_s: after the first item of a batch arrives, wait this long for more to join.
    """

    def __init__(self, run: Callable[[list], Sequence], *, max_pending: int, wait_s: float = 0.0):
        self.run, self.max_pending, self.wait_s = run, max_pending, wait_s
        self.pending = 0
        self.batches = 0
        """Batches run so far."""
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rema-engine")
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._running: list[_Job] = []  # the batch the engine thread is working on

    def start(self) -> None:
        """Start the loop on the running event loop (the app's startup)."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="rema-batcher")

    async def stop(self) -> None:
        """Stop the loop; requests still held get an error (the app's shutdown)."""
        held = list(self._running)  # (cancelling the loop clears it)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            held.append(self._queue.get_nowait())
        for job in held:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        # a batch still generating finishes before the engines are closed by the caller
        await asyncio.to_thread(self.executor.shutdown, wait=True, cancel_futures=True)

    def submit(self, item) -> asyncio.Future:
        """Queue ``item``; the future resolves to ``(result, BatchInfo)``. Raises :class:`Busy` when full."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        if self.pending >= self.max_pending:
            raise Busy(
                f"{self.pending} requests are being answered or waiting (serve.max_concurrency="
                f"{self.max_pending}); retry later"
            )
        future = asyncio.get_running_loop().create_future()
        self.pending += 1  # until the job leaves the queue unrun (its client left) or its batch ends
        self._queue.put_nowait(_Job(item, future, time.perf_counter()))
        return future

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            if self._queue.empty():  # an idle server: wait a moment for the requests arriving with this one
                jobs = [await self._queue.get()]
                if self.wait_s > 0:
                    await asyncio.sleep(self.wait_s)
            else:  # requests queued behind the last batch: run them now
                jobs = [self._queue.get_nowait()]
            while not self._queue.empty() and len(jobs) < self.max_pending:
                jobs.append(self._queue.get_nowait())
            live = [j for j in jobs if not j.future.done()]  # the others' clients left before the batch began
            self.pending -= len(jobs) - len(live)
            jobs = live
            if not jobs:
                continue
            self._running = jobs
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.run, [j.item for j in jobs])
                if len(results) != len(jobs):
                    raise RuntimeError(f"the batch function returned {len(results)} results for {len(jobs)} items")
            except asyncio.CancelledError:
                raise
            except Exception as err:  # every request of the batch learns why; the server goes on
                log.exception("a batch of %d request(s) failed", len(jobs))
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(err)
                continue
            finally:
                self.batches += 1
                self.pending -= len(jobs)
                self._running = []
            rollout_s = time.perf_counter() - start
            for j, result in zip(jobs, results):
                if not j.future.done():
                    j.future.set_result(
                        (result, BatchInfo(size=len(jobs), wait_s=start - j.arrived, rollout_s=rollout_s))
                    )
