"""The policy update: advantages, then epochs × mini-batches × micro-batches of the policy loss, each
mini-batch ending in one optimizer step. The trainer, the tests and ``bench/update_speed.py`` all call
:func:`update_policy`; the math it composes lives in :mod:`rema.algos`.

How the update departs from / chooses among the paper and the authors' code (https://github.com/ziyuwan/ReMA-public;
docs/design.md §5 and §9):

1. Rows are (episode, agent) chat views grown in token ids: the update scores exactly the sampled ids.
2. π_old: with one epoch and one mini-batch the policy has not moved when the loss is computed, so
   π_old = π_θ.detach() from the same forward (provably equal, no extra pass; logged as
   ``check/old_logp_source = 0``). With several epochs or mini-batches π_old is recomputed under the
   training forward before the first optimizer step (``1``), or taken from the sampler if
   ``train.recompute_old_logp=false`` (``2``). ``check/sampler_logp_abs_diff`` compares the sampler's
   log-probs with the trainer's on the first micro-batch — a silent token or weight mismatch shows here.
3. Micro-batches are weighted by their share of the aggregation units, so gradient accumulation gives the
   gradient of the loss aggregated over the whole mini-batch, for every aggregation mode.
4. Data parallel: each process holds whole questions of the global batch; the weights above use the
   *global* unit count and gradients are summed over processes, so N processes make the update one
   process makes on the global batch. Batch-wide advantage statistics (REINFORCE++) use global moments.
5. A non-finite loss or gradient skips that optimizer step (``stats/skipped_updates``); the trainer stops
   after ``train.nan_patience`` steps in a row without a good one.
6. A frozen agent under shared weights (``train.update_agents``, the paper's RL under a fixed MTA): advantages
   are computed on *all* rows first, then only the updated agents' rows enter the loss. GRPO groups are per
   (question, agent), so they are whole either way; REINFORCE++ whitens over both agents' tokens exactly as
   with ``both``: the trained agent's advantages are those it would get if both agents were trained.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from ..algos import aggregate, get_advantage_estimator, kl_k1, kl_k3, policy_loss
from ..config import AlgoConfig, TrainConfig
from ..models import linear_per_attention
from .batch import Rows, collate, count_units, group_ids, pad, plan_micro_batches
from .logprobs import token_logprobs
from .memory import release_freed_memory
from .packed_attention import NAME as PACKED_ATTENTION
from .strategy import Strategy

OLD_LOGP_SOURCES = {"same_forward": 0, "recomputed": 1, "sampler": 2}


@dataclass(frozen=True)
class Forward:
    """How this process turns rows into per-token log-probs: where, in which precision, in which pieces."""

    device: torch.device
    bf16: bool = False
    """Compute under bf16 autocast (the weights keep their own dtype)."""
    temperature: float = 1.0
    """The temperature the rows were sampled at: log-probs are those of the tempered distribution."""
    entropy_grad: bool = False
    """Let gradients flow through the entropy (only an entropy bonus needs them)."""
    micro_batch_tokens: int = 8192
    """Padded tokens per micro-batch (``train.micro_batch_tokens``)."""
    share_prefix: bool = True
    """Pack a group's rows around their common prompt where the attention allows (``train.share_prefix``)."""

    def logp(self, model, batch: dict, *, with_entropy: bool = False):
        """``(logp (B, T), entropy (B, T) or None)`` of the batch's tokens under ``model``."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            pack = ({k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch["pack"].items()}
                    if "pack" in batch else None)
            return token_logprobs(model, batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                                  positions=batch["mask"].to(self.device), pack=pack, temperature=self.temperature,
                                  with_entropy=with_entropy, entropy_grad=self.entropy_grad)

    def micro_batches(self, model, rows: Rows, index: list[int], pad_id: int):
        """``(row indices, batch)`` per micro-batch of ``index``'s rows, packed around shared prefixes where
        ``share_prefix`` and the model's attention implementation allow."""
        impl = getattr(model.config, "_attn_implementation", None)
        share = self.share_prefix and impl in ("sdpa", "eager", PACKED_ATTENTION)
        # per-segment attention costs what the unpacked rows' would: a pack always pays, up to the budget
        ratio = math.inf if impl == PACKED_ATTENTION else linear_per_attention(model)
        for units in plan_micro_batches(rows, index, self.micro_batch_tokens, share_prefix=share,
                                        linear_per_attention=ratio):
            idx = [i for u in units for i in u]
            yield idx, collate(rows, idx, pad_id, units=units, attn_impl=impl)

    @torch.no_grad()
    def per_row(self, fn, model, rows: Rows, pad_id: int, strategy: Strategy | None = None,
                index: list[int] | None = None) -> torch.Tensor:
        """``fn(batch) -> (B, T)`` over the micro-batches of ``index``'s rows (None: all), scattered into an
        ``(N, T_max)`` tensor, 0 on other rows (a sharded model runs as many forwards as the busiest process, the
        extra ones discarded)."""
        out = torch.zeros((len(rows), max(rows.lengths)))
        plan = list(self.micro_batches(model, rows, list(range(len(rows))) if index is None else index, pad_id))
        for r in range(strategy.rounds(len(plan)) if strategy is not None else len(plan)):
            idx, b = plan[min(r, len(plan) - 1)] if plan else next(self.micro_batches(model, rows, [0], pad_id))
            result = fn(b)
            if r < len(plan):
                out[idx, :b["input_ids"].shape[1]] = result.float().cpu()
        return out

    @torch.no_grad()
    def ref_logp(self, model, ref, batch: dict) -> torch.Tensor:
        """Log-probs under the frozen KL reference: ``ref``, or (LoRA) ``model`` with its adapter off."""
        if ref is not None:
            return self.logp(ref, batch)[0]
        with model.disable_adapter():
            return self.logp(model, batch)[0]


