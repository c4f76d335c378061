"""From episodes to training tensors: one row per (episode, agent), padded, split into micro-batches.

A row is one agent's whole chat view (``AgentView``): the ids it was conditioned on and the ids it sampled,
exactly as sampled. Tensors keep the *original positions*: ``logp[:, i]`` is the log-prob of
``input_ids[:, i]`` given ``input_ids[:, :i]`` (0 at i = 0, where ``mask`` is always 0 because the first
token is never sampled). So ``mask``, ``turn_ids``, ``sampler_logp`` and advantages index the same columns.

Micro-batches group rows of similar length (sorted, then packed greedily under a token budget counted
with padding) so the update spends few FLOPs on padding.

Rows of one GRPO group start with the same tokens (the system prompt and the question, G times over). With
``share_prefix`` such rows form one *pack*: the common prefix once, then each row's remainder, under a mask
that lets a remainder see the prefix and itself only, with each remainder's positions continuing from the
prefix (:func:`pack_units`). Every token then has the same context as in its own row, so log-probs and
gradients are those of the unpacked rows (the prefix's hidden states collect the gradient of every row that
reads them); the prefix is computed once instead of G times, and a pack's rows carry no padding between
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..rollout.episode import Episode
from .packed_attention import NAME as PACKED_ATTENTION


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
        out[i, : len(s)] = torch.tensor(s, dtype=dtype)
    return out


def collate(
    rows: Rows, index: list[int], pad_id: int, units: list[list[int]] | None = None, attn_impl: str = "sdpa"
) -> dict[str, torch.Tensor]:
    """Tensors of the rows in ``index``: input_ids, attention_mask, mask, turn_ids, sampler_logp (B, T).

    With ``units`` (a partition of ``index`` into rows that share a prefix, as from :func:`plan_micro_batches`;
    ``index`` must list their rows in order) and at least one unit of several rows, the batch also holds the
    packed forward's tensors under ``"pack"`` (see :func:`pack_units`); the (B, T) tensors stay as they are.
    """
    pick = lambda xs: [xs[i] for i in index]  # noqa: E731
    ids = pick(rows.input_ids)
    out = {
        "input_ids": pad(ids, pad_id, torch.long),
        "attention_mask": pad([[1] * len(x) for x in ids], 0, torch.long),
        "mask": pad(pick(rows.mask), 0, torch.float32),
        "turn_ids": pad(pick(rows.turn_ids), -1, torch.long),
        "sampler_logp": pad(pick(rows.sampler_logp), 0.0, torch.float32),
    }
    if units is not None and any(len(u) > 1 for u in units):
        if [i for u in units for i in u] != list(index):
            raise ValueError("collate: index must list the units' rows in order")
        where = {i: k for k, i in enumerate(index)}
        out["pack"] = pack_units(ids, [[where[i] for i in u] for u in units], pad_id, attn_impl=attn_impl)
    return out


def common_prefix(seqs: list[list[int]]) -> int:
    """Length of the longest prefix all of ``seqs`` share."""
    first, n = seqs[0], min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return n


def pack_units(
    ids: list[list[int]], units: list[list[int]], pad_id: int, attn_impl: str = "sdpa"
) -> dict[str, torch.Tensor]:
    """The packed forward of rows ``ids`` (B rows), one sequence per unit: [common prefix, remainder of each row].

    Args:
        ids: the B rows' token ids.
        units: a partition of ``range(B)``; the rows of a unit share the prefix that is packed once.
        attn_impl: the model's attention implementation: ``sdpa`` takes a boolean mask (True = attend),
            ``eager`` an additive float one (0 or the dtype's minimum).
    Returns:
        ``input_ids`` (S, L) right-padded; ``position_ids`` (S, L): each token's position in its own row;
        ``attention_mask`` (S, 1, L, L): a prefix token sees the prefix causally, a remainder token the
        prefix and its own remainder causally (a padding slot sees the prefix and the padding up to itself, which
        keeps softmax rows finite); ``index`` (B, T_max) long: where token (b, t) sits in the flattened
        (S·L) packed sequence, -1 past the row's end; ``segments``: per sequence (prefix length, (remainder
        lengths...)), the layout ``rema.train.packed_attention`` computes attention by (a tuple, not a tensor).
    """
    seqs, places, segments = [], [None] * len(ids), []
    for unit in units:
        p = common_prefix([ids[b] for b in unit]) if len(unit) > 1 else len(ids[unit[0]])
        tokens, pos, seg, rests = list(ids[unit[0]][:p]), list(range(p)), [0] * p, []
        for k, b in enumerate(unit, start=1):
            rest = len(ids[b]) - p
            rests.append(rest)
            places[b] = (len(seqs), list(range(p)) + list(range(len(tokens), len(tokens) + rest)))
            tokens += ids[b][p:]
            pos += range(p, len(ids[b]))
            seg += [k] * rest
        seqs.append((tokens, pos, seg))
        segments.append((p, tuple(rests) if len(unit) > 1 else ()))
    width = max(len(t) for t, _, _ in seqs)
    input_ids = pad([t for t, _, _ in seqs], pad_id, torch.long, width)
    position_ids = pad([p for _, p, _ in seqs], 0, torch.long, width)
    seg = pad([s for _, _, s in seqs], -1, torch.long, width)  # (S, L): 0 prefix, k the unit's k-th row, -1 pad
    q, k = seg[:, :, None], seg[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & ((k == 0) | (k == q))  # (S, L, L)
    if attn_impl == "eager":
        mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    elif attn_impl in ("sdpa", PACKED_ATTENTION):  # the latter reads the mask only without a layout
        mask = allowed
    else:
        raise ValueError(
            f"pack_units: attention implementation {attn_impl!r} takes no custom mask; set train.share_prefix=false"
        )
    index = torch.full((len(ids), max(len(x) for x in ids)), -1, dtype=torch.long)
    for b, (s, place) in enumerate(places):
        index[b, : len(place)] = torch.tensor(place, dtype=torch.long) + s * width
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": mask[:, None],
        "index": index,
        "segments": tuple(segments),
    }


def plan_micro_batches(
    rows: Rows,
    index: list[int],
    token_budget: int,
    *,
    share_prefix: bool,
    linear_per_attention: float = 3000.0,
    min_shared: int = 16,
) -> list[list[list[int]]]:
    """Micro-batches of ``index``'s rows, each a list of units (lists of row indices) to pass to :func:`collate`.

    With ``share_prefix``, the rows of one GRPO group whose common prefix has at least ``min_shared`` tokens
    form packs (units); every other row is a unit of its own. Units are then split like rows in
    :func:`micro_batches`, by their packed length.

    A pack grows while it pays. Its attention runs over the whole pack under a mask, so with a forward costing
    ``L·c_lin + L²·c_att`` for a sequence of L tokens (``linear_per_attention`` = c_lin / c_att, per layer:
    2·(weights per layer) over 4·(attention width); ~3000 for SmolLM2-135M, see
    ``rema.models.linear_per_attention``), adding a row of r tokens after the p-token prefix to a pack of L
    tokens saves work iff ``2·r·(L - p) < p·(c_lin/c_att + p)``. A pack also stays within ``token_budget``.
    """
    units: list[list[int]] = []
    if share_prefix:
        by_group: dict[tuple[str, str], list[int]] = {}
        for i in index:
            by_group.setdefault(rows.group[i], []).append(i)
        for members in by_group.values():
            members = sorted(members, key=lambda i: -len(rows.input_ids[i]))
            p = common_prefix([rows.input_ids[i] for i in members]) if len(members) > 1 else 0
            if p < min_shared:
                units += [[i] for i in members]
                continue
            current, size = [], p
            for i in members:
                rest = len(rows.input_ids[i]) - p
                if current and (size + rest > token_budget or 2 * rest * (size - p) >= p * (linear_per_attention + p)):
                    units.append(current)
                    current, size = [], p
                current.append(i)
                size += rest
            units.append(current)
    else:
        units = [[i] for i in index]

    def packed(unit: list[int]) -> int:
        if len(unit) == 1:
            return len(rows.input_ids[unit[0]])
        p = common_prefix([rows.input_ids[i] for i in unit])
        return p + sum(len(rows.input_ids[i]) - p for i in unit)

    return [[units[j] for j in micro] for micro in micro_batches([packed(u) for u in units], token_budget)]


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
