"""Chunked, position-selective log-probs (and the entropy) equal a plain forward pass, with gradients."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
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


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("bf16", [False, True])
def test_frozen_head_function_matches_autograd(tiny, bf16, keep):
    """With a frozen head the chunk is one hand-written autograd function: the same log-probs, entropy and
    gradients as autograd through the checkpointed chunk (which an entropy bonus still uses), whether its
    backward recomputes the logits or uses the softmax kept from the forward (``keep_probs``: in bf16 the
    kept softmax is rounded once more, the gradients agree to bf16's precision)."""
    model, _ = tiny
    head = model.get_output_embeddings()
    ids = torch.randint(0, 250, (3, 16), generator=torch.Generator().manual_seed(2))
    attn = torch.ones_like(ids)
    attn[1, 11:] = 0
    positions = torch.zeros_like(ids)
    positions[:, 6:] = 1
    adv = torch.randn(3, 16, generator=torch.Generator().manual_seed(3))
    head.weight.requires_grad_(False)
    try:
        out = {}
        for entropy_grad in (True, False):  # True = the autograd path
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logp, ent = token_logprobs(
                    model,
                    ids,
                    attn,
                    positions=positions,
                    temperature=0.7,
                    chunk_tokens=5,
                    with_entropy=True,
                    entropy_grad=entropy_grad,
                    keep_probs=keep,
                )
            (logp * adv).sum().backward()
            out[entropy_grad] = (
                logp.detach(),
                ent.detach(),
                [p.grad.clone() for p in model.parameters() if p.requires_grad],
            )
            model.zero_grad(set_to_none=True)
    finally:
        head.weight.requires_grad_(True)
    (lp_a, ent_a, g_a), (lp_f, ent_f, g_f) = out[True], out[False]
    assert torch.equal(lp_a, lp_f) and torch.allclose(ent_a, ent_f, atol=1e-6)
    rtol = 1e-2 if keep and bf16 else 1e-4
    for a, b in zip(g_a, g_f):
        assert torch.allclose(a, b, atol=1e-6 + rtol * float(a.abs().max()), rtol=rtol)
    assert sum(float(g.abs().sum()) for g in g_f) > 0


class _Backbone(torch.nn.Module):
    """A backbone whose output is a parameter: the hidden states are chosen by the test."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = torch.nn.Parameter(hidden)

    def forward(self, input_ids, attention_mask, use_cache=False):
        return SimpleNamespace(last_hidden_state=self.hidden)


class _HandLM(torch.nn.Module):
    """hidden (B, T, H) and head weight (V, H) given: logits = hidden @ weight.T, known by hand."""

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor):
        super().__init__()
        self.model = _Backbone(hidden)
        self.head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.head.weight.data.copy_(weight)

    def get_decoder(self):
        return self.model

    def get_output_embeddings(self):
        return self.head


def _entropy_paths(model, ids, positions=None, temperature=1.0):
    """(B, T) entropy from every path of ``token_logprobs``: autograd (entropy_grad, the entropy bonus), and the
    frozen head's function recomputing or keeping the softmax (entropy reported only)."""
    out = {
        "autograd": token_logprobs(
            model,
            ids,
            torch.ones_like(ids),
            positions=positions,
            temperature=temperature,
            chunk_tokens=2,
            with_entropy=True,
            entropy_grad=True,
        )[1]
    }
    model.head.weight.requires_grad_(False)
    try:
        for keep in (False, True):
            out[f"fused/keep={keep}"] = token_logprobs(
                model,
                ids,
                torch.ones_like(ids),
                positions=positions,
                temperature=temperature,
                chunk_tokens=2,
                with_entropy=True,
                keep_probs=keep,
            )[1]
    finally:
        model.head.weight.requires_grad_(True)
    return out


def test_entropy_hand_values_on_every_path():
    """logits = (a, b, 0) at hidden (a, b): (0, 0) -> uniform over 3, ln 3; (ln 2, 0) -> p = (1/2, 1/4, 1/4),
    H = 1.5 ln 2; (ln 3, ln 3) -> p = (3/7, 3/7, 1/7), H = ln 7 - (6/7) ln 3. Column i is scored from
    hidden[i - 1], so column 0 is 0. At temperature 0.5 the second becomes logits (ln 4, 0, 0): p = (2/3, 1/6,
    1/6), H = ln 6 - (4/3) ln 2."""
    ln = math.log
    hidden = torch.tensor([[[0.0, 0.0], [ln(2), 0.0], [ln(3), ln(3)], [5.0, 5.0]]])
    model = _HandLM(hidden, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    ids = torch.tensor([[0, 0, 1, 2]])
    want = torch.tensor([[0.0, ln(3), 1.5 * ln(2), ln(7) - 6 / 7 * ln(3)]])
    for path, entropy in _entropy_paths(model, ids).items():
        assert torch.allclose(entropy, want, atol=1e-6, rtol=0), path
    hot = _entropy_paths(model, ids, positions=torch.tensor([[0, 0, 1, 0]]), temperature=0.5)
    for path, entropy in hot.items():
        assert torch.allclose(entropy, torch.tensor([[0.0, 0.0, ln(6) - 4 / 3 * ln(2), 0.0]]), atol=1e-6, rtol=0), path


def test_entropy_gradient_hand_values():
    """dH/dz_j = -p_j (ln p_j + H). At hidden (ln 2, 0): p = (1/2, 1/4, 1/4), H = 1.5 ln 2, so dH/dz =
    (-ln 2 / 4, ln 2 / 8, ln 2 / 8) and dH/dhidden = weight.T @ dH/dz = (-ln 2 / 4, ln 2 / 8)."""
    ln2 = math.log(2)
    model = _HandLM(torch.tensor([[[ln2, 0.0], [0.0, 0.0]]]), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    _, entropy = token_logprobs(
        model, torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.long), with_entropy=True, entropy_grad=True
    )
    entropy.sum().backward()
    assert torch.allclose(model.model.hidden.grad, torch.tensor([[[-ln2 / 4, ln2 / 8], [0.0, 0.0]]]), atol=1e-6, rtol=0)
    # dH/dweight[j] = dH/dz_j * hidden: only the first two columns of hidden (ln 2, 0) are non-zero
    assert torch.allclose(
        model.head.weight.grad,
        torch.tensor([[-ln2 * ln2 / 4, 0.0], [ln2 * ln2 / 8, 0.0], [ln2 * ln2 / 8, 0.0]]),
        atol=1e-6,
        rtol=0,
    )


def _reference_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The plain formula in float64: H = -sum_v p_v ln p_v over the last axis."""
    logits = logits.double()
    return -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_entropy_and_its_gradient_match_the_plain_formula(temperature):
    """Random logits spread over up to ~40 nats (confident and flat rows), some columns not asked for: every
    path's entropy, and the entropy bonus's gradient to the hidden states and the head, equal the float64
    formula's. The frozen head's recomputing path forms ``logz - sum(p * z)`` in float32, which cancels to a few
    ulps of the largest logit (1.6e-5 at |z| = 25 here); the other paths are ten times closer."""
    g = torch.Generator().manual_seed(4)
    hidden, weight = torch.randn(3, 9, 6, generator=g), 2 * torch.randn(11, 6, generator=g)
    ids = torch.randint(0, 11, (3, 9), generator=g)
    positions = (torch.rand(3, 9, generator=g) < 0.7).long()
    model = _HandLM(hidden, weight)
    want_mask = positions.bool().clone()
    want_mask[:, 0] = False
    h64, w64 = hidden.double().requires_grad_(True), weight.double().requires_grad_(True)
    ref = torch.zeros(3, 9, dtype=torch.float64)
    ref[:, 1:] = _reference_entropy(h64[:, :-1] @ w64.T / temperature)
    ref = torch.where(want_mask, ref, torch.zeros_like(ref))
    coef = torch.rand(3, 9, generator=g, dtype=torch.float64)
    (ref * coef).sum().backward()
    z_max = float((hidden @ weight.T).abs().max()) / temperature
    for path, entropy in _entropy_paths(model, ids, positions, temperature).items():
        atol = 1e-6 * z_max if path == "fused/keep=False" else 5e-6
        assert entropy.dtype == torch.float32
        assert torch.allclose(entropy.double(), ref.detach(), atol=atol, rtol=0), path
    model.zero_grad(set_to_none=True)
    _, entropy = token_logprobs(
        model,
        ids,
        torch.ones_like(ids),
        positions=positions,
        temperature=temperature,
        chunk_tokens=4,
        with_entropy=True,
        entropy_grad=True,
    )
    (entropy * coef.float()).sum().backward()
    assert torch.allclose(model.model.hidden.grad.double(), h64.grad, atol=1e-5, rtol=1e-4)
    assert torch.allclose(model.head.weight.grad.double(), w64.grad, atol=1e-5, rtol=1e-4)
    assert float(h64.grad.abs().sum()) > 0 and float(w64.grad.abs().sum()) > 0


def test_kept_softmax_gives_a_confident_tokens_gradient_in_bf16():
    """p(target) = 0.9987 rounds to 1.0 in bf16, so (onehot - p)·g from the kept bf16 softmax would lose the
    target's term; the backward takes it from the fp32 log-prob. Against the float64 formula
    dL/dh = g·(onehot - softmax(hW^T))·W."""
    from rema.train.logprobs import _HeadLogp, _Workspace

    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5], [0.25, -1.0]])  # (V 4, H 2)
    hidden = torch.tensor([[9.0, 0.0]], requires_grad=True)  # logits 9, 0, -9, 2.25
    targets = torch.tensor([0])
    p = torch.softmax((hidden.detach() @ weight.T).double(), -1)
    assert 0.998 < float(p[0, 0]) < 0.999 and float(p[0, 0].bfloat16()) == 1.0
    expected = 3.0 * ((torch.nn.functional.one_hot(targets, 4) - p) @ weight.double())
    for keep in (True, False):
        work = _Workspace(1, 1, 4, torch.bfloat16, "cpu", keep)
        logp, _ = _HeadLogp.apply(hidden, weight.bfloat16(), targets, 1.0, False, work, work.kept)
        (grad,) = torch.autograd.grad(3.0 * logp.sum(), hidden, retain_graph=True)
        assert torch.allclose(grad.double(), expected, rtol=0.02, atol=0), (keep, grad, expected)
        if keep:  # the kept softmax became the gradient: a second backward is refused, not wrong
            with pytest.raises(RuntimeError, match="runs once"):
                torch.autograd.grad(logp.sum(), hidden)


def test_frozen_weights_in_bf16_change_no_number_under_autocast_but_the_embedding_rounding(tmp_path):
    """LoRA's frozen weights stored in bf16 (as the trainer does for a bf16 update): under bf16 autocast the
    log-probs and gradients are bit-identical to fp32 storage whose embedding table alone is rounded to
    bf16 (the one change; the tied LM head shares the rounded table); without autocast the model still
    runs (inputs cast in, outputs cast back); an export saves fp32 weights again."""
    import copy

    from safetensors.torch import load_file

    from rema.models import LoraSpec, export_model, load_model, store_frozen_weights

    model, tok = load_model("tiny-random", lora=LoraSpec(r=4, alpha=8), seed=0)
    for name, p in model.named_parameters():  # a non-zero adapter, so the LoRA path matters too
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(4))
    emb = model.get_input_embeddings()
    assert model.get_output_embeddings().weight is emb.weight  # tiny-random ties them, as SmolLM2 does
    low = copy.deepcopy(model)
    n_linear = sum(1 for n, _ in low.named_modules() if n.endswith("base_layer"))
    assert store_frozen_weights(low, torch.bfloat16) == n_linear + 2  # + the embedding and the tied head
    assert {p.dtype for n, p in low.named_parameters() if "base_layer" in n} == {torch.bfloat16}
    assert low.get_input_embeddings().weight.dtype == torch.bfloat16
    assert low.get_output_embeddings().weight is low.get_input_embeddings().weight  # still tied
    assert {p.dtype for p in low.parameters() if p.requires_grad} == {torch.float32}
    with torch.no_grad():
        emb.weight.data = emb.weight.data.to(torch.bfloat16).float()  # the reference: fp32, table rounded
    ids = torch.randint(0, 250, (2, 14), generator=torch.Generator().manual_seed(5))
    attn = torch.ones_like(ids)
    out = []
    for m in (model, low):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logp, _ = token_logprobs(m, ids, attn)
        logp.sum().backward()
        out.append((logp.detach(), [p.grad for p in m.parameters() if p.requires_grad]))
    assert torch.equal(out[0][0], out[1][0])
    assert all(torch.equal(a, b) for a, b in zip(out[0][1], out[1][1]))
    rounded = copy.deepcopy(model)  # fp32 storage of the bf16-rounded weights: what an fp32 vLLM would serve
    for m in rounded.modules():
        if hasattr(m, "base_layer"):
            m.base_layer.weight.data = m.base_layer.weight.data.to(torch.bfloat16).float()
    with torch.no_grad():  # without autocast: fp32 arithmetic on the rounded weights (both head paths)
        plain, cast = token_logprobs(rounded, ids, attn)[0], token_logprobs(low, ids, attn)[0]
        full_plain, full_cast = rounded(input_ids=ids).logits, low(input_ids=ids).logits
    assert cast.dtype == torch.float32 and torch.equal(plain, cast)
    assert full_cast.dtype == torch.float32 and torch.equal(full_plain, full_cast)
    export_model(low, tok, tmp_path / "out")
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.float32} and not any("lora" in k for k in saved)


@pytest.mark.slow  # inductor compiles C++: ~30 s
def test_compiled_decoder_layers_give_the_eager_logprobs_and_gradients():
    """``train.compile``: the layers compiled in place (dynamic shapes), under checkpointing and bf16 autocast
    with the frozen weights in bf16, as the trainer runs them: same log-probs and LoRA gradients as eager
    within fused-kernel rounding, for two batch shapes (no recompilation per shape), and the same
    state-dict names (checkpoints, export and the weight sync see the same model)."""
    import copy

    from rema.models import LoraSpec, compile_decoder_layers, load_model, store_frozen_weights

    model, _ = load_model("tiny-random", lora=LoraSpec(r=4, alpha=8), seed=0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(4))
    store_frozen_weights(model, torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    compiled = copy.deepcopy(model)
    n_layers = compile_decoder_layers(compiled)
    assert n_layers == len(model.get_base_model().model.layers)
    assert list(compiled.state_dict()) == list(model.state_dict())
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # an earlier test may have compiled the same layer code: its cached graphs would be reused
    graphs = counters["stats"]["unique_graphs"]
    gen = torch.Generator().manual_seed(6)
    for batch, width in ((2, 14), (3, 23)):
        ids = torch.randint(0, 250, (batch, width), generator=gen)
        attn = torch.ones_like(ids)
        attn[0, -3:] = 0  # right padding, as the trainer's micro-batches have
        out = []
        for m in (model, compiled):
            m.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logp, _ = token_logprobs(m, ids, attn)
            (logp * attn).sum().backward()
            out.append((logp.detach(), [p.grad for p in m.parameters() if p.requires_grad]))
        assert torch.allclose(out[0][0], out[1][0], atol=0.05, rtol=0)
        for a, b in zip(out[0][1], out[1][1]):
            assert torch.allclose(a, b, atol=0.05 * float(a.abs().max()) + 1e-6, rtol=0)
    assert counters["stats"]["unique_graphs"] > graphs  # it did run compiled


def test_compiling_layers_on_cpu_without_a_cpp_compiler_says_what_to_do(tiny, monkeypatch):
    import rema.models.surgery as surgery

    monkeypatch.setattr(surgery, "has_cpp_compiler", lambda: False)
    with pytest.raises(RuntimeError, match="train.compile=false"):
        surgery.compile_decoder_layers(tiny[0])


def _rows_with_shared_prefixes():
    """Two GRPO groups whose rows share their first 9 / 5 tokens, one row alone; trained tokens inside the shared
    prefix too (two identical rows' first turns), and a row that ends one token after the prefix."""
    from rema.train.batch import Rows

    g = torch.Generator().manual_seed(4)
    rnd = lambda n: torch.randint(3, 250, (n,), generator=g).tolist()  # noqa: E731
    p1, p2 = rnd(9), rnd(5)
    ids = [p1 + rnd(7), p1 + rnd(3), p1 + rnd(1), p2 + rnd(11), p2 + rnd(6), rnd(8)]
    mask = [[0] * 4 + [1] * (len(x) - 4) if i < 3 else [0] * 5 + [1] * (len(x) - 5) for i, x in enumerate(ids)]
    group = [("q1", "a")] * 3 + [("q2", "a")] * 2 + [("q3", "a")]
    n = len(ids)
    return Rows(
        ids,
        mask,
        [[0.0] * len(x) for x in ids],
        [[0] * len(x) for x in ids],
        ["a"] * n,
        group,
        [0.0] * n,
        list(range(n)),
    )


@pytest.mark.parametrize("attn_impl", ["sdpa", "eager", "rema_packed"])
def test_shared_prefix_packing_gives_the_unpacked_logprobs_and_gradients(attn_impl):
    """Rows packed around their group's common prefix (computed once, each remainder seeing the prefix and
    itself): the same log-probs, entropies and LoRA gradients as the padded rows, on the dense-mask attention
    paths and per segment (``rema.train.packed_attention``)."""
    from rema.models import LoraSpec, load_model
    from rema.train.batch import collate, plan_micro_batches

    model, _ = load_model("tiny-random", seed=0, lora=LoraSpec(r=4, alpha=8))
    model.config._attn_implementation = attn_impl
    rows = _rows_with_shared_prefixes()
    plan = plan_micro_batches(rows, list(range(len(rows))), 4096, share_prefix=True, min_shared=4)
    assert len(plan) == 1 and sorted(map(sorted, plan[0])) == [[0, 1, 2], [3, 4], [5]]
    units = plan[0]
    index = [i for u in units for i in u]
    b = collate(rows, index, 0, units=units, attn_impl=attn_impl)
    pack = b["pack"]
    assert pack["input_ids"].shape[1] == 5 + 11 + 6  # the longest pack: prefix once, then the remainders
    adv = torch.randn(b["mask"].shape, generator=torch.Generator().manual_seed(5))
    out = []
    for packed in (False, True):
        logp, ent = token_logprobs(
            model,
            b["input_ids"],
            b["attention_mask"],
            positions=b["mask"],
            chunk_tokens=6,
            with_entropy=True,
            pack=pack if packed else None,
        )
        (logp * adv).sum().backward()
        out.append((logp.detach(), ent, [p.grad.clone() for p in model.parameters() if p.requires_grad]))
        model.zero_grad(set_to_none=True)
    (lp_u, ent_u, g_u), (lp_p, ent_p, g_p) = out
    assert (lp_u != 0).sum() == int(b["mask"][:, 1:].sum()) and torch.allclose(lp_u, lp_p, atol=1e-5)
    assert torch.allclose(ent_u, ent_p, atol=1e-5)
    assert len(g_u) > 0 and all(torch.allclose(a, c, atol=1e-6, rtol=1e-4) for a, c in zip(g_u, g_p))
    # each group's prefix once: packs of 9 + 7 + 3 + 1, 5 + 11 + 6 and 8 tokens for rows of 16, 12, 10, 16, 11, 8
    assert int((pack["index"] >= 0).sum()) == sum(rows.lengths) == 73
    assert sorted(int(x) for x in (pack["position_ids"] > 0).sum(1) + 1) == [8, 20, 22]
    assert sorted(pack["segments"]) == [(5, (11, 6)), (8, ()), (9, (7, 3, 1))]


def test_packs_grow_while_the_shared_prefix_outweighs_the_longer_attention():
    """Hand-computed: prefix p = 20, remainders of 30, linear/attention cost ratio 100. Adding a remainder to a
    pack of L tokens pays while 2·30·(L - 20) < 20·(100 + 20) = 2400: at L = 50 (1800) yes, at L = 80 (3600)
    no, so a group of 4 gives two packs of 2; the token budget caps a pack too; a group whose rows share fewer
    than ``min_shared`` tokens, or another group, is not packed with it."""
    from rema.models import linear_per_attention, load_model
    from rema.train.batch import Rows, plan_micro_batches

    prefix = list(range(100, 120))
    ids = [prefix + [i] * 30 for i in range(4)] + [[7] * 5 + [i] * 45 for i in range(2)]
    n = len(ids)
    rows = Rows(
        ids,
        [[1] * 50] * n,
        [[0.0] * 50] * n,
        [[0] * 50] * n,
        ["a"] * n,
        [("q1", "a")] * 4 + [("q2", "a")] * 2,
        [0.0] * n,
        list(range(n)),
    )
    units = lambda plan: sorted(sorted(u) for micro in plan for u in micro)  # noqa: E731
    plan = plan_micro_batches(rows, list(range(n)), 10**6, share_prefix=True, linear_per_attention=100)
    assert units(plan) == [[0, 1], [2, 3], [4], [5]]
    assert len(plan) == 1  # 4 units of 50-80 tokens in one micro-batch
    assert units(plan_micro_batches(rows, list(range(n)), 10**6, share_prefix=True, linear_per_attention=10**6)) == [
        [0, 1, 2, 3],
        [4],
        [5],
    ]
    assert units(plan_micro_batches(rows, list(range(n)), 110, share_prefix=True, linear_per_attention=10**6)) == [
        [0, 1, 2],
        [3],
        [4],
        [5],
    ]  # 20 + 3·30 = 110 tokens fit the budget, a fourth row does not
    assert units(plan_micro_batches(rows, list(range(n)), 10**6, share_prefix=False)) == [[i] for i in range(n)]
    # the ratio of a Llama layer: (q, o: d·d; k, v: d·d_kv; gate, up, down: d·f) / (2·d)
    model, _ = load_model("tiny-random", seed=0)
    c = model.config
    kv = c.num_key_value_heads * c.hidden_size // c.num_attention_heads
    weights = 2 * c.hidden_size**2 + 2 * c.hidden_size * kv + 3 * c.hidden_size * c.intermediate_size
    assert linear_per_attention(model) == weights / (2 * c.hidden_size)


def test_packed_attention_without_a_layout_is_sdpa_and_the_trainer_switches_to_it():
    """A model switched to ``rema_packed`` generates and scores unpacked batches exactly as under sdpa (no
    layout: it is sdpa); ``use_packed_attention`` leaves other implementations alone; a layout wider than the
    batch is refused."""
    from rema.models import LoraSpec, load_model
    from rema.train.packed_attention import NAME, packed_attention, use_packed_attention

    model, tok = load_model("tiny-random", seed=0, lora=LoraSpec(r=4, alpha=8))
    ids = torch.randint(3, 250, (2, 12), generator=torch.Generator().manual_seed(8))
    attn = torch.ones_like(ids)
    attn[1, -5:] = 0
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=attn).logits
        assert use_packed_attention(model) and model.config._attn_implementation == NAME
        assert torch.equal(before, model(input_ids=ids, attention_mask=attn).logits)
        out = model.generate(ids[:1], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 16)
    assert not use_packed_attention(model)  # already switched (or eager, flash...): no change
    layer = model.get_base_model().model.layers[0].self_attn
    q = torch.randn(1, 4, 6, 8)
    with pytest.raises(ValueError, match="wider than the batch"):
        packed_attention(layer, q, q, q, None, rema_segments=((4, (3,)),))


def test_packed_attention_computes_small_cpu_segments_in_fp32_under_bf16(monkeypatch):
    """Under bf16 autocast on CPU, a segment whose score matrix is at most ``CPU_FP32_MAX_SCORES`` entries computes
    in fp32 (sdpa's CPU flash kernel runs small bf16 problems slower): the fp32 result rounded once to autocast's
    dtype, bit for bit; above the limit it computes in bf16 and differs."""
    import rema.train.packed_attention as pa
    from rema.models import load_model

    model, _ = load_model("tiny-random", seed=0)
    layer = model.model.layers[0].self_attn
    g = torch.Generator().manual_seed(3)
    heads, kv_heads, dim = model.config.num_attention_heads, model.config.num_key_value_heads, 16
    q = torch.randn(1, heads, 34, dim, generator=g)
    k, v = (torch.randn(1, kv_heads, 34, dim, generator=g) for _ in range(2))
    segments = ((10, (12, 8)),)  # 4 positions of padding
    fp32, _ = pa.packed_attention(layer, q, k, v, None, rema_segments=segments)
    outs = {}
    for limit in (pa.CPU_FP32_MAX_SCORES, 0):
        monkeypatch.setattr(pa, "CPU_FP32_MAX_SCORES", limit)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs[limit], _ = pa.packed_attention(layer, q, k, v, None, rema_segments=segments)
        assert outs[limit].dtype == torch.bfloat16 and outs[limit].shape == (1, 34, heads, dim)
        assert not outs[limit][0, 30:].any()  # padding
    small, bf16 = outs.values()
    assert torch.equal(small, fp32.to(torch.bfloat16))
    assert not torch.equal(bf16, small) and torch.allclose(bf16.float(), fp32, atol=0.05)
