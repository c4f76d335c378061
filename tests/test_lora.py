"""rema.models.lora: the fused LoRA linear layer computes what peft's does, and steps aside where it would not."""

from __future__ import annotations

import copy

import pytest
import torch

from rema.models.lora import FusedLoraLinear, LoraLinearFunction, fuse_lora_layers, lora_linear, unfuse_lora_layers
from rema.train.logprobs import token_logprobs


def test_lora_linear_function_matches_the_formula_and_its_gradients():
    """y = x Wᵀ + bias + s·(x Aᵀ)Bᵀ, by hand on small integers; the gradients of x, A and B by gradcheck
    (float64) and W and bias get none (frozen)."""
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # (out 3, in 2)
    bias = torch.tensor([0.5, 0.0, -1.0])
    a = torch.tensor([[1.0, -1.0]])  # r = 1
    b = torch.tensor([[2.0], [0.0], [1.0]])
    y = LoraLinearFunction.apply(x, w, bias, a, b, 0.5)
    # x Aᵀ = [-1, 1]; scaled by 0.5 times B: row 0 adds [-1, 0, -0.5], row 1 adds [1, 0, 0.5]
    assert torch.equal(y, torch.tensor([[0.5, 2.0, 1.5], [1.5, -1.0, -1.5]]))
    g = torch.Generator().manual_seed(0)
    args = [
        torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True),
        torch.randn(4, 5, generator=g, dtype=torch.float64),
        torch.randn(4, generator=g, dtype=torch.float64),
        torch.randn(2, 5, generator=g, dtype=torch.float64, requires_grad=True),
        torch.randn(4, 2, generator=g, dtype=torch.float64, requires_grad=True),
        1.7,
    ]
    assert torch.autograd.gradcheck(LoraLinearFunction.apply, args)
    x_frozen = args[0].detach()  # the first layer's input needs no gradient: none is computed
    grads = torch.autograd.grad(LoraLinearFunction.apply(x_frozen, *args[1:]).sum(), args[3:5])
    assert all(gr is not None for gr in grads)


def _tiny_pair(**lora_kwargs):
    """The tiny model with a non-zero adapter, fused, and a deep copy running peft's own forward."""
    from rema.models import LoraSpec, load_model

    model, _ = load_model("tiny-random", lora=LoraSpec(r=4, alpha=8, **lora_kwargs), seed=0)
    for name, p in model.named_parameters():  # lora_B starts at zero: make the adapter's path matter
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(4))
    peft_model = copy.deepcopy(model)
    unfuse_lora_layers(peft_model)
    return model, peft_model


def _logp_and_grads(model, ids, attn, *, autocast=False):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logp, _ = token_logprobs(model, ids, attn)
    (logp * attn).sum().backward()
    return logp.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_fused_lora_gives_peft_logprobs_and_gradients(checkpointing):
    """load_model fuses every LoRA layer (seven per decoder layer); log-probs and every adapter gradient equal
    peft's forward within fp32 rounding, with and without activation checkpointing; state-dict names
    unchanged."""
    model, peft_model = _tiny_pair()
    n_layers = len(model.get_base_model().model.layers)
    assert sum(isinstance(m, FusedLoraLinear) for m in model.modules()) == 7 * n_layers
    assert not any(isinstance(m, FusedLoraLinear) for m in peft_model.modules())
    assert list(model.state_dict()) == list(peft_model.state_dict())
    for m in (model, peft_model):
        m.train()
        if checkpointing:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(0, 250, (3, 17), generator=torch.Generator().manual_seed(5))
    attn = torch.ones_like(ids)
    attn[1, -4:] = 0
    (lp_f, g_f), (lp_p, g_p) = _logp_and_grads(model, ids, attn), _logp_and_grads(peft_model, ids, attn)
    assert torch.allclose(lp_f, lp_p, atol=1e-5, rtol=0)
    assert g_f.keys() == g_p.keys() and len(g_f) == 2 * 7 * n_layers
    for name in g_f:
        assert torch.allclose(g_f[name], g_p[name], atol=1e-5 * float(g_p[name].abs().max()) + 1e-8, rtol=0), name


