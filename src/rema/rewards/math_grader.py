"""Math correctness grading with a hard per-item timeout, in a small pool of persistent worker processes.

Why processes: adversarial LaTeX (``\\boxed{9^{9^{9^{9}}}}``, a megabyte of ``{``, deep fractions) can hang
a CAS inside C code where no signal reaches it. Each item is sent to a persistent worker
(``math_worker.py``); the parent waits at most ``timeout_s`` and otherwise kills the worker, scores the item
0 with ``timed_out=True`` and starts a replacement. Inside the worker a soft deadline (``SOFT_FRACTION`` of
``timeout_s``) ends most slow items cleanly, so a kill (and ~1 s respawn) is rare.

Why ``subprocess`` + ``multiprocessing.connection`` framing rather than ``multiprocessing.Process``:
the trainer holds torch threads (plain fork is unsafe) and 'spawn'/'forkserver' children re-import the
parent's ``__main__`` (e.g. ``rema.cli`` and torch) in every worker. A worker exec'd as
``python math_worker.py`` imports only math_verify: ~1 s to start, ~100 MB, no torch. POSIX only.

The pool is created lazily on first use, grows to the largest ``workers`` asked for, is shared by
threads (one lock), is re-created in a forked child, and is closed at exit (or by ``close()``).
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

SOFT_FRACTION = 0.8
"""The worker stops an item itself after this fraction of ``timeout_s``; the parent kills at 100%."""
STARTUP_TIMEOUT_S = 120.0
"""A worker that has not said 'ready' by then means a broken environment: RuntimeError."""
_WORKER_SCRIPT = Path(__file__).with_name("math_worker.py")


@dataclass(frozen=True)
class MathGrade:
    """Result of grading one response.

    correct: the extracted answer is equivalent to the gold.
    timed_out: grading hit its timeout (scores 0; soft deadline in the worker or hard kill by the parent).
    extracted: the answer read from the response, as a string (None when none was found).
    error: None on a normal grade (right or wrong); otherwise a short reason: 'timeout',
        'gold_unparsed', 'answer_too_long', 'worker_died (rc=...)', or 'ExcType: message' from the CAS.
    source: which extraction rule fired: 'boxed', 'hash', 'answer_is', 'last_expr', or None.
    seconds: time spent grading (in the worker; the timeout for killed items).
    """

    correct: bool
    timed_out: bool = False
    extracted: str | None = None
    error: str | None = None
    source: str | None = None
    seconds: float = 0.0


class _Worker:
    """One grading process and its two pipe ends; ``job`` is the item index it is working on."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(_WORKER_SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.tx = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self.rx = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.ready = False
        self.started = time.monotonic()
        self.job: int | None = None
        """Index (in the current batch) of the item being graded, None when idle."""
        self.job_id = 0
        self.deadline = 0.0

    def kill(self) -> None:
        for conn in (self.tx, self.rx):
            conn.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self, deadline: float) -> None:
        """Polite shutdown: EOF on stdin makes the worker exit; kill it if it is still alive at ``deadline``."""
        if not self.tx.closed:
            self.tx.close()
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.rx.close()


def _exit_code(proc: subprocess.Popen) -> int | None:
    """Exit status of a worker whose pipe just closed (it may need a moment to be reaped)."""
    try:
        return proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        return None


