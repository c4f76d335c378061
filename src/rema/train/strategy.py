"""How the trained model is spread over data-parallel processes: DDP (a whole replica on each) or FSDP2
(PyTorch's ``fully_shard``: each decoder layer, then the root, sharded over the processes).

The update (:func:`rema.train.update.update_policy`) does not know which one it runs under: it asks the
strategy to finish the gradients (:meth:`Strategy.reduce_grads_`), to clip them, and how many micro-batch
rounds every process must run (:meth:`Strategy.rounds`: a sharded forward is a collective, so every process
runs as many forwards as the busiest one). Checkpoints of sharded weights go through
``torch.distributed.checkpoint``; exports gather the full weights.

How it departs from a plain FSDP setup:

1. Gradients are *summed* over processes (``set_gradient_divide_factor(1)``): the loss is already normalised
   by the global unit count (see :mod:`rema.train.update`), as under DDP.
2. On CUDA with bf16 compute, FSDP's ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`` over
   fp32 shards: fp32 master weights and optimizer state, bf16 all-gathers and matmuls, fp32 gradient
   reduction. On CPU (gloo) the shards stay fp32 and bf16 compute comes from autocast, as on one process.
3. The generation engine never generates with the sharded model: vLLM is given its weights gathered one
   at a time by each sync, the transformers engine an unsharded replica the sync gathers into
   (:func:`rema.train.policy.build_policies`).
"""

from __future__ import annotations

import copy
import os

import torch
from torch.distributed.tensor import DTensor

from ..models.export import full_tensor
from .distributed import Dist
from .logprobs import shard_logprobs


def decoder_layers(model) -> list[torch.nn.Module]:
    """The transformer blocks of a Hugging Face model (peft-wrapped or not): the modules whose class is in
    the model's ``_no_split_modules`` (e.g. ``LlamaDecoderLayer``), the unit FSDP shards one at a time."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__.removeprefix("FSDP") in names]  # sharded or not
    if not layers:
        raise ValueError(f"{type(base).__name__} names no decoder layer class (_no_split_modules); FSDP needs one")
    return layers


def local_elements(model) -> tuple[int, int]:
    """(parameter elements this process holds, elements of the whole model)."""
    local = whole = 0
    for p in model.parameters():
        whole += p.numel()
        local += p.to_local().numel() if isinstance(p, DTensor) else p.numel()
    return local, whole


class Strategy:
    """DDP: every process holds the model; gradients are summed explicitly after each mini-batch."""

    name = "ddp"
    sharded = False
    forward_dtype: str | None = None
    """The dtype the forward computes in when it is not the weights' (FSDP's bf16 mixed precision); None: theirs."""

    def __init__(self, dist: Dist):
        self.dist = dist

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over processes (in place)."""
        return self.dist.sum_(tensor)

    def sum_value(self, value: float) -> float:
        """``value`` summed over processes."""
        return self.dist.sum_value(value)

    def prepare(self, model) -> None:
        """Make ``model`` ready for training under this strategy (in place)."""

    def rounds(self, n_local: int) -> int:
        """How many micro-batches this process runs when it has ``n_local`` of its own."""
        return n_local

    def reduce_grads_(self, params: list[torch.Tensor]) -> None:
        """Turn each process's gradient into the gradient of the global loss (in place)."""
        self.dist.sum_grads_(params)

    def clip_grad_norm_(self, params: list[torch.Tensor], max_norm: float) -> float:
        """Clip the gradients' global norm to ``max_norm``; returns the norm before clipping."""
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0


class FSDP(Strategy):
    """FSDP2: parameters, gradients and optimizer state sharded over processes (``train.strategy=fsdp``)."""

    name = "fsdp"
    sharded = True

    def __init__(self, dist: Dist, device: torch.device, *, bf16: bool = False, cpu_offload: bool = False):
        super().__init__(dist)
        self.device, self.bf16, self.cpu_offload = device, bf16, cpu_offload
        self.mesh = None
        self.forward_dtype = "bfloat16" if bf16 and device.type == "cuda" else None  # MixedPrecisionPolicy below

    def prepare(self, model) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        if self.mesh is None:
            self.mesh = init_device_mesh(self.device.type, (self.dist.world,))
        kw = {"mesh": self.mesh, "offload_policy": CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy()}
        if self.bf16 and self.device.type == "cuda":
            kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for layer in decoder_layers(model):
            fully_shard(layer, **kw)
        fully_shard(model, **kw)
        shard_logprobs(model)
        for m in model.modules():
            if hasattr(m, "set_gradient_divide_factor"):
                m.set_gradient_divide_factor(1.0)
                m.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no pre-multiplied sum)

    def rounds(self, n_local: int) -> int:
        return int(self.dist.all_max(n_local))

    def reduce_grads_(self, params: list[torch.Tensor]) -> None:
        pass  # reduce-scattered in the backward

    def clip_grad_norm_(self, params: list[torch.Tensor], max_norm: float) -> float:
        if not params:
            return 0.0
        return float(full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm)))


def launcher_overrides(env=None) -> list[str]:
    """Config overrides that an ``accelerate launch --config_file`` with an FSDP section asks for, read from
    the environment accelerate sets for its processes: ``distributed_type: FSDP`` → ``train.strategy=fsdp``,
    ``fsdp_offload_params`` → ``train.fsdp_cpu_offload``, ``fsdp_activation_checkpointing`` →
    ``model.gradient_checkpointing``. rema shards with FSDP2 whatever ``fsdp_version`` says."""
    env = os.environ if env is None else env
    if env.get("ACCELERATE_USE_FSDP", "").lower() != "true":
        return []
    out = ["train.strategy=fsdp"]
    if env.get("FSDP_OFFLOAD_PARAMS", "").lower() == "true":
        out.append("train.fsdp_cpu_offload=true")
    if env.get("FSDP_ACTIVATION_CHECKPOINTING", "").lower() == "true":
        out.append("model.gradient_checkpointing=true")
    return out