def test_fused_lora_under_bf16_autocast_with_frozen_weights_in_bf16():
    """The trainer's bf16 path (autocast, frozen weights stored in bf16): the fused layers compute in bf16 like
    autocast's linear and the adapter's gradients come back in fp32, equal to peft's within bf16 rounding."""
    from rema.models import store_frozen_weights

    model, peft_model = _tiny_pair()
    for m in (model, peft_model):
        store_frozen_weights(m, torch.bfloat16)
    ids = torch.randint(0, 250, (2, 15), generator=torch.Generator().manual_seed(6))
    attn = torch.ones_like(ids)
    (lp_f, g_f), (lp_p, g_p) = (_logp_and_grads(m, ids, attn, autocast=True) for m in (model, peft_model))
    assert torch.allclose(lp_f, lp_p, atol=0.05, rtol=0)
    for name in g_f:
        assert g_f[name].dtype == torch.float32
        assert torch.allclose(g_f[name], g_p[name], atol=0.03 * float(g_p[name].abs().max()) + 1e-6, rtol=0), name
    with torch.no_grad():  # outside autocast: fp32 arithmetic on the rounded weights, as StoredLowLinear does
        assert torch.allclose(model(input_ids=ids).logits, peft_model(input_ids=ids).logits, atol=1e-5, rtol=0)


