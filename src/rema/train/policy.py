"""What the trainer trains: one set of weights per policy (shared by both roles, or one per agent), with
its optimizer, learning-rate schedule, generation engine and KL reference, built from the config.

Shared weights: one model plays both roles, both roles' rows train it in the same step. Separate weights:
both models roll out every step, only one is updated at a time (:func:`active_policies`), switching every
``train.switch_freq`` steps, MTA first (docs/design.md §6). ``train.update_agents`` (``mta`` or ``ra``) freezes
the other agent: with separate weights its policy gets no RL optimizer (nor schedule) and is never active; with shared
weights the update leaves the frozen role's rows out of the loss (:func:`rema.train.update.update_policy`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch

from ..config import Config, ConfigError
from ..models import LoraSpec, compile_decoder_layers, enable_checkpointing, load_model, set_training_dtypes
from ..rollout.factory import engine_options, make_engine
from ..rollout.tp_group import TPGroupEngine, make_tp_group
from .packed_attention import use_packed_attention
from .strategy import Strategy, gather_into


@dataclass
class Policy:
    """One set of trainable weights and everything attached to it."""

    name: str
    """``shared``, ``mta`` or ``ra``."""
    roles: tuple[str, ...]
    model: torch.nn.Module
    tokenizer: object
    optimizer: torch.optim.Optimizer | None
    """None: a frozen agent's weights (``train.update_agents``), which RL never updates."""
    scheduler: torch.optim.lr_scheduler.LambdaLR | None
    engine: object
    ref: torch.nn.Module | None
    """Frozen reference for KL (None: not needed, or LoRA, where the base with the adapter off is used)."""
    served: torch.nn.Module | None = None
    """Under a sharded strategy with the transformers engine: the unsharded replica it generates from, kept
    equal to the trained weights by :func:`sync_engine`; None: the engine is given the model itself."""


def lr_lambda(warmup: int, total: int, schedule: str):
    """The learning-rate factor at each step: linear warm-up over ``warmup`` steps, then constant or cosine
    decay to 0 at ``total``."""
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return f


def set_base_lr(pol: Policy, lr: float) -> None:
    """Make ``lr`` the policy's learning rate from now on (a rollback lowers it): the schedule's base, and the
    optimizer's current rate at the schedule's position (a warm-up or cosine factor is kept). A frozen agent
    (no optimizer) is left alone."""
    sched = pol.scheduler
    if sched is None:
        return
    sched.base_lrs = [lr for _ in sched.base_lrs]
    for group, factor in zip(pol.optimizer.param_groups, sched.lr_lambdas):
        group["initial_lr"] = lr
        group["lr"] = lr * factor(sched.last_epoch)
    sched._last_lr = [group["lr"] for group in pol.optimizer.param_groups]


