"""An accelerator and an NCCL-like process group, emulated on CPU, to prove that collectives get tensors on the
right device without a GPU.

:class:`EmulatedAccelerator` is a ``TorchDispatchMode``. While it is active:

* the ``meta`` device stands for the accelerator (a GPU): a tensor moved or created there becomes an
  :class:`OnAccelerator` tensor, which reports ``device == meta`` but keeps its values in a CPU tensor, so every
  operation on it still computes (on the CPU copy) and results moved back to the CPU are real numbers;
* every collective (a ``c10d`` operator: ``all_reduce``, ``all_gather``, ...) is checked the way NCCL checks
  it: a tensor not on the accelerator raises NCCL's own error, "No backend type associated with device type
  cpu". Collectives on accelerator tensors run on their CPU copies over the process group really present
  (gloo, or torch's fake group).

Barriers are exempt: torch chooses their device itself. (Object collectives, ``all_gather_object``, would
need the same exemption; the tests here make none: they run on torch's fake group, which carries no objects.)
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

ACCELERATOR = torch.device("meta")
"""The device that plays the GPU."""

EXEMPT = {"barrier"}
"""c10d operators torch issues on a device of its own choosing."""


class OnAccelerator(torch.Tensor):
    """A tensor on the emulated accelerator: ``device`` is meta, the values live in ``self.elem`` (CPU)."""

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, dtype=elem.dtype, device=ACCELERATOR,
                                                   strides=elem.stride(), requires_grad=elem.requires_grad)

    def __init__(self, elem: torch.Tensor):
        self.elem = elem

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return NotImplemented  # only ever handled under EmulatedAccelerator


def _unwrap(x):
    return x.elem if isinstance(x, OnAccelerator) else x


def _wrap(x):
    return OnAccelerator(x) if isinstance(x, torch.Tensor) and not isinstance(x, OnAccelerator) else x


class EmulatedAccelerator(TorchDispatchMode):
    """See the module docstring. ``rejected`` counts the collectives refused; ``checked`` those let through."""

    def __init__(self):
        super().__init__()
        self.checked = 0
        self.rejected = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "c10d":
            return self._collective(func, args, kwargs)
        on_accelerator = any(isinstance(x, OnAccelerator) for x in tree_leaves((args, kwargs)))
        target = kwargs.get("device")
        if target is not None and torch.device(target) == ACCELERATOR:  # moved or created on the accelerator
            out = func(*tree_map(_unwrap, args), **{**tree_map(_unwrap, kwargs), "device": torch.device("cpu")})
            return tree_map(_wrap, out)
        if not on_accelerator:
            return func(*args, **kwargs)
        if func is torch.ops.aten._to_copy.default:  # off the accelerator (to the CPU, or another dtype)
            out = func(args[0].elem, **kwargs)
            return out if kwargs.get("device") is not None else _wrap(out)
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        if func._schema.is_mutable and args and isinstance(args[0], torch.Tensor):
            return args[0]  # in place: the (wrapped or plain) destination itself
        if func is torch.ops.aten._local_scalar_dense.default:
            return out
        return tree_map(_wrap, out)

    def _collective(self, func, args, kwargs):
        name = func.name().split("::")[-1].rstrip("_")
        tensors = [x for x in tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
        if name not in EXEMPT:
            wrong = [x for x in tensors if not isinstance(x, OnAccelerator)]
            if wrong:
                self.rejected += 1
                raise RuntimeError(f"No backend type associated with device type {wrong[0].device.type} "
                                   f"(emulated NCCL: {func.name()})")
            self.checked += 1
        return func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
