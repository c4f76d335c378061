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
import gc
import time
from dataclasses import dataclass

import torch

from ..algos.schedule import lr_lambda, own_steps, updates_agent
from ..config import Config, ConfigError
from ..models import LoraSpec, compile_decoder_layers, enable_checkpointing, load_model, set_training_dtypes
from ..rollout.factory import engine_options, make_engine, vllm_shares
from ..rollout.tp_group import TPGroupEngine, make_tp_group
from .packed_attention import use_packed_attention
from .strategy import Strategy, gather_into, meta_copy, sharded_copy


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
    """The generation engine (None only while :func:`build_policies` builds it)."""
    ref: torch.nn.Module | None
    """Frozen reference for KL (None: not needed, or LoRA, where the base with the adapter off is used)."""
    served: torch.nn.Module | None = None
    """Under a sharded strategy with the transformers engine: the unsharded replica it generates from, kept
    equal to the trained weights by :func:`sync_engine`; None: the engine is given the model itself."""


def release_modules(policies: list[Policy]) -> None:
    """Let go of every module, optimizer and engine of ``policies`` (the names stay), and collect them now, while
    the process group still exists. Sharded modules freed after it was destroyed, at the interpreter's exit, made a
    finished process abort now and then ("terminate called without an active exception": 5 of 34 two-process runs
    on a loaded machine, none in 34 with the modules let go first)."""
    for p in policies:
        p.model = p.ref = p.served = p.optimizer = p.scheduler = p.engine = None
    gc.collect()


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


def build_policies(
    cfg: Config,
    roles: tuple[str, ...],
    device: torch.device,
    *,
    bf16: bool,
    rank: int = 0,
    engine_factory=None,
    strategy: Strategy | None = None,
) -> list[Policy]:
    """Load the model(s), prepare them for training (frozen weights in bf16 under LoRA + autocast, gradient
    checkpointing, compiled layers or per-segment attention, sharding by ``strategy``) and attach optimizer,
    schedule, KL reference and, once every model is in place, the engines. ``engine_factory(model, tokenizer,
    seed)`` replaces :func:`make_engine` (tests reuse one engine). Under a sharded strategy the KL reference is
    sharded like the model (:func:`~rema.train.strategy.sharded_copy`); vLLM is given the model's weights
    gathered one at a time by its weight sync, while the transformers engine generates from an unsharded
    replica (its ``generate`` is not a collective the processes could share). With
    ``rollout.vllm_tensor_parallel_size`` > 1 each engine spans that many consecutive processes
    (:mod:`rema.rollout.tp_group`). Two vLLM engines in one process (separate weights) on a GPU split
    ``rollout.vllm_gpu_memory_utilization`` so that both start (:func:`~rema.rollout.factory.vllm_shares`).
    ``cfg.rollout.engine`` is resolved (:func:`rema.runtime.resolved`)."""
    t = cfg.train
    sharded = strategy is not None and strategy.sharded
    vllm = engine_factory is None and cfg.rollout.engine == "vllm"
    tp_group = _tp_group(cfg, vllm, strategy, rank)
    if t.shared_weights:
        groups = [("shared", roles, cfg.model.name)]
    else:
        groups = [("mta", ("mta",), cfg.model.name), ("ra", ("ra",), cfg.model.ra_name or cfg.model.name)]
    # under separate weights with both agents trained, each schedule counts its own updates (agent 0, 1)
    agents = [i if not t.shared_weights and t.update_agents == "both" else None for i in range(len(groups))]
    policies = [
        _trainable(
            cfg,
            name,
            group_roles,
            model_name,
            device,
            bf16=bf16,
            sharded=sharded,
            vllm=vllm,
            strategy=strategy,
            agent=agent,
        )
        for (name, group_roles, model_name), agent in zip(groups, agents)
    ]
    shares = vllm_shares(cfg.rollout, [p.model for p in policies], device) if vllm else [None] * len(policies)
    for i, (pol, share) in enumerate(zip(policies, shares)):
        pol.engine = _engine(
            cfg,
            pol,
            t.seed * 1000 + i,
            rank=rank,
            engine_factory=engine_factory,
            tp_group=tp_group,
            strategy=strategy,
            share=share,
        )
        reshard(pol.model)
    return policies


def _tp_group(cfg: Config, vllm: bool, strategy: Strategy | None, rank: int):
    """This rank's tensor-parallel group of vLLM (None: one whole engine per process)."""
    tp = cfg.rollout.vllm_tensor_parallel_size
    if tp <= 1:
        return None
    if not (vllm and strategy is not None and strategy.dist.enabled):
        raise ConfigError(
            f"rollout.vllm_tensor_parallel_size={tp} spans processes of a torchrun/accelerate "
            "job with the vLLM engine; launch several processes, or set it to 1"
        )
    return make_tp_group(strategy.dist.world, rank, tp, timeout_min=cfg.train.dist_timeout_min)