def test_fused_lora_steps_aside_where_peft_computes_something_else():
    """The adapter disabled (the KL reference) gives the base model exactly; dropout while training, a merged
    adapter and a frozen-weight dtype mismatch take peft's path; unfusing restores peft's class."""
    model, peft_model = _tiny_pair()
    layer = next(m for m in model.modules() if isinstance(m, FusedLoraLinear))
    x = torch.randn(2, 3, layer.in_features)
    assert layer._fused_operands(x) is not None
    ids = torch.randint(0, 250, (2, 9), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        with model.disable_adapter():
            assert layer._fused_operands(x) is None
            off = model(input_ids=ids).logits
        base = peft_model.get_base_model()
        with peft_model.disable_adapter():
            assert torch.equal(off, base(input_ids=ids).logits)
    assert layer._fused_operands(x.double()) is None  # an fp64 input to fp32 weights: peft's path (and its error)
    layer.merge()
    assert layer._fused_operands(x) is None
    layer.unmerge()
    dropped, _ = _tiny_pair(dropout=0.1)
    d_layer = next(m for m in dropped.modules() if isinstance(m, FusedLoraLinear))
    d_layer.train()
    assert d_layer._fused_operands(x) is None
    d_layer.eval()  # dropout is the identity at eval time
    assert d_layer._fused_operands(x) is not None
    n = unfuse_lora_layers(model)
    assert n > 0 and not any(isinstance(m, FusedLoraLinear) for m in model.modules())
    assert fuse_lora_layers(model) == n


def test_lora_linear_casts_like_autocast():
    """Under autocast every operand goes to its dtype (the output is bf16) and the adapter's gradient comes
    back in the adapter's own dtype."""
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(4, 6, generator=g), torch.randn(5, 6, generator=g)
    a = torch.randn(2, 6, generator=g, requires_grad=True)
    b = torch.randn(5, 2, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lora_linear(x, w, None, a, b, 2.0)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert a.grad.dtype == torch.float32 and b.grad.dtype == torch.float32
    ref = x.bfloat16() @ w.bfloat16().t() + 2.0 * (x.bfloat16() @ a.detach().bfloat16().t()) @ b.detach().bfloat16().t()
    assert torch.allclose(y.float(), ref.float(), atol=0.1, rtol=0.02)


@pytest.mark.parametrize("kept", [None, torch.bfloat16])
def test_merged_weights_by_addmm_equal_peft_delta_and_leave_the_model_alone(kept):
    """``iter_merged_weights`` adds a plain adapter by ``addmm``: W (in fp32) + scale·B@A, the same bits as
    peft's ``get_delta_weight`` added after (scale 2 here), whether the base is fp32 or kept in bf16 (merged in
    a copy then: the in-place ``addmm_`` must never touch the model's own weight); an adapter it cannot add
    that way (here lora_A in another dtype) goes through ``get_delta_weight``."""
    from peft.tuners.lora import LoraLayer

    from rema.models import iter_merged_weights, store_frozen_weights

    model, _ = _tiny_pair()
    if kept is not None:
        store_frozen_weights(model, kept)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = {
        f"{n.replace('base_model.model.', '')}.weight": m for n, m in model.named_modules() if isinstance(m, LoraLayer)
    }
    assert layers and all(float(m.scaling["default"]) == 2.0 for m in layers.values())

    def reference(m):
        return m.get_base_layer().weight.detach().float() + m.get_delta_weight("default").float()

    for _ in range(2):  # twice: a first merge that wrote into the model would show in the second
        ours = dict(iter_merged_weights(model))
        for name, m in layers.items():
            assert ours[name].dtype == torch.float32 and torch.equal(ours[name], reference(m)), name
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    name, m = next(iter(layers.items()))
    m.lora_A["default"].to(torch.float64)  # not the weight's dtype: the fallback
    m.lora_B["default"].to(torch.float64)
    assert torch.allclose(dict(iter_merged_weights(model))[name], reference(m).float(), atol=1e-6, rtol=0)


def test_checkpointing_a_share_of_the_layers_recomputes_those_and_keeps_the_gradients():
    """``model.checkpoint_layers``: k = max(1, round(share·n)) layers recompute, layer i iff ⌊(i+1)·k/n⌋ > ⌊i·k/n⌋
    (hand-counted on 30 layers: 30, 15, 10, 1); the recomputed layers start their forward twice in a training
    step, the others once, and the LoRA gradients are those of the unchecked model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rema.models import LoraSpec, enable_checkpointing, load_model

    deep = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=30,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    flags = lambda: [layer.gradient_checkpointing for layer in deep.model.layers]  # noqa: E731
    assert enable_checkpointing(deep, 1.0) == 30 and all(flags())
    assert enable_checkpointing(deep, 0.5) == 15 == sum(flags()) and flags()[:4] == [False, True, False, True]
    assert enable_checkpointing(deep, 1 / 3) == 10 == sum(flags()) and flags()[:6] == [False, False, True] * 2
    assert enable_checkpointing(deep, 0.01) == 1 and flags()[-1] and sum(flags()) == 1
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        enable_checkpointing(deep, 0.0)

    ids = torch.randint(3, 250, (2, 12), generator=torch.Generator().manual_seed(2))
    grads, calls, state = {}, {}, None
    for share in (None, 1.0, 0.5):
        model, _ = load_model("tiny-random", seed=0, lora=LoraSpec(r=4, alpha=8))
        state = state or {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(state)  # the same LoRA initialisation each time
        model.train()
        if share is not None:
            assert enable_checkpointing(model, share) == (2 if share == 1.0 else 1)
        layers = model.get_base_model().model.layers
        count = [0] * len(layers)
        for i, layer in enumerate(layers):
            # a pre-hook: the recompute stops once it has what the backward needs, before a forward hook would run
            layer.register_forward_pre_hook(lambda *_, i=i, count=count: count.__setitem__(i, count[i] + 1))
        model(input_ids=ids, labels=ids).loss.backward()
        calls[share] = count
        grads[share] = [p.grad for p in model.parameters() if p.requires_grad]
    assert calls == {None: [1, 1], 1.0: [2, 2], 0.5: [1, 2]}
    assert any(g.abs().sum() > 0 for g in grads[None])
    for share in (1.0, 0.5):
        assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(grads[None], grads[share]))