def make_strategy(
    name: str, dist: Dist, device: torch.device, *, bf16: bool = False, cpu_offload: bool = False
) -> Strategy:
    """``train.strategy`` → a :class:`Strategy`; FSDP where a process group exists (several processes, or one
    that set up its own group, as ``bench/gpu_check.py`` does to run FSDP on one GPU)."""
    if name == "fsdp" and torch.distributed.is_initialized():
        return FSDP(dist, device, bf16=bf16, cpu_offload=cpu_offload)
    return Strategy(dist)


def meta_copy(model):
    """A copy of ``model``'s modules whose parameters are on the meta device (no memory), frozen; buffers are
    copied. The skeleton :func:`sharded_copy` fills."""
    memo = {
        id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False) for p in model.parameters()
    }
    return copy.deepcopy(model, memo).eval().requires_grad_(False)


@torch.no_grad()
def sharded_copy(model, skeleton, strategy: FSDP):
    """A frozen copy of the sharded ``model`` (the KL reference of full fine-tuning) that no process ever holds
    whole: ``skeleton`` (:func:`meta_copy` of the model before it was sharded) is sharded by ``strategy`` like
    the model, given memory where the model's shards are (the GPU; host memory under CPU offload), and each
    process copies its own shards in. Buffers (e.g. rotary frequencies) are restored after ``to_empty``."""
    buffers = {name: b.clone() for name, b in skeleton.named_buffers()}
    strategy.prepare(skeleton)
    shards = dict(model.named_parameters())
    skeleton.to_empty(device=next(iter(shards.values())).to_local().device)
    for name, b in skeleton.named_buffers():
        b.copy_(buffers[name])
    for name, p in skeleton.named_parameters():
        p.to_local().copy_(shards[name].to_local())
    return skeleton


@torch.no_grad()
def gather_into(whole, model) -> None:
    """Copy ``model``'s weights, sharded or not, into ``whole``, an unsharded model with the same state-dict
    keys; each shard is gathered in turn (a collective: every process calls it)."""
    own = whole.state_dict()
    for name, t in model.state_dict().items():
        own[name].copy_(full_tensor(t))


def _sharded_states(policies: dict) -> dict:
    """``{name: {"model": ..., "optimizer": ...}}`` of sharded policies, trainable entries only (DCP layout); a
    policy without an optimizer (an agent frozen by ``train.update_agents``) has ``model`` only."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

    out = {}
    options = StateDictOptions(ignore_frozen_params=True)
    for name, (model, optimizer) in policies.items():
        if optimizer is None:
            out[name] = {"model": get_model_state_dict(model, options=options)}
            continue
        msd, osd = get_state_dict(model, optimizer, options=options)
        out[name] = {"model": msd, "optimizer": osd}
    return out


def save_shards(policies: dict, folder) -> None:
    """Every process writes its shards of each ``{name: (model, optimizer)}`` to ``folder`` through
    ``torch.distributed.checkpoint`` (a collective). An optimizer that has not stepped yet (a step-0 checkpoint)
    is left out: DCP's state dict would first initialise its state with a zero-gradient step, and AdamW's next,
    real step would then be its second (another bias correction, another update than without the checkpoint)."""
    import torch.distributed.checkpoint as dcp

    stepped = {
        name: (model, optimizer if optimizer is not None and optimizer.state else None)
        for name, (model, optimizer) in policies.items()
    }
    dcp.save(_sharded_states(stepped), checkpoint_id=str(folder))


def load_shards(policies: dict, folder) -> None:
    """Read what :func:`save_shards` wrote back into each ``{name: (model, optimizer)}`` (a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

    saved = dcp.FileSystemReader(str(folder)).read_metadata().state_dict_metadata
    # an agent frozen when the checkpoint was written (train.update_agents), or an optimizer that had not stepped
    # yet, has no optimizer state there: it starts afresh (a rollback to step 0 forgets the moments since)
    for name, (_, optimizer) in policies.items():
        if optimizer is not None and not any(k.startswith(f"{name}.optimizer.") for k in saved):
            optimizer.state.clear()
    policies = {
        name: (model, optimizer if any(k.startswith(f"{name}.optimizer.") for k in saved) else None)
        for name, (model, optimizer) in policies.items()
    }
    state = _sharded_states(policies)
    dcp.load(state, checkpoint_id=str(folder))
    for name, (model, optimizer) in policies.items():
        # frozen weights (LoRA's base) are not in the checkpoint: only trainable ones may not be missing
        options = StateDictOptions(ignore_frozen_params=True, strict=False)
        if optimizer is None:
            result = set_model_state_dict(model, state[name]["model"], options=options)
        else:
            result = set_state_dict(
                model,
                optimizer,
                model_state_dict=state[name]["model"],
                optim_state_dict=state[name]["optimizer"],
                options=options,
            )
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        missing = [k for k in result.missing_keys if k in trainable]
        if missing or result.unexpected_keys:
            raise RuntimeError(
                f"{folder} does not match the model: missing {missing[:3]}, "
                f"unexpected {list(result.unexpected_keys)[:3]}"
            )
