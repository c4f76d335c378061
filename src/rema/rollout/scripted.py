"""Replaying a written dialogue through the rollout protocol, to get the training rows SFT needs.

SFT and RL must see the same token layout (the reference code's SFT and RL prompts differ). Rather than
re-implement how the MTA's and RA's chats are assembled, :func:`replay` runs the real protocol
(:func:`rema.rollout.rollout`) with a :class:`ReplayEngine` per role that "samples" the dialogue's messages
in order. The resulting episode's views are exactly what an RL rollout producing those messages would train
on: the same system prompts, the same first message (question + instruction), the same [FINISH] handling.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from ..config import RolloutConfig
from ..data.dialogues import DialogueError
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


def over_limits(ep: Episode, cfg: RolloutConfig) -> str | None:
    """Why RL under ``cfg`` could not produce the replayed episode ``ep`` (None when it could): a message longer
    than ``max_tokens_per_turn`` (the sampler would cut it there), or a turn whose context plus
    ``max_tokens_per_turn`` passes ``max_context_tokens`` (the episode would end ``context_exceeded`` before it).
    Rounds over ``max_turns`` are refused when a dialogue file is read (``rema.data.dialogues.check_dialogue``)."""
    for t in ep.turns:
        if len(t.token_ids) > cfg.max_tokens_per_turn:
            return (f"its {t.agent} message of round {t.index + 1} takes {len(t.token_ids)} tokens, over "
                    f"rollout.max_tokens_per_turn={cfg.max_tokens_per_turn}")
        if t.context_len + cfg.max_tokens_per_turn > cfg.max_context_tokens:
            return (f"its {t.agent} message of round {t.index + 1} starts at {t.context_len} tokens of context, and "
                    f"{t.context_len} + rollout.max_tokens_per_turn={cfg.max_tokens_per_turn} is over "
                    f"rollout.max_context_tokens={cfg.max_context_tokens}")
    return None


def _cut(dialogue, tokenizer, max_tokens: int):
    """``dialogue`` with every message cut to ``max_tokens - 1`` tokens (its end-of-turn token is the last one
    RL's limit allows), and how many messages were cut."""
    turns, cut = [], 0
    for agent, text in dialogue.turns:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > max_tokens - 1:
            text, cut = tokenizer.decode(ids[:max_tokens - 1], skip_special_tokens=True), cut + 1
        turns.append((agent, text))
    return dataclasses.replace(dialogue, turns=turns), cut


def fit_dialogues(dialogues, cfg: RolloutConfig, prompts: PromptSet, tokenizer, *, over_limit: str = "refuse",
                  source: str = "") -> tuple[list, dict[str, float]]:
    """The cold-start dialogues that RL under ``cfg`` could reproduce (:func:`over_limits` on their replay).

    ``over_limit="refuse"``: the first one that RL could not reproduce raises :class:`DialogueError` naming it (``source``:
    where the dialogues came from) and what to change. ``"truncate"``: messages over ``max_tokens_per_turn`` are cut
    to it, as the sampler would cut them, and dialogues whose context still does not fit are left out. Returns
    ``(dialogues, {"truncated_messages": n, "dropped_dialogues": m})``."""
    kept, truncated, dropped = [], 0, 0
    for d in dialogues:
        why = over_limits(replay(d, cfg, prompts, tokenizer), cfg)
        if why and over_limit == "refuse":
            where = f"{source}: " if source else ""
            raise DialogueError(f"{where}dialogue {d.id or '?'}: {why}; RL could not reproduce it: shorten it, raise the "
                             "limit, or set sft.over_limit=truncate (cuts long messages, leaves out what still does "
                             "not fit)")
        if why:
            d, n = _cut(d, tokenizer, cfg.max_tokens_per_turn)
            truncated += n
            if over_limits(replay(d, cfg, prompts, tokenizer), cfg):
                dropped += 1
                continue
        kept.append(d)
    return kept, {"truncated_messages": float(truncated), "dropped_dialogues": float(dropped)}
