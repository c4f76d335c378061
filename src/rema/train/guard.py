"""The health guard: runs the checks of :mod:`rema.train.health` after every step and decides what happens.

The trainer owns one :class:`HealthGuard` and calls it once per step (``Trainer._health``). The guard keeps the
recent steps' watched metrics, which checks are firing, the spans of steps it judged unhealthy, every event so
far and the number of rollbacks; all of it goes into each checkpoint, so a resumed run keeps it.

1. **Which weights are suspect.** A check's streak that began at step S fires at step N. Step S's rollout was
   sampled from the weights of step S - 1, so steps S - 1 .. N are unhealthy: their checkpoints are marked so
   (``health.json`` in the checkpoint folder) and a rollback goes to the newest healthy checkpoint before S - 1.
2. **A rollback that did not help goes further back.** Until the run gets past the step that triggered a
   rollback, a new rollback goes to a healthy checkpoint before the previous one's (the collapse had begun
   before the checks had history enough to see it).
3. **One decision per firing.** A check fires once when its condition starts to hold (not again on every step
   it keeps holding); the action is the most severe of the firing checks' (``rollback`` > ``stop`` > ``warn``;
   ``train.health.warn_only`` checks only warn), and ``rollback`` after ``max_rollbacks`` becomes ``stop``.
4. **Every rank takes the same decision.** Each rank observes the same reduced metrics; the trainer acts on
   rank 0's verdict, broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import HealthConfig
from ..runtime.checkpoints import HEALTH_FILE, checkpoint_step, healthy_checkpoints, mark_text, read_mark
from .health import WATCHED, Finding, run_checks


class RunUnhealthy(RuntimeError):
    """A health check fired and the run stopped (``train.health.action=stop``, or rollbacks exhausted)."""


@dataclass(frozen=True)
class Verdict:
    """What the guard decided at ``step``: ``action`` (warn / stop / rollback) for the checks that started firing
    (``findings``); the weights of steps ``unhealthy_from`` .. ``step`` are suspect."""

    step: int
    action: str
    findings: tuple[Finding, ...]
    unhealthy_from: int

    @property
    def checks(self) -> str:
        return ", ".join(f.check for f in self.findings)

    @property
    def message(self) -> str:
        return "; ".join(f"{f.check}: {f.message}" for f in self.findings)


class HealthGuard:
    """The checks' state across steps (see the module doc). ``observe`` after each step's metrics are complete."""

    def __init__(self, cfg: HealthConfig, *, eval_every: int = 0):
        self.cfg = cfg
        self.eval_every = eval_every
        """``train.eval_every``: how far apart the held-out evaluations ``eval_cliff`` reads are."""
        self.history: list[dict] = []
        """The recent steps' watched metrics, oldest first (as many as the checks read)."""
        self.firing: list[str] = []
        """The checks firing at the last step observed."""
        self.unhealthy: list[list[int]] = []
        """``[first, last]`` step spans judged unhealthy on the current branch (a rollback drops later ones)."""
        self.events: list[dict] = []
        """Every event so far, rollbacks included, as logged to ``metrics.jsonl``."""
        self.rollbacks = 0
        self.retreat: list[int] | None = None
        """``[target, trigger]`` of the last rollback until the run gets past its trigger step: a new rollback
        before then goes to a checkpoint before ``target``."""

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled

    @property
    def lr_scale(self) -> float:
        """What the learning rate is multiplied by after the rollbacks so far."""
        return self.cfg.lr_factor**self.rollbacks

    @property
    def reach(self) -> int:
        """How many steps back a check firing later can still judge unhealthy: a streak of ``patience`` steps (or
        of ``eval_patience`` evaluations ``eval_every`` steps apart), and the step before it."""
        return max(self.cfg.patience, self.cfg.eval_patience * self.eval_every) + 1

    @property
    def can_roll_back(self) -> bool:
        """Whether a firing check may roll back: the run then checkpoints step 0 (a rollback always has somewhere
        to go) and rotation spares the healthy checkpoints a rollback may need."""
        return self.cfg.enabled and self.cfg.action == "rollback"

    def observe(self, step: int, metrics: dict) -> Verdict | None:
        """Run the checks on the history with this step's ``metrics`` added; a Verdict when a check starts
        firing, else None (a check still firing extends the unhealthy span silently)."""
        if not self.cfg.enabled:
            return None
        self.history.append(
            {
                "step": step,
                **{k: float(v) for k, v in metrics.items() if WATCHED.fullmatch(k) and isinstance(v, (int, float))},
            }
        )
        c = self.cfg
        del self.history[: -(c.window + c.patience + c.smooth + c.eval_patience)]
        if self.retreat is not None and step > self.retreat[1]:
            self.retreat = None  # past the step that triggered the last rollback: it helped
        findings = run_checks(self.history, c)
        new = tuple(f for f in findings if f.check not in self.firing)
        self.firing = [f.check for f in findings]
        if not findings:
            return None
        start = max(0, min(f.since for f in findings) - 1)
        self._mark(start, step)
        return Verdict(step, self._action(new), new, start) if new else None

    def _mark(self, first: int, last: int) -> None:
        """Add ``[first, last]`` to the unhealthy spans, merged with the last one when they touch."""
        if self.unhealthy and first <= self.unhealthy[-1][1] + 1:
            self.unhealthy[-1] = [min(first, self.unhealthy[-1][0]), max(last, self.unhealthy[-1][1])]
        else:
            self.unhealthy.append([first, last])

    def _action(self, findings: tuple[Finding, ...]) -> str:
        actions = {"warn" if f.check in self.cfg.warn_only else self.cfg.action for f in findings}
        action = next(a for a in ("rollback", "stop", "warn") if a in actions)
        if action == "rollback" and self.rollbacks >= self.cfg.max_rollbacks:
            return "stop"
        return action

    def healthy(self, step: int) -> bool:
        """Whether no unhealthy span of the current branch covers ``step``."""
        return not any(first <= step <= last for first, last in self.unhealthy)

    def mark(self, step: int) -> dict:
        """The health mark of a checkpoint taken at ``step`` (``health.json``)."""
        return {"step": step, "healthy": self.healthy(step), "rollbacks": self.rollbacks, "firing": list(self.firing)}

    def event(self, verdict: Verdict, action: str, **extra) -> dict:
        """Record an event for ``verdict`` (``action`` as taken) and return its ``metrics.jsonl`` keys."""
        record = {
            "health/event": len(self.events),
            "health/check": verdict.checks,
            "health/action": action,
            "health/message": verdict.message,
            "health/since": verdict.unhealthy_from + 1,
            "health/rollbacks": self.rollbacks,
            **{f"health/{k}": v for k, v in extra.items()},
        }
        self.events.append({"step": verdict.step, **record})
        return record

    def rollback_before(self, verdict: Verdict) -> int:
        """A rollback for ``verdict`` goes to the newest healthy checkpoint before this step."""
        return min(verdict.unhealthy_from, self.retreat[0]) if self.retreat is not None else verdict.unhealthy_from

    def rolled_back(self, to_step: int, trigger: int) -> None:
        """The run went back to ``to_step`` from step ``trigger``: count it, forget the abandoned steps and their
        spans."""
        self.rollbacks += 1
        self.retreat = [to_step, trigger]
        self.history = [r for r in self.history if r["step"] <= to_step]
        self.unhealthy = [s for s in self.unhealthy if s[0] <= to_step]
        self.firing = []

    def state_dict(self) -> dict:
        return {
            "history": self.history,
            "firing": self.firing,
            "unhealthy": self.unhealthy,
            "events": self.events,
            "rollbacks": self.rollbacks,
            "retreat": self.retreat,
        }

    def load_state_dict(self, state: dict | None) -> None:
        """Restore :meth:`state_dict` (None: a checkpoint written before the guard existed; a fresh guard)."""
        state = state or {}
        self.history = list(state.get("history", []))
        self.firing = list(state.get("firing", []))
        self.unhealthy = [list(s) for s in state.get("unhealthy", [])]
        self.events = list(state.get("events", []))
        self.rollbacks = int(state.get("rollbacks", 0))
        self.retreat = state.get("retreat")


