"""The transformers engine: batching is invisible, log-probs are the model's, limits and stops per row."""

from __future__ import annotations

import torch

from rema.rollout import HFEngine, SamplingParams


def _prompts(tok):
    texts = ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "a much longer prompt, padded less"]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_batched_greedy_equals_one_at_a_time(tiny):
    model, tok = tiny
    eng = HFEngine(model, tok)
    prompts = _prompts(tok)
    greedy = [SamplingParams(max_tokens=10, temperature=0.0)] * 2
    together = eng.generate(prompts, greedy)
    alone = [eng.generate([p], greedy[:1])[0] for p in prompts]
    for a, b in zip(together, alone):
        assert a.token_ids == b.token_ids
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)


def test_logprobs_match_a_fresh_forward_pass(tiny):
    """The sampler's log-prob of each token equals log_softmax(logits / T) of a full forward pass."""
    model, tok = tiny
    eng = HFEngine(model, tok, seed=1)
    prompts = _prompts(tok)
    for temp in (1.0, 0.7):
        outs = eng.generate(prompts, [SamplingParams(max_tokens=8, temperature=temp)] * 2)
        for prompt, out in zip(prompts, outs):
            ids = torch.tensor([prompt + out.token_ids])
            with torch.no_grad():
                logits = model(ids).logits[0, len(prompt) - 1 : -1] / temp
            ref = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
            assert torch.allclose(ref, torch.tensor(out.logprobs), atol=1e-4)


def test_per_row_limits_and_stop_strings(tiny):
    model, tok = tiny
    eng = HFEngine(model, tok, seed=0)
    prompts = _prompts(tok)
    outs = eng.generate(prompts, [SamplingParams(max_tokens=3, temperature=1.0), SamplingParams(max_tokens=9)])
    assert len(outs[0].token_ids) <= 3 and len(outs[1].token_ids) <= 9
    for out, limit in zip(outs, (3, 9)):
        assert out.finish_reason == ("length" if len(out.token_ids) == limit and out.stop_reason is None else "stop")
    # a stop string made of every byte stops after the first token
    every = tuple(chr(c) for c in range(32, 127))
    out = eng.generate(prompts[:1], [SamplingParams(max_tokens=20, temperature=0.0, stop=every)])[0]
    text = tok.decode(out.token_ids)
    if any(s in text for s in every):
        assert out.finish_reason == "stop" and out.stop_reason in every
    assert eng.generate(prompts[:1], [SamplingParams(max_tokens=0)])[0].token_ids == []


def test_sampling_is_reproducible_from_the_engine_state(tiny):
    model, tok = tiny
    eng = HFEngine(model, tok, seed=5)
    prompts = _prompts(tok)
    params = [SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9)] * 2
    state = eng.state_dict()
    first = [o.token_ids for o in eng.generate(prompts, params)]
    eng.load_state_dict(state)
    assert [o.token_ids for o in eng.generate(prompts, params)] == first
    assert [o.token_ids for o in HFEngine(model, tok, seed=5).generate(prompts, params)] == first


def test_top_p_keeps_only_the_nucleus():
    from rema.rollout.hf_engine import sample_from_logits

    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]).repeat(200, 1))
    g = torch.Generator().manual_seed(0)
    toks, logp = sample_from_logits(logits, torch.ones(200), torch.full((200,), 0.5), g)
    assert set(toks.tolist()) == {0}  # 0.6 alone reaches 0.5
    toks, _ = sample_from_logits(logits, torch.ones(200), torch.full((200,), 0.8), g)
    assert set(toks.tolist()) <= {0, 1}
    assert torch.allclose(logp, torch.log(torch.tensor(0.6)).expand(200), atol=1e-6)


def test_inverse_cdf_sampling_draws_the_softmax_distribution():
    """One uniform per row from the CPU generator, the token by inverse CDF: frequencies follow the
    temperature's softmax, a zero-probability token is never drawn, T = 0 rows take the argmax."""
    from rema.rollout.hf_engine import sample_from_logits

    p = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    rows = 20000
    logits = torch.log(p).repeat(rows, 1)  # log 0 = -inf
    g = torch.Generator().manual_seed(0)
    toks, logp = sample_from_logits(logits, torch.ones(rows), torch.ones(rows), g)
    freq = torch.bincount(toks, minlength=5).float() / rows
    assert torch.allclose(freq, p, atol=0.01) and freq[4] == 0  # binomial sd <= 0.0036
    assert torch.allclose(logp, torch.log(p)[toks])
    # T = 2: probabilities ~ p^(1/2), renormalised
    toks, _ = sample_from_logits(logits, torch.full((rows,), 2.0), torch.ones(rows), g)
    freq = torch.bincount(toks, minlength=5).float() / rows
    assert torch.allclose(freq, p.sqrt() / p.sqrt().sum(), atol=0.01)
    temp = torch.tensor([0.0, 1.0]).repeat(rows // 2)
    toks, logp = sample_from_logits(logits, temp, torch.ones(rows), g)
    assert (toks[0::2] == 0).all() and torch.allclose(logp[0::2], torch.log(p[0]).expand(rows // 2))
    # one uniform per row: the same generator state gives the same draws
    state = g.get_state()
    first = sample_from_logits(logits[:64], torch.ones(64), torch.full((64,), 0.9), g)[0]
    g.set_state(state)
    assert torch.equal(sample_from_logits(logits[:64], torch.ones(64), torch.full((64,), 0.9), g)[0], first)


def test_cpu_list_is_vllms_thread_bind_form():
    from rema.config import load_config
    from rema.rollout.factory import engine_options
    from rema.rollout.vllm_worker import cpu_list

    assert cpu_list([0, 1]) == "0-1"
    assert cpu_list([0, 1, 2, 5, 6, 9]) == "0-2,5-6,9"
    assert cpu_list([3]) == "3"
    assert engine_options(load_config(None, []).rollout)["cpu_threads_bind"] == "all"
    assert engine_options(load_config(None, ["rollout.vllm_cpu_threads_bind="]).rollout)["cpu_threads_bind"] is None


def test_release_memory_once_per_distinct_engine():
    """Shared weights put one engine under both roles: it is asked once; metrics of distinct engines add up."""
    from rema.rollout.engine import Engine, release_memory

    class Counting(Engine):
        def __init__(self, gb):
            self.calls, self.gb = 0, gb

        def generate(self, prompts, params):
            return []

        def release_memory(self):
            self.calls += 1
            return {"kv_released_gb": self.gb}

    shared, other = Counting(0.5), Counting(0.25)
    assert release_memory({"mta": shared, "ra": shared}) == {"kv_released_gb": 0.5} and shared.calls == 1
    assert release_memory({"mta": shared, "ra": other}) == {"kv_released_gb": 0.75}
    assert release_memory([]) == {}