@dataclass
class _Tally:
    """What the update accumulates over its micro-batches and optimizer steps (owned by one call)."""

    sums: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    optimizer_steps: int = 0
    skipped: int = 0
    grad_norms: list[float] = field(default_factory=list)
    first_diff: float | None = None
    """Sampler vs trainer mean |Δ log-prob| on the first micro-batch (note 2)."""
    tokens: int = 0

    def add(self, stats: dict[str, float], w: float) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * w
            self.weights[k] = self.weights.get(k, 0.0) + w


@dataclass
class _Batch:
    """One update's inputs, resolved once: the rows, their advantages and π_old, and how to compute."""

    model: torch.nn.Module
    rows: Rows
    algo: AlgoConfig
    fwd: Forward
    pad_id: int
    ref: torch.nn.Module | None
    strategy: Strategy | None
    full_mask: torch.Tensor  # (N, T_max), 1 = trained token
    full_turns: torch.Tensor  # (N, T_max), -1 = padding
    adv: torch.Tensor | None = None  # (N, T_max)
    old_full: torch.Tensor | None = None  # (N, T_max) π_old log-probs; None: the same forward's, detached

    def sum_value(self, value: float) -> float:
        """``value`` summed over the data-parallel processes (``value`` alone)."""
        return self.strategy.sum_value(value) if self.strategy is not None else float(value)

    def rounds(self, n: int) -> int:
        return self.strategy.rounds(n) if self.strategy is not None else n