# ------------------------------------------------------------------------------- the marks it keeps


def guard_sync_checks(engines: dict, guard: HealthGuard) -> None:
    """Under a guard that rolls back (and runs ``logp_drift``), a post-sync check beyond its tolerance no longer
    stops the run with ``WeightSyncError``: the engine reports it and the guard rolls back. A policy pushed far
    (a learning rate too high) is what usually puts its bf16 log-probs out of the engine's tolerance, and a
    healthy checkpoint puts them back; a real sync fault fires again after every rollback and stops the run."""
    if guard.can_roll_back and "logp_drift" not in guard.cfg.skip:
        for engine in engines.values():
            if hasattr(engine, "sync_check_fatal"):
                engine.sync_check_fatal = False


def remark(ckpt_root: Path, guard: HealthGuard) -> None:
    """Rewrite the marks of checkpoints that a span found since has made unhealthy (atomic per file)."""
    for ckpt in sorted(Path(ckpt_root).glob("step_*")):
        mark = read_mark(ckpt)
        if mark is not None and mark.get("healthy") and not guard.healthy(int(mark["step"])):
            tmp = ckpt / (HEALTH_FILE + ".tmp")
            tmp.write_text(mark_text({**mark, "healthy": False, "firing": list(guard.firing)}))
            tmp.replace(ckpt / HEALTH_FILE)


def needed_for_rollback(ckpt_root: Path, step: int, guard: HealthGuard) -> set[Path]:
    """The healthy checkpoints a rollback from a step after ``step`` may go to: those of the last ``guard.reach``
    steps (a check may still judge them unhealthy), the newest one before them, and while a rollback has not
    helped yet, the newest one before its target. Checkpoint rotation spares them."""
    healthy = healthy_checkpoints(ckpt_root)
    cut = step - guard.reach
    keep = {p for p in healthy if checkpoint_step(p) >= cut}
    for bound in (cut, *(guard.retreat[:1] if guard.retreat else [])):
        keep |= set([p for p in healthy if checkpoint_step(p) < bound][-1:])
    return keep
