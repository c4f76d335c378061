"""Attention over rows packed around a shared prefix, computed per segment.

A pack (``rema.train.batch.pack_units``) is [prefix, remainder 1, ..., remainder k, padding]: a remainder
sees the prefix and itself, causally. Under a dense (L × L) mask, sdpa computes every query against every
key of the pack, most of it masked away (with G = 4 remainders of ~100 tokens after a 43-token prompt, a
fifth of the square is attended). :func:`packed_attention` computes the prefix causally and each remainder
against [prefix keys, its own keys] under a small (r × (p + r)) mask: the attention work of the unpacked rows
less the prefix's repeats, whatever the pack's size; so the planner may pack a whole group
(``linear_per_attention = inf`` in ``plan_micro_batches``).

It is a transformers attention implementation (registered as ``rema_packed``): the trainer switches a model
to it with :func:`use_packed_attention`, and ``token_logprobs`` passes the layout as ``rema_segments``
through the model's forward to every layer (gradient checkpointing recomputes with the same arguments).
Without ``rema_segments`` it is transformers' sdpa, so generation, evaluation and export see no change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "rema_packed"

CPU_FP32_MAX_SCORES = 1 << 19
"""On CPU, a segment that would compute in bf16/fp16 (its inputs' dtype, or autocast's) computes in fp32 when its
score matrix (queries × keys) has at most this many entries: sdpa's CPU flash kernel runs small bf16 problems
slower than fp32 ones. Measured on 2 cores with AVX-512 BF16, 9 heads of 64, forward + backward, bf16 → fp32:
150 queries × 193 keys 3.5 → 2.2 ms, 300 × 400 9.1 → 7.4 ms, 600 × 700 29.4 → 26.0 ms, 800 × 900 even (42.0
/ 43.9 ms), 1200 × 1400 85.7 → 100.1 ms (bf16 ahead). The result is the fp32 attention rounded once."""

Segments = tuple[tuple[int, tuple[int, ...]], ...]
"""Per packed sequence: (prefix length, (remainder lengths...)); a lone row is (its length, ())."""


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    rema_segments: Segments | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention of packed rows, segment by segment.

    Args:
        query: (S, H, L, D); key, value: (S, H_kv, L, D) (grouped-query heads repeated here).
        attention_mask: the pack's dense mask; used only without ``rema_segments`` (plain sdpa).
        rema_segments: the layout of each of the S sequences (see :data:`Segments`); positions past a
            sequence's last remainder (padding) get zeros.
    Returns:
        ``(S, L, H, D)`` attention output (transformers' layout) and None (no weights).
    """
    if rema_segments is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    cpu = query.device.type == "cpu"
    # the dtype sdpa computes in: autocast's (on CPU it casts sdpa's inputs) or the inputs' own
    compute = torch.get_autocast_dtype("cpu") if cpu and torch.is_autocast_enabled("cpu") else query.dtype

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw) -> torch.Tensor:
        if cpu and compute in (torch.bfloat16, torch.float16) and q.shape[2] * k.shape[2] <= CPU_FP32_MAX_SCORES:
            with torch.autocast("cpu", enabled=False):
                return F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), dropout_p=dropout, scale=scaling, **kw
                ).to(compute)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling, **kw)

    width = query.shape[2]
    masks: dict[tuple[int, int], torch.Tensor] = {}
    outputs = []
    for s, (p, rests) in enumerate(rema_segments):
        sizes = [p, *rests]
        pad = width - sum(sizes)
        if pad < 0:
            raise ValueError(f"rema_segments: sequence {s} holds {sum(sizes)} tokens, wider than the batch ({width})")
        split = sizes + [pad] * bool(pad)  # (1, H, n, D) pieces: 4D inputs take sdpa's flash kernel on CPU
        qs, ks, vs = (t[s : s + 1].split(split, dim=2) for t in (query, key, value))
        pieces = []
        if p:
            pieces.append(attend(qs[0], ks[0], vs[0], is_causal=True))
        for j, r in enumerate(rests, start=1):
            if not r:  # a row that is all prefix
                continue
            if (p, r) not in masks:  # query i sees every prefix key and its own keys up to itself
                masks[p, r] = torch.ones(r, p + r, dtype=torch.bool, device=query.device).tril(diagonal=p)
            pieces.append(
                attend(qs[j], torch.cat([ks[0], ks[j]], dim=2), torch.cat([vs[0], vs[j]], dim=2), attn_mask=masks[p, r])
            )
        if pad:
            pieces.append(query.new_zeros(1, query.shape[1], pad, query.shape[3], dtype=compute))
        outputs.append(torch.cat(pieces, dim=2))
    return torch.cat(outputs).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, packed_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # 2D padding masks (generation) become sdpa's masks


def use_packed_attention(model) -> bool:
    """Switch ``model`` (peft-wrapped or not) from ``sdpa`` to :func:`packed_attention`; returns whether it did
    (other implementations are left alone)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) != "sdpa":
        return False
    base.set_attn_implementation(NAME)
    return True
