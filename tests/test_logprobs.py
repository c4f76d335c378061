"""Chunked, position-selective log-probs equal a plain forward pass, with gradients."""

from __future__ import annotations

import torch

from rema.train.logprobs import token_logprobs


def test_matches_a_full_forward_and_scores_only_requested_positions(tiny):
    model, _ = tiny
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 250, (3, 20), generator=g)
    attn = torch.ones_like(ids)
    attn[2, 15:] = 0  # a right-padded row
    with torch.no_grad():
        ref = torch.log_softmax(model(ids, attention_mask=attn).logits[:, :-1].float(), -1)
    ref = ref.gather(-1, ids[:, 1:, None]).squeeze(-1)
    logp, ent = token_logprobs(model, ids, attn, chunk_tokens=7, with_entropy=True)
    assert torch.allclose(logp[:, 1:][attn[:, 1:].bool()], ref[attn[:, 1:].bool()], atol=1e-5)
    assert (logp[:, 0] == 0).all() and (logp[2, 15:] == 0).all() and (ent > 0).sum() == int(attn[:, 1:].sum())
    positions = torch.zeros_like(ids)
    positions[0, 5:9] = 1
    part, _ = token_logprobs(model, ids, attn, positions=positions)
    assert torch.allclose(part[0, 5:9], logp[0, 5:9], atol=1e-6) and int((part != 0).sum()) == 4


def test_temperature_and_gradients(tiny):
    model, _ = tiny
    ids = torch.randint(0, 250, (2, 12), generator=torch.Generator().manual_seed(1))
    attn = torch.ones_like(ids)
    with torch.no_grad():
        ref = torch.log_softmax(model(ids).logits[:, :-1].float() / 0.7, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    logp, _ = token_logprobs(model, ids, attn, temperature=0.7, chunk_tokens=5)
    assert torch.allclose(logp[:, 1:], ref, atol=1e-5)
    logp.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
