"""Replaying a written dialogue through the rollout protocol, to get the training rows SFT needs.

SFT and RL must see the same token layout (the authors' SFT and RL prompts differ, docs/design.md §9). Rather
than re-implement how the MTA's and RA's chats are assembled, :func:`replay` runs the real protocol
(:func:`rema.rollout.rollout`) with a :class:`ReplayEngine` per role that "samples" the dialogue's messages
in order. The resulting episode's views are exactly what an RL rollout producing those messages would train
on: the same system prompts, the same first message (question + instruction), the same [FINISH] handling.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from ..config import RolloutConfig
from ..prompts import PromptSet
from .chat import ChatCodec
from .engine import Completion, Engine, SamplingParams, stop_token_ids
from .episode import Episode
from .protocol import rollout


def end_of_turn_id(tokenizer) -> int | None:
    """The id that ends an assistant message in this tokenizer's chat template (``<|im_end|>`` for ChatML),
    falling back to the EOS id."""
    eos = stop_token_ids(tokenizer)
    close = ChatCodec(tokenizer).assistant_close
    ids = tokenizer(close, add_special_tokens=False)["input_ids"] if close else []
    if ids and ids[0] in eos:
        return ids[0]
    return tokenizer.eos_token_id


class ReplayEngine(Engine):
    """Returns the given messages, one per request, in order: ids = the text's tokens + the end-of-turn id,
    log-probs 0, finish reason ``stop``."""

    def __init__(self, tokenizer, texts: list[str]):
        self.tokenizer = tokenizer
        self.pending = list(texts)
        self.end_id = end_of_turn_id(tokenizer)

    def generate(self, prompts: list[list[int]], params: list[SamplingParams]) -> list[Completion]:
        if len(prompts) > len(self.pending):
            raise RuntimeError("replay: the protocol asked for more messages than the dialogue has")
        outs = []
        for _ in prompts:
            ids = self.tokenizer(self.pending.pop(0), add_special_tokens=False)["input_ids"]
            if self.end_id is not None:
                ids = ids + [self.end_id]
            outs.append(Completion(ids, [0.0] * len(ids), "stop", self.end_id))
        return outs


def replay(dialogue, cfg: RolloutConfig, prompts: PromptSet, tokenizer) -> Episode:
    """The episode (with training views) of ``dialogue`` played under ``cfg``'s protocol and ``prompts``.

    ``dialogue`` has ``question``, ``answer``, ``turns`` (``(agent, text)`` pairs) and optionally ``id`` and
    ``meta``. Raises ValueError when the protocol would not play every message (e.g. [FINISH] too early).
    """
    texts = {a: [t for agent, t in dialogue.turns if agent == a] for a in ("mta", "ra")}
    engines = {a: ReplayEngine(tokenizer, texts[a]) for a in ("mta", "ra")}
    longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for _, t in dialogue.turns) + 2
    rounds = max(1, len(texts["ra"]))
    rcfg = dataclasses.replace(cfg, max_turns=rounds, max_tokens_per_turn=longest, max_context_tokens=10**9,
                               stop_on_truncation=False, samples_per_question=1)
    problem = SimpleNamespace(id=str(getattr(dialogue, "id", "") or "dialogue"), question=dialogue.question,
                              answer=dialogue.answer, meta=dict(getattr(dialogue, "meta", None) or {}))
    [ep] = rollout([problem], rcfg, engines, prompts, samples_per_question=1)
    left = {a: len(e.pending) for a, e in engines.items() if e.pending}
    if left:
        raise ValueError(f"dialogue {problem.id}: the {prompts.name} protocol ended ({ep.end_code}) with messages "
                         f"left unplayed {left}")
    ep.reward = {a: 0.0 for a in ep.views}
    return ep