class GraderPool:
    """Persistent worker processes grading (response, gold) pairs with a hard per-item timeout."""

    def __init__(self) -> None:
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._next_job = 0
        self.respawns = 0
        """Workers killed (timeout) or found dead and replaced, over the pool's life."""

    def grade(self, responses: Sequence[str], golds: Sequence[str], timeout_s: float, workers: int) -> list[MathGrade]:
        """Grade ``responses[i]`` against ``golds[i]`` using up to ``workers`` processes; order preserved."""
        if len(responses) != len(golds):
            raise ValueError(f"got {len(responses)} responses but {len(golds)} golds")
        if timeout_s <= 0 or workers < 1:
            raise ValueError(f"timeout_s must be > 0 and workers >= 1, got {timeout_s=} {workers=}")
        with self._lock:
            for w in [w for w in self._workers if w.job is not None]:  # left busy by an interrupted call
                self._replace(w)
            while len(self._workers) < workers:
                self._workers.append(_Worker())
            return self._run(list(responses), list(golds), timeout_s, self._workers[:workers])

    def _run(self, responses: list[str], golds: list[str], timeout_s: float, pool: list[_Worker]) -> list[MathGrade]:
        results: list[MathGrade | None] = [None] * len(responses)
        pending = deque(range(len(responses)))
        while pending or any(w.job is not None for w in pool):
            for k, w in enumerate(pool):
                if w.ready and w.job is None and pending:
                    pool[k] = self._submit(w, pending.popleft(), responses, golds, timeout_s, results)
            waiting = [w for w in pool if w.job is not None or not w.ready]
            now = time.monotonic()
            deadlines = [w.deadline if w.job is not None else w.started + STARTUP_TIMEOUT_S for w in waiting]
            ready = wait([w.rx for w in waiting], timeout=max(0.0, min(deadlines) - now))
            for k, w in enumerate(pool):
                if w.rx in ready:
                    pool[k] = self._receive(w, results)
            now = time.monotonic()
            for k, w in enumerate(pool):
                if w.job is not None and now >= w.deadline:
                    results[w.job] = MathGrade(False, timed_out=True, error="timeout", seconds=timeout_s)
                    pool[k] = self._replace(w)
                elif not w.ready and now >= w.started + STARTUP_TIMEOUT_S:
                    self._discard(w)
                    raise RuntimeError(f"math grader worker did not start within {STARTUP_TIMEOUT_S}s")
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _submit(
        self,
        w: _Worker,
        i: int,
        responses: list[str],
        golds: list[str],
        timeout_s: float,
        results: list[MathGrade | None],
    ) -> _Worker:
        self._next_job += 1
        try:
            w.tx.send((self._next_job, responses[i], golds[i], timeout_s * SOFT_FRACTION))
        except (BrokenPipeError, OSError):  # died while idle: report the item, replace the worker
            results[i] = MathGrade(False, error=f"worker_died (rc={_exit_code(w.proc)})")
            return self._replace(w)
        w.job, w.job_id, w.deadline = i, self._next_job, time.monotonic() + timeout_s
        return w

    def _receive(self, w: _Worker, results: list[MathGrade | None]) -> _Worker:
        try:
            tag, payload = w.rx.recv()
        except (EOFError, OSError):
            if not w.ready:
                self._discard(w)
                raise RuntimeError(
                    f"math grader worker exited during start-up (rc={w.proc.returncode}); see stderr"
                ) from None
            if w.job is not None:  # e.g. a segfault on hostile input: count it, keep going
                results[w.job] = MathGrade(False, error=f"worker_died (rc={_exit_code(w.proc)})")
            return self._replace(w)
        if tag == "ready":
            w.ready = True
        else:
            if w.job is None or tag != w.job_id:
                raise RuntimeError(f"grader protocol error: answer for job {tag}, expected {w.job_id}")
            results[w.job] = MathGrade(
                correct=bool(payload["correct"]),
                timed_out=bool(payload["timed_out"]),
                extracted=payload["extracted"],
                error=payload["error"],
                source=payload["source"],
                seconds=float(payload["seconds"]),
            )
            w.job = None
        return w

    def _discard(self, w: _Worker) -> None:
        w.kill()
        self._workers.remove(w)

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        self.respawns += 1
        fresh = _Worker()
        self._workers[self._workers.index(w)] = fresh
        return fresh

    def close(self, grace_s: float = 0.5) -> None:
        """EOF to every worker at once, then reap them (killing any still busy after ``grace_s``)."""
        with self._lock:
            for w in self._workers:
                w.tx.close()
            deadline = time.monotonic() + grace_s
            for w in self._workers:
                w.stop(deadline)
            self._workers.clear()


_POOL: GraderPool | None = None
_POOL_PID = -1
_POOL_LOCK = threading.Lock()


def _get_pool() -> GraderPool:
    """The process-wide pool, created on first use (and anew in a forked child, which must not share pipes)."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():
            atexit.unregister(close)  # register once, however often the pool is re-created
            atexit.register(close)
            _POOL, _POOL_PID = GraderPool(), os.getpid()
        return _POOL


def close() -> None:
    """Stop the worker processes (registered with atexit; safe to call repeatedly)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL_PID == os.getpid():
            _POOL.close()
        _POOL = None


def default_workers() -> int:
    """min(8, CPU count): grading is CPU-bound and the trainer needs some cores too."""
    return max(1, min(8, os.cpu_count() or 1))


def grade_math_batch(
    responses: Sequence[str], golds: Sequence[str], *, timeout_s: float = 5.0, workers: int | None = None
) -> list[MathGrade]:
    """Grade many responses in parallel; ``result[i]`` grades ``responses[i]`` against ``golds[i]``.

    responses: full response texts (the answer is extracted as described in ``math_worker``).
    golds: reference answers as bare LaTeX/text (``"\\frac{1}{2}"``, ``"72"``), wrapped as ``\\boxed{gold}``.
    timeout_s: hard wall-clock limit per item, counted from when a worker receives it.
    workers: processes to use (default ``default_workers()``); the pool keeps them for later calls.
    """
    return _get_pool().grade(responses, golds, timeout_s, workers or default_workers())


def grade_math(response: str, gold: str, *, timeout_s: float = 5.0) -> MathGrade:
    """Grade one response against one gold answer (one persistent worker; see ``grade_math_batch``)."""
    return grade_math_batch([response], [gold], timeout_s=timeout_s, workers=1)[0]


def pool_respawns() -> int:
    """How many workers were killed or found dead and replaced so far (a failure metric to log)."""
    return _POOL.respawns if _POOL is not None else 0


def summarize(grades: Sequence[MathGrade]) -> dict[str, float]:
    """Rates to log for a batch: accuracy, timeouts, other errors, responses with no answer found."""
    n = max(1, len(grades))
    return {
        "grader/correct": sum(g.correct for g in grades) / n,
        "grader/timeout_rate": sum(g.timed_out for g in grades) / n,
        "grader/error_rate": sum(g.error is not None and not g.timed_out for g in grades) / n,
        "grader/no_answer_rate": sum(g.extracted is None and g.error is None for g in grades) / n,
        "grader/mean_seconds": sum(g.seconds for g in grades) / n,
    }