def build_policies(cfg: Config, roles: tuple[str, ...], device: torch.device, *, bf16: bool, rank: int = 0,
                   engine_factory=None, strategy: Strategy | None = None) -> list[Policy]:
    """Load the model(s), prepare them for training (frozen weights in bf16 under LoRA + autocast, gradient
    checkpointing, compiled layers or per-segment attention, sharding by ``strategy``) and attach optimizer,
    schedule, engine and KL reference. ``engine_factory(model, tokenizer, seed)`` replaces :func:`make_engine`
    (tests reuse one engine). Under a sharded strategy the KL reference is sharded like the model; vLLM is
    given the model's weights gathered one at a time by its weight sync, while the transformers engine
    generates from an unsharded replica (its ``generate`` is not a collective the processes could share).
    With ``rollout.vllm_tensor_parallel_size`` > 1 each engine spans that many consecutive processes
    (:mod:`rema.rollout.tp_group`). ``cfg.rollout.engine`` is resolved (:func:`rema.runtime.resolved`)."""
    m, t = cfg.model, cfg.train
    sharded = strategy is not None and strategy.sharded
    multi_process = strategy is not None and strategy.dist.enabled  # vLLM joins the job's processes
    tp = cfg.rollout.vllm_tensor_parallel_size
    vllm = engine_factory is None and cfg.rollout.engine == "vllm"
    tp_group = None
    if tp > 1:
        if not (vllm and multi_process):
            raise ConfigError(f"rollout.vllm_tensor_parallel_size={tp} spans processes of a torchrun/accelerate "
                              "job with the vLLM engine; launch several processes, or set it to 1")
        tp_group = make_tp_group(strategy.dist.world, rank, tp)
    lora = LoraSpec(r=m.lora_r, alpha=m.lora_alpha, dropout=m.lora_dropout, fused=m.lora_fused)
    if t.shared_weights:
        groups = [("shared", roles, m.name)]
    else:
        groups = [("mta", ("mta",), m.name), ("ra", ("ra",), m.ra_name or m.name)]
    policies = []
    for i, (name, group_roles, model_name) in enumerate(groups):
        model, tok = load_model(model_name, dtype=m.dtype, device=device, lora=lora, seed=t.seed)
        set_training_dtypes(model, bf16=bf16, lora=m.lora_r > 0, sharded=sharded)
        if m.gradient_checkpointing:
            enable_checkpointing(model, m.checkpoint_layers)
        model.config.use_cache = False
        if t.compile:
            compile_decoder_layers(model)
        elif t.share_prefix:  # packs' attention per segment (compiled layers keep the dense mask)
            use_packed_attention(model)
        trained = t.update_agents in ("both", *group_roles)  # False: an agent train.update_agents freezes
        ref = None
        if cfg.algo.kl_coef > 0 and m.lora_r == 0 and trained:  # a frozen agent has no KL term to compute
            ref = copy.deepcopy(model).eval().requires_grad_(False)
        served = model
        if sharded and not vllm:
            served = copy.deepcopy(model).eval().requires_grad_(False)  # the engine's unsharded replica
            if bf16 and device.type == "cuda":  # it only generates: half the memory, faster decoding
                served.to(torch.bfloat16)
        if sharded:
            strategy.prepare(model)
            if ref is not None:
                strategy.prepare(ref)
        opt = sched = None
        if trained:  # a frozen agent (separate weights) has no optimizer state
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(t.warmup_steps, t.steps, t.lr_schedule))
        engine_seed = t.seed * 1000 + i + 7919 * (rank // tp)  # the ranks of one engine sample alike
        if engine_factory is not None:
            engine = engine_factory(served, tok, engine_seed)
        elif tp_group is not None:
            engine = TPGroupEngine(make_engine(served, tok, engine="vllm", seed=engine_seed, external_launcher=True,
                                               tensor_parallel_size=tp, **engine_options(cfg.rollout)),
                                   tp_group, name)
        else:
            engine = make_engine(served, tok, engine=cfg.rollout.engine, seed=engine_seed, **engine_options(cfg.rollout),
                                 external_launcher=multi_process)
        reshard(model)
        policies.append(Policy(name, group_roles, model, tok, opt, sched, engine, ref,
                               served if served is not model else None))
    return policies


def reshard(model) -> None:
    """Shard a FSDP2 model's weights again after a forward outside training (vLLM's post-sync check): FSDP
    keeps the root's weights gathered after a forward, for the backward it expects, and the update would then
    find plain tensors among the sharded parameters."""
    if hasattr(model, "reshard"):
        model.reshard()


def sync_engine(pol: Policy) -> dict[str, float]:
    """Give the policy's engine the weights it has now (after an update, the cold start, a resume). A sharded
    model is gathered (a collective: every process calls this): by vLLM's weight sync one tensor at a time,
    or into the unsharded replica the transformers engine serves."""
    if pol.served is None:
        metrics = pol.engine.sync_weights(pol.model)
        reshard(pol.model)
        return metrics
    t0 = time.perf_counter()
    gather_into(pol.served, pol.model)
    return {"gather_s": time.perf_counter() - t0, **pol.engine.sync_weights(pol.served)}


def active_policies(policies: list[Policy], step: int, *, switch_freq: int) -> list[Policy]:
    """Policies updated at ``step``: all with shared weights; one, alternating, with separate weights; only
    the one with an optimizer when the other agent is frozen (``train.update_agents``)."""
    if len(policies) == 1:
        return policies
    if any(p.optimizer is None for p in policies):
        return [p for p in policies if p.optimizer is not None]
    which = ("mta", "ra")[(step // switch_freq) % 2]
    return [p for p in policies if p.name == which]
