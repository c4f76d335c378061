"""A fused forward and backward for peft's LoRA linear layers.

peft computes a LoRA layer as ``base(x) + lora_B(lora_A(x)) * scale``: besides the matmuls, two passes
over the (tokens × out_features) output (the scaling and the sum) in the forward and one more in the
backward (the scaled gradient), each a fresh tensor. For the MLP of SmolLM2-135M that output is 2.7× the
width of the input. :class:`LoraLinearFunction` computes the same sum as two matmuls into one buffer,
``addmm(x Wᵀ, (x Aᵀ), Bᵀ, alpha=scale)``, and its backward folds the scale into the rank-r products and
the two paths' input gradients into one buffer. Same FLOPs, same saved tensors, no output-sized
temporaries. Measured on 2 CPU cores (the TRL side-by-side's update, SmolLM2-135M, r = 16 on all seven
projections): see the README's performance section.

:func:`fuse_lora_layers` switches a peft model's plain LoRA linear layers to :class:`FusedLoraLinear`, a
subclass whose ``forward`` takes the fused path when it computes exactly what peft would (one active
vanilla adapter, not merged, not disabled, no dropout while training, a frozen ``nn.Linear`` base, matching
dtypes) and calls peft's own ``forward`` otherwise, e.g. inside ``model.disable_adapter()`` (the KL
reference) or under ``torch.compile`` (inductor fuses the elementwise work itself). The module tree,
parameter names and state dict do not change.
"""

from __future__ import annotations

import torch

from .low_precision import StoredLowLinear

try:
    from peft.tuners.lora.layer import Linear as _PeftLinear
except ImportError:  # peft is a dependency; keep the module importable without it all the same
    _PeftLinear = None


class LoraLinearFunction(torch.autograd.Function):
    """``y = x Wᵀ + bias + scale · (x Aᵀ) Bᵀ`` with W (and bias) frozen.

    Shapes: x (..., in), weight (out, in), bias (out,) or None, a = lora_A (r, in), b = lora_B (out, r);
    returns (..., out). All floating operands in one dtype. Gradients: x, a, b."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scale: float):
        x2 = x.reshape(-1, x.shape[-1])
        h = x2 @ a.t()  # (M, r)
        out = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        out.addmm_(h, b.t(), alpha=scale)
        ctx.save_for_backward(x2, h, weight, a, b)
        ctx.scale = scale
        ctx.x_shape = x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        x2, h, weight, a, b = ctx.saved_tensors
        scale = ctx.scale
        g = grad.reshape(-1, grad.shape[-1])  # (M, out)
        gh = g @ b  # (M, r): the gradient reaching x Aᵀ, before the scale
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ weight).addmm_(gh, a, alpha=scale).view(ctx.x_shape)
        if ctx.needs_input_grad[3]:
            grad_a = (gh.t() @ x2).mul_(scale)
        if ctx.needs_input_grad[4]:
            grad_b = (g.t() @ h).mul_(scale)
        return grad_x, None, None, grad_a, grad_b, None


def lora_linear(x, weight, bias, a, b, scale: float) -> torch.Tensor:
    """:class:`LoraLinearFunction` under autocast's rules for a linear layer: with autocast on, every operand
    is cast to its dtype (differentiably, so the adapter's gradients come back in its own dtype) and the
    function runs in that dtype; otherwise all operands must share ``x``'s dtype."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        x, weight, a, b = x.to(dtype), weight.to(dtype), a.to(dtype), b.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        with torch.autocast(device, enabled=False):
            return LoraLinearFunction.apply(x, weight, bias, a, b, scale)
    return LoraLinearFunction.apply(x, weight, bias, a, b, scale)


def _frozen_base_weight(base, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The base layer's (weight, bias) in ``dtype`` if it is a frozen linear layer whose output the fused
    path reproduces, else None: a plain ``nn.Linear`` in ``dtype``, or rema's ``StoredLowLinear`` (weights
    kept in bf16), which outside autocast computes in the input's dtype on its rounded weights."""
    if type(base) not in (torch.nn.Linear, StoredLowLinear):
        return None
    weight, bias = base.weight, base.bias
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        return None
    if weight.dtype != dtype:
        if type(base) is not StoredLowLinear:
            return None
        weight = weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    return weight, bias


if _PeftLinear is not None:

    class FusedLoraLinear(_PeftLinear):
        """peft's LoRA ``Linear`` with the fused path of :class:`LoraLinearFunction` where it applies."""

        def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            fused = self._fused_operands(x) if not args and not kwargs else None
            if fused is None:
                return super().forward(x, *args, **kwargs)
            return lora_linear(x, *fused)

        def _fused_operands(self, x: torch.Tensor):
            if self.disable_adapters or self.merged or torch.compiler.is_compiling():
                return None
            active = self.active_adapters
            if len(active) != 1:
                return None
            name = active[0]
            if name not in self.lora_A or name in self.lora_variant:
                return None
            if self.training and not isinstance(self.lora_dropout[name], torch.nn.Identity):
                return None
            a, b = self.lora_A[name], self.lora_B[name]
            if (
                type(a) is not torch.nn.Linear
                or type(b) is not torch.nn.Linear
                or a.bias is not None
                or b.bias is not None
            ):
                return None
            autocast = torch.is_autocast_enabled(x.device.type)
            if not autocast and not (x.dtype == a.weight.dtype == b.weight.dtype):
                return None
            base = _frozen_base_weight(self.base_layer, x.dtype if not autocast else self.base_layer.weight.dtype)
            if base is None:
                return None
            return (*base, a.weight, b.weight, float(self.scaling[name]))


def _swap_class(model, old: type | None, new: type | None) -> int:
    if old is None or new is None:  # no peft
        return 0
    count = 0
    for module in model.modules():
        if type(module) is old:
            module.__class__ = new
            count += 1
    return count


def fuse_lora_layers(model) -> int:
    """Switch every peft LoRA ``Linear`` of ``model`` to :class:`FusedLoraLinear` in place; returns how many.
    Undo with :func:`unfuse_lora_layers`."""
    return _swap_class(model, _PeftLinear, globals().get("FusedLoraLinear"))


def unfuse_lora_layers(model) -> int:
    """Back to peft's own ``Linear`` forward; returns how many layers changed."""
    return _swap_class(model, globals().get("FusedLoraLinear"), _PeftLinear)
