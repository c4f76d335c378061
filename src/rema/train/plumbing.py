"""Process plumbing of a run: its signal handlers while it trains, its progress bars."""

from __future__ import annotations

import signal
from contextlib import contextmanager


@contextmanager
def signals_to(handler, signals=(signal.SIGINT, signal.SIGTERM)):
    """While active, ``handler(signum, frame)`` receives ``signals`` (Ctrl-C, a scheduler's or `kill`'s SIGTERM);
    the previous handlers come back afterwards."""
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def progress_bar(console, label: str, *, enabled: bool, total: int | None = None, completed: int = 0):
    """A progress bar on ``console`` (none shown unless ``enabled``) yielding ``update(done, total, text="")``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=not enabled,
    ) as p:
        task = p.add_task("", total=total, completed=completed)
        yield lambda done, total, text="": p.update(task, completed=done, total=total, description=text)
