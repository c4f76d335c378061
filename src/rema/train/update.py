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
from dataclasses import dataclass

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
    sum_ = strategy.sum_ if strategy is not None else (lambda t: t)
    n = len(rows)
    trained = [i for i in range(n) if agents is None or rows.agent[i] in agents]  # rows in the loss
    full_mask = pad(rows.mask, 0, torch.float32)  # (N, T_max)
    full_turns = pad(rows.turn_ids, -1, torch.long)  # (N, T_max)
    need_ref = algo.kl_coef > 0
    kl_tok = None
    if need_ref and algo.kl_in_reward:  # REINFORCE++ style: -kl_coef * (logπ - logπ_ref) on every token
        cur = fwd.per_row(lambda b: fwd.logp(model, b)[0], model, rows, pad_id, strategy)
        ref_full = fwd.per_row(lambda b: fwd.ref_logp(model, ref, b), model, rows, pad_id, strategy)
        kl_tok = kl_k1(cur, ref_full, full_mask)
    estimator = get_advantage_estimator(algo.advantage)
    adv, adv_stats = estimator(torch.tensor(rows.reward, dtype=torch.float32), group_ids(rows), full_mask,
                               full_turns, eps=algo.adv_eps, gamma=algo.gamma, kl=kl_tok,
                               kl_coef=algo.kl_coef if kl_tok is not None else 0.0,
                               all_reduce=strategy.sum_ if strategy is not None and strategy.dist.enabled else None)

    single_pass = train.ppo_epochs == 1 and train.mini_batches == 1
    source = "sampler" if not train.recompute_old_logp else ("same_forward" if single_pass else "recomputed")
    old_full = None  # (N, T_max) π_old log-probs, or None: the same forward's, detached
    if source == "recomputed":
        old_full = fwd.per_row(lambda b: fwd.logp(model, b)[0], model, rows, pad_id, strategy,
                               index=trained if len(trained) < n else None)
    elif source == "sampler":
        old_full = pad(rows.sampler_logp, 0.0, torch.float32)

    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(train.seed * 1_000_003 + step)
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    n_opt, skipped, grad_norms = 0, 0, []
    first_diff = None
    tokens_trained = 0
    trim = train.malloc_mmap_threshold_mb > 0 and fwd.device.type == "cpu"
    t_start = time.perf_counter()
    together = strategy is not None and strategy.dist.enabled  # other processes wait on our collectives
    model.train()
    for _ in range(train.ppo_epochs):
        perm = [trained[i] for i in torch.randperm(len(trained), generator=gen).tolist()]
        for chunk in range(train.mini_batches):
            mb = perm[chunk * len(perm) // train.mini_batches:(chunk + 1) * len(perm) // train.mini_batches]
            if not mb and not together:
                continue
            # the global unit count: every process's micro-batches are weighted against the whole batch
            total = int(sum_(torch.tensor(float(count_units(full_mask[mb], full_turns[mb], algo.agg)))))
            finite = True
            plan = list(fwd.micro_batches(model, rows, mb, pad_id)) if mb else []
            for r in range(strategy.rounds(len(plan)) if strategy is not None else len(plan)):
                if r >= len(plan):  # a sharded forward is collective: as many as the busiest process, weight 0
                    _, b = plan[-1] if plan else next(fwd.micro_batches(model, rows, [0], pad_id))
                    (fwd.logp(model, b)[0].sum() * 0.0).backward()
                    continue
                idx, b = plan[r]
                width = b["input_ids"].shape[1]
                mask, turns = b["mask"].to(fwd.device), b["turn_ids"].to(fwd.device)
                logp, entropy = fwd.logp(model, b, with_entropy=True)
                old = logp.detach() if old_full is None else old_full[idx, :width].to(fwd.device)
                loss, st = policy_loss(logp, old, adv[idx, :width].to(fwd.device), mask, turns,
                                       ratio_level=algo.ratio_level, ratio_mean=algo.ratio_mean, agg=algo.agg,
                                       clip_eps=algo.clip_eps, clip_eps_high=algo.clip_eps_high,
                                       dual_clip=algo.dual_clip, log_ratio_clamp=algo.log_ratio_clamp)
                st = {f"stats/{k}": float(v) for k, v in st.items() if not k.startswith("num_")}
                st["loss/policy"] = float(loss.detach())
                ent = aggregate(entropy, mask, algo.agg, turns)
                st["stats/entropy"] = float(ent.detach())
                if algo.entropy_coef > 0:
                    loss = loss - algo.entropy_coef * ent
                if need_ref and not algo.kl_in_reward:
                    kl = aggregate(kl_k3(logp, fwd.ref_logp(model, ref, b).to(fwd.device), mask), mask, algo.agg, turns)
                    loss = loss + algo.kl_coef * kl
                    st["stats/kl"] = float(kl.detach())
                if first_diff is None:
                    sampler = b["sampler_logp"].to(fwd.device)
                    first_diff = float(((logp.detach() - sampler).abs() * mask).sum() / mask.sum().clamp(min=1))
                w = count_units(b["mask"], b["turn_ids"], algo.agg) / max(total, 1)
                if not torch.isfinite(loss):
                    finite = False
                    continue
                (loss * w).backward()
                if trim:  # the next micro-batch's activations are laid out afresh, not around old holes
                    release_freed_memory()
                tokens_trained += int(b["attention_mask"].sum())
                for k, v in st.items():
                    sums[k] = sums.get(k, 0.0) + v * w
                    weights[k] = weights.get(k, 0.0) + w
            for p in params:  # processes without rows still join the gradient sum
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            if strategy is not None:
                strategy.reduce_grads_(params)
            finite = bool(sum_(torch.tensor(float(not finite))) == 0)
            grad_norm = strategy.clip_grad_norm_(params, train.grad_clip) if strategy is not None else (
                float(torch.nn.utils.clip_grad_norm_(params, train.grad_clip)) if params else 0.0)
            if finite and math.isfinite(grad_norm):
                optimizer.step()
                n_opt += 1
                grad_norms.append(grad_norm)
            else:
                skipped += 1
            optimizer.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - t_start
    out = {k: sums[k] / weights[k] for k in sums if weights[k] > 0}
    out.update({f"adv/{k}": float(v) for k, v in adv_stats.items()})
    out.update({
        "stats/grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else float("nan"),
        "stats/optimizer_steps": float(n_opt), "stats/skipped_updates": float(skipped),
        "check/old_logp_source": float(OLD_LOGP_SOURCES[source]),
        "check/update_bf16": float(fwd.bf16),
        "check/sampler_logp_abs_diff": first_diff if first_diff is not None else float("nan"),
        "perf/update_tokens_per_s": tokens_trained / max(elapsed, 1e-9),
        "train/rows": float(sum_(torch.tensor(float(len(trained))))),  # global count
    })
    return out
