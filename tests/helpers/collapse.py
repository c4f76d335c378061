"""A scripted policy that collapses on cue, for the health guard's tests (test_guard.py, guard_ddp.py).

:class:`CollapsingEngine` writes healthy replies until the weights of step ``at - 1`` are reached while the
learning rate is above ``safe_lr``; from then on it writes the ``failure``'s broken replies: the rollout of step
``at`` (and a held-out evaluation at step ``at - 1``) shows the collapse. A rollback lowers the learning rate
below ``safe_lr``, so the replayed steps are healthy again and the run can finish: a policy that collapses at
this learning rate and not at half of it.
"""

from __future__ import annotations

from rema.prompts import FINISH_MARKER
from rema.rollout.engine import Completion, Engine

RIGHT, WRONG = "\\boxed{right}", "\\boxed{wrong}"

FAILURES = {  # failure -> role -> (healthy reply, broken reply); "LENGTH:" = cut at the token limit
    "format": {"mta": (f"Add them. {FINISH_MARKER}", "Add them."), "ra": (RIGHT, RIGHT)},
    "degenerate": {
        "mta": (f"Add them. {FINISH_MARKER}", f"go go go go go go go go go go go go {FINISH_MARKER}"),
        "ra": (RIGHT, "ab ab ab ab ab ab ab ab ab ab ab ab"),
    },
    "length": {
        "mta": (f"Add them. {FINISH_MARKER}", f"Add them. {FINISH_MARKER}"),
        "ra": (RIGHT, "LENGTH:working on it"),
    },
    "reward": {"mta": (f"Add them. {FINISH_MARKER}", f"Add them. {FINISH_MARKER}"), "ra": (RIGHT, WRONG)},
    "turns": {"mta": ("Next.", f"Done. {FINISH_MARKER}"), "ra": (RIGHT, RIGHT)},
}
"""``turns``: a healthy MTA closes the dialogue at its third message, a broken one at its first."""


def correct(ep) -> float:
    """The reward these tests train on: the RA's last reply boxes ``right``."""
    return float(RIGHT in ep.final_response)


class CollapsingEngine(Engine):
    """Scripted replies (see the module doc); ``trainer`` is read at each call (its step and learning rate)."""

    def __init__(self, tokenizer, failure: str, at: int, safe_lr: float, holder: dict):
        self.tokenizer = tokenizer
        self.failure, self.at, self.safe_lr, self.holder = failure, at, safe_lr, holder

    @property
    def broken(self) -> bool:
        tr = self.holder["trainer"]
        lr = tr.policies[0].optimizer.param_groups[0]["lr"]
        return tr.step >= self.at - 1 and lr > self.safe_lr

    def reply(self, prompt: list[int]) -> str:
        text = self.tokenizer.decode(prompt)
        role = "mta" if text.startswith("<|im_start|>system\nplan") else "ra"
        healthy, broken = FAILURES[self.failure][role]
        if self.failure == "turns" and role == "mta" and text.count("Next.") >= 2:
            return f"Done. {FINISH_MARKER}"  # healthy: the third message closes
        return broken if self.broken else healthy

    def generate(self, prompts, params):
        out = []
        for prompt, p in zip(prompts, params):
            text = self.reply(prompt)
            cut = text.startswith("LENGTH:")
            ids = self.tokenizer(text.removeprefix("LENGTH:"), add_special_tokens=False)["input_ids"]
            ids = ids[: p.max_tokens] if cut else ids[: p.max_tokens - 1] + [self.tokenizer.eos_token_id]
            out.append(
                Completion(
                    ids, [-0.5] * len(ids), "length" if cut else "stop", None if cut else self.tokenizer.eos_token_id
                )
            )
        return out