def update_policy(model, optimizer: torch.optim.Optimizer, rows: Rows, *, algo: AlgoConfig, train: TrainConfig,
                  fwd: Forward, pad_id: int, step: int, ref=None, strategy: Strategy | None = None,
                  agents: tuple[str, ...] | None = None) -> dict[str, float]:
    """Advantages for ``rows`` (scored, one agent's view of one episode each), then ``train.ppo_epochs`` ×
    ``train.mini_batches`` optimizer steps of the policy loss. Returns the update's metrics (``loss/*``,
    ``stats/*``, ``adv/*``, ``check/*``); ``stats/optimizer_steps`` and ``stats/skipped_updates`` count the
    steps taken and skipped. ``ref`` is the frozen KL reference (None with LoRA: the adapter is turned off);
    ``step`` seeds the mini-batch shuffle; ``strategy`` joins the other data-parallel processes (None: alone).
    ``agents``: the agents whose rows enter the loss (None: all); advantages are computed on all rows first
    (note 6). ``train/rows`` counts the rows in the loss."""
    n = len(rows)
    trained = [i for i in range(n) if agents is None or rows.agent[i] in agents]  # rows in the loss
    batch = _Batch(model, rows, algo, fwd, pad_id, ref, strategy, full_mask=pad(rows.mask, 0, torch.float32),
                   full_turns=pad(rows.turn_ids, -1, torch.long))
    batch.adv, adv_stats = _advantages(batch)
    source = "sampler" if not train.recompute_old_logp else (
        "same_forward" if train.ppo_epochs == 1 and train.mini_batches == 1 else "recomputed")
    batch.old_full = _old_logp(batch, source, index=trained if len(trained) < n else None)
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(train.seed * 1_000_003 + step)
    tally = _Tally()
    trim = train.malloc_mmap_threshold_mb > 0 and fwd.device.type == "cpu"
    together = strategy is not None and strategy.dist.enabled  # other processes wait on our collectives
    t_start = time.perf_counter()
    model.train()
    for _ in range(train.ppo_epochs):
        perm = [trained[i] for i in torch.randperm(len(trained), generator=gen).tolist()]
        for chunk in range(train.mini_batches):
            mb = perm[chunk * len(perm) // train.mini_batches:(chunk + 1) * len(perm) // train.mini_batches]
            if not mb and not together:
                continue
            finite = _accumulate_gradients(batch, mb, tally, trim=trim)
            _optimizer_step(batch, optimizer, params, finite, tally, grad_clip=train.grad_clip)
    return _metrics(tally, adv_stats, source, fwd, elapsed=time.perf_counter() - t_start,
                    rows_in_loss=batch.sum_value(len(trained)))


def _advantages(b: _Batch) -> tuple[torch.Tensor, dict]:
    """``(advantages (N, T_max), their statistics)`` by ``algo.advantage``, with REINFORCE++'s KL-in-reward
    term computed first when asked for; batch-wide moments over every process."""
    algo, fwd, model = b.algo, b.fwd, b.model
    kl_tok = None
    if algo.kl_coef > 0 and algo.kl_in_reward:  # REINFORCE++ style: -kl_coef * (logπ - logπ_ref) on every token
        cur = fwd.per_row(lambda x: fwd.logp(model, x)[0], model, b.rows, b.pad_id, b.strategy)
        ref_full = fwd.per_row(lambda x: fwd.ref_logp(model, b.ref, x), model, b.rows, b.pad_id, b.strategy)
        kl_tok = kl_k1(cur, ref_full, b.full_mask)
    estimator = get_advantage_estimator(algo.advantage)
    together = b.strategy is not None and b.strategy.dist.enabled
    return estimator(torch.tensor(b.rows.reward, dtype=torch.float32), group_ids(b.rows), b.full_mask, b.full_turns,
                     eps=algo.adv_eps, gamma=algo.gamma, kl=kl_tok, kl_coef=algo.kl_coef if kl_tok is not None else 0.0,
                     all_reduce=b.strategy.sum_ if together else None)


def _old_logp(b: _Batch, source: str, index: list[int] | None) -> torch.Tensor | None:
    """π_old's log-probs (N, T_max) by ``source`` (note 2): recomputed over ``index``'s rows (None: all), the
    sampler's, or None (the loss's own forward, detached)."""
    if source == "recomputed":
        return b.fwd.per_row(lambda x: b.fwd.logp(b.model, x)[0], b.model, b.rows, b.pad_id, b.strategy, index=index)
    if source == "sampler":
        return pad(b.rows.sampler_logp, 0.0, torch.float32)
    return None


def _accumulate_gradients(b: _Batch, mb: list[int], tally: _Tally, *, trim: bool) -> bool:
    """Forward and backward over the micro-batches of mini-batch ``mb``, each weighted by its share of the
    global aggregation units (note 3); returns False when a micro-batch's loss was not finite (its backward is
    skipped)."""
    model, fwd, algo = b.model, b.fwd, b.algo
    # the global unit count: every process's micro-batches are weighted against the whole batch
    total = int(b.sum_value(count_units(b.full_mask[mb], b.full_turns[mb], algo.agg)))
    finite = True
    plan = list(fwd.micro_batches(model, b.rows, mb, b.pad_id)) if mb else []
    for r in range(b.rounds(len(plan))):
        if r >= len(plan):  # a sharded forward is collective: as many as the busiest process, weight 0
            _, x = plan[-1] if plan else next(fwd.micro_batches(model, b.rows, [0], b.pad_id))
            (fwd.logp(model, x)[0].sum() * 0.0).backward()
            continue
        idx, x = plan[r]
        loss, st = _micro_batch_loss(b, idx, x, tally)
        w = count_units(x["mask"], x["turn_ids"], algo.agg) / max(total, 1)
        if not torch.isfinite(loss):
            finite = False
            continue
        (loss * w).backward()
        if trim:  # the next micro-batch's activations are laid out afresh, not around old holes
            release_freed_memory()
        tally.tokens += int(x["attention_mask"].sum())
        tally.add(st, w)
    return finite


def _micro_batch_loss(b: _Batch, idx: list[int], x: dict, tally: _Tally) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one micro-batch (rows ``idx``, collated as ``x``): the policy loss, minus the entropy bonus,
    plus the KL term when it is a loss; and its statistics. The first micro-batch records the sampler's
    log-prob difference (note 2)."""
    algo, fwd, device = b.algo, b.fwd, b.fwd.device
    width = x["input_ids"].shape[1]
    mask, turns = x["mask"].to(device), x["turn_ids"].to(device)
    logp, entropy = fwd.logp(b.model, x, with_entropy=True)
    old = logp.detach() if b.old_full is None else b.old_full[idx, :width].to(device)
    loss, st = policy_loss(logp, old, b.adv[idx, :width].to(device), mask, turns,
                           ratio_level=algo.ratio_level, ratio_mean=algo.ratio_mean, agg=algo.agg,
                           clip_eps=algo.clip_eps, clip_eps_high=algo.clip_eps_high,
                           dual_clip=algo.dual_clip, log_ratio_clamp=algo.log_ratio_clamp)
    st = {f"stats/{k}": float(v) for k, v in st.items() if not k.startswith("num_")}
    st["loss/policy"] = float(loss.detach())
    ent = aggregate(entropy, mask, algo.agg, turns)
    st["stats/entropy"] = float(ent.detach())
    if algo.entropy_coef > 0:
        loss = loss - algo.entropy_coef * ent
    if algo.kl_coef > 0 and not algo.kl_in_reward:
        kl = aggregate(kl_k3(logp, fwd.ref_logp(b.model, b.ref, x).to(device), mask), mask, algo.agg, turns)
        loss = loss + algo.kl_coef * kl
        st["stats/kl"] = float(kl.detach())
    if tally.first_diff is None:
        sampler = x["sampler_logp"].to(device)
        tally.first_diff = float(((logp.detach() - sampler).abs() * mask).sum() / mask.sum().clamp(min=1))
    return loss, st


def _optimizer_step(b: _Batch, optimizer, params: list[torch.Tensor], finite: bool, tally: _Tally, *,
                    grad_clip: float) -> None:
    """Finish the mini-batch's gradients over processes, clip them, and step unless any process saw a
    non-finite loss or the norm is not finite (note 5); gradients are then dropped."""
    strategy = b.strategy
    for p in params:  # processes without rows still join the gradient sum
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if strategy is not None:
        strategy.reduce_grads_(params)
    finite = b.sum_value(float(not finite)) == 0
    grad_norm = strategy.clip_grad_norm_(params, grad_clip) if strategy is not None else (
        float(torch.nn.utils.clip_grad_norm_(params, grad_clip)) if params else 0.0)
    if finite and math.isfinite(grad_norm):
        optimizer.step()
        tally.optimizer_steps += 1
        tally.grad_norms.append(grad_norm)
    else:
        tally.skipped += 1
    optimizer.zero_grad(set_to_none=True)


def _metrics(tally: _Tally, adv_stats: dict, source: str, fwd: Forward, *, elapsed: float,
             rows_in_loss: float) -> dict[str, float]:
    """The update's metrics from what it accumulated."""
    out = {k: tally.sums[k] / tally.weights[k] for k in tally.sums if tally.weights[k] > 0}
    out.update({f"adv/{k}": float(v) for k, v in adv_stats.items()})
    out.update({
        "stats/grad_norm": sum(tally.grad_norms) / len(tally.grad_norms) if tally.grad_norms else float("nan"),
        "stats/optimizer_steps": float(tally.optimizer_steps), "stats/skipped_updates": float(tally.skipped),
        "check/old_logp_source": float(OLD_LOGP_SOURCES[source]),
        "check/update_bf16": float(fwd.bf16),
        "check/sampler_logp_abs_diff": tally.first_diff if tally.first_diff is not None else float("nan"),
        "perf/update_tokens_per_s": tally.tokens / max(elapsed, 1e-9),
        "train/rows": rows_in_loss,  # global count
    })
    return out
