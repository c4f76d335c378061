"""From episodes to training tensors: one row per (episode, agent), padded, split into micro-batches.

A row is one agent's whole chat view (``AgentView``): the ids it was conditioned on and the ids it sampled,
exactly as sampled. Tensors keep the *original positions*: ``logp[:, i]`` is the log-prob of
``input_ids[:, i]`` given ``input_ids[:, :i]`` (0 at i = 0, where ``mask`` is always 0 because the first
token is never sampled). So ``mask``, ``turn_ids``, ``sampler_logp`` and advantages index the same columns.

Micro-batches group rows of similar length (sorted, then packed greedily under a token budget counted
with padding) so the update spends few FLOPs on padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..rollout.episode import Episode


@dataclass
class Rows:
    """The step's training rows (Python lists; tensors are built per micro-batch)."""

    input_ids: list[list[int]]
    mask: list[list[int]]
    sampler_logp: list[list[float]]
    turn_ids: list[list[int]]
    agent: list[str]
    group: list[tuple[str, str]]
    """(problem id, agent): GRPO groups are formed per question *and* agent."""
    reward: list[float]
    episode_index: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def build_rows(episodes: list[Episode], agents: tuple[str, ...]) -> Rows:
    """Rows for ``agents`` of every episode, skipping views with no sampled token."""
    rows = Rows([], [], [], [], [], [], [], [])
    for i, ep in enumerate(episodes):
        for agent in agents:
            view = ep.views.get(agent)
            if view is None or view.n_trained == 0:
                continue
            rows.input_ids.append(view.input_ids)
            rows.mask.append(view.mask)
            rows.sampler_logp.append(view.logprobs)
            rows.turn_ids.append(view.turn_ids)
            rows.agent.append(agent)
            rows.group.append((ep.problem_id, agent))
            rows.reward.append(ep.reward[agent])
            rows.episode_index.append(i)
    return rows


def pad(seqs: list[list], value, dtype: torch.dtype, width: int | None = None) -> torch.Tensor:
    """Right-pad lists to ``(len(seqs), width)``."""
    width = width or max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=dtype)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=dtype)
    return out


def collate(rows: Rows, index: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Tensors of the rows in ``index``: input_ids, attention_mask, mask, turn_ids, sampler_logp (B, T)."""
    pick = lambda xs: [xs[i] for i in index]  # noqa: E731
    ids = pick(rows.input_ids)
    return {
        "input_ids": pad(ids, pad_id, torch.long),
        "attention_mask": pad([[1] * len(x) for x in ids], 0, torch.long),
        "mask": pad(pick(rows.mask), 0, torch.float32),
        "turn_ids": pad(pick(rows.turn_ids), -1, torch.long),
        "sampler_logp": pad(pick(rows.sampler_logp), 0.0, torch.float32),
    }


def group_ids(rows: Rows) -> torch.Tensor:
    """(N,) long ids, equal for rows of the same (question, agent) group."""
    seen: dict[tuple[str, str], int] = {}
    return torch.tensor([seen.setdefault(g, len(seen)) for g in rows.group], dtype=torch.long)


def micro_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Split row indices into micro-batches of similar length whose padded size fits ``token_budget``.

    Rows are sorted by length (longest first) and packed greedily; a row longer than the budget gets a
    micro-batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]  # first row is the longest
        if current and width * (len(current) + 1) > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def count_units(mask: torch.Tensor, turn_ids: torch.Tensor, agg: str) -> int:
    """How many units ``agg`` averages over: trained tokens, (row, turn) pairs, or rows with a turn.

    Micro-batch losses are weighted by ``units / total_units`` so the accumulated gradient equals the
    gradient of the loss aggregated over the whole mini-batch.
    """
    m = mask.bool()
    if agg == "token":
        return int(m.sum())
    if agg == "trajectory":
        return int(m.any(dim=1).sum())
    rows = torch.arange(mask.shape[0])[:, None].expand_as(mask)[m]
    turns = turn_ids[m]
    return int(torch.unique(rows * (int(turn_ids.max()) + 1) + turns).numel()) if rows.numel() else 0