def _trainable(
    cfg: Config,
    name: str,
    roles: tuple[str, ...],
    model_name: str,
    device: torch.device,
    *,
    bf16: bool,
    sharded: bool,
    vllm: bool,
    strategy: Strategy | None,
    agent: int | None,
) -> Policy:
    """One policy without its engine: the model loaded and prepared for training, its KL reference, the
    transformers engine's unsharded replica (sharded runs), and (unless frozen) optimizer and schedule."""
    m, t = cfg.model, cfg.train
    lora = LoraSpec(r=m.lora_r, alpha=m.lora_alpha, dropout=m.lora_dropout, fused=m.lora_fused)
    model, tok = load_model(model_name, dtype=m.dtype, device=device, lora=lora, seed=t.seed)
    set_training_dtypes(model, bf16=bf16, lora=m.lora_r > 0, sharded=sharded)
    if m.gradient_checkpointing:
        enable_checkpointing(model, m.checkpoint_layers)
    model.config.use_cache = False
    if t.compile:
        compile_decoder_layers(model)
    elif t.share_prefix:  # packs' attention per segment (compiled layers keep the dense mask)
        use_packed_attention(model)
    trained = t.update_agents in ("both", *roles)  # False: an agent train.update_agents freezes
    want_ref = cfg.algo.kl_coef > 0 and m.lora_r == 0 and trained  # a frozen agent has no KL term to compute
    served = model
    if sharded and not vllm:
        served = copy.deepcopy(model).eval().requires_grad_(False)  # the engine's unsharded replica
        if bf16 and device.type == "cuda":  # it only generates: half the memory, faster decoding
            served.to(torch.bfloat16)
    ref = None
    if sharded:
        skeleton = meta_copy(model) if want_ref else None  # the reference's structure, no weights
        strategy.prepare(model)
        if skeleton is not None:
            ref = sharded_copy(model, skeleton, strategy)
    elif want_ref:
        ref = copy.deepcopy(model).eval().requires_grad_(False)
    # a frozen agent (separate weights) has no optimizer state
    opt, sched = _optimizer(model, t, agent) if trained else (None, None)
    return Policy(name, roles, model, tok, opt, sched, None, ref, served if served is not model else None)


def _engine(cfg: Config, pol: Policy, seed: int, *, rank: int, engine_factory, tp_group, strategy, share: float | None):
    """The policy's generation engine (``share``: this engine's ``gpu_memory_utilization``, None = the
    configured one)."""
    tp = cfg.rollout.vllm_tensor_parallel_size
    engine_seed = seed + 7919 * (rank // tp)  # the ranks of one engine sample alike
    model = pol.served if pol.served is not None else pol.model
    if engine_factory is not None:
        return engine_factory(model, pol.tokenizer, engine_seed)
    options = engine_options(cfg.rollout) | {"trainer_dtype": strategy.forward_dtype if strategy else None}
    if share is not None:
        options["gpu_memory_utilization"] = share
    multi_process = strategy is not None and strategy.dist.enabled  # vLLM joins the job's processes
    if tp_group is not None:
        inner = make_engine(
            model,
            pol.tokenizer,
            engine="vllm",
            seed=engine_seed,
            external_launcher=True,
            tensor_parallel_size=tp,
            **options,
        )
        return TPGroupEngine(inner, tp_group, pol.name)
    return make_engine(
        model, pol.tokenizer, engine=cfg.rollout.engine, seed=engine_seed, **options, external_launcher=multi_process
    )


def _optimizer(model, t, agent: int | None):
    """AdamW over ``model``'s trained parameters and its learning-rate schedule, laid over this policy's own
    updates (:func:`~rema.algos.schedule.own_steps`: ``agent`` 0 / 1 alternate under separate weights; None, every
    step trains it)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.lr, weight_decay=t.weight_decay)
    warmup, total = (own_steps(n, agent, switch_freq=t.switch_freq) for n in (t.warmup_steps, t.steps))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total, t.lr_schedule))


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


def resync_engines(policies: list[Policy], synced: list[Policy] = ()) -> dict[str, float]:
    """Sync the engines that lost their weights (vLLM's level-2 sleep) and were not synced since (``synced``:
    those just were): a frozen agent's, the inactive agent's under separate weights, a policy the cold start
    had no rows for. Without this they would generate from freed memory. Returns ``resync/<name>`` = 1 and the
    sync's metrics under ``resync/<name>/`` for each (a collective under FSDP: every process has slept alike)."""
    out: dict[str, float] = {}
    for pol in policies:
        if pol not in synced and pol.engine.needs_sync:
            out.update({f"resync/{pol.name}/{k}": v for k, v in sync_engine(pol).items()})
            out[f"resync/{pol.name}"] = 1.0
    return out


def active_policies(policies: list[Policy], step: int, *, switch_freq: int) -> list[Policy]:
    """Policies updated at ``step``: all with shared weights; one, alternating, with separate weights; only
    the one with an optimizer when the other agent is frozen (``train.update_agents``)."""
    if len(policies) == 1:
        return policies
    if any(p.optimizer is None for p in policies):
        return [p for p in policies if p.optimizer is not None]
    which = ("mta", "ra")[0 if updates_agent(step, 0, switch_freq=switch_freq) else 1]
    return [p for p in policies if p.name == which]
