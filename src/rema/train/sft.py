"""The cold start (docs/design.md §7): supervised fine-tuning on dialogues before RL, loss on each role's own messages.

``rema train`` runs it before the first RL step when ``sft.cold_start`` is on; ``rema sft`` runs only it and
exports the model. Dialogues come from a JSONL file, from the model itself (``sft.data: self``, see
:mod:`rema.data.dialogues`) or, for synthetic arithmetic, from a program teacher (``sft.data: teacher``, see
:mod:`rema.data.teacher`). Each dialogue is replayed through the rollout protocol
(:func:`rema.rollout.scripted.replay`), so its rows have exactly the token layout RL trains on; the loss is
the token-mean NLL (:func:`rema.algos.sft_nll`) of the tokens each role wrote, end-of-turn tokens included
(the model learns where its messages stop).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..algos import sft_nll
from ..config import Config, ConfigError
from ..data.dialogues import Dialogue, DialogueError, dialogues_from_episodes, load_dialogues, save_dialogues
from ..data.teacher import cold_start_questions, teacher_dialogues
from ..preflight import fit_dialogues
from ..prompts import PromptSet
from ..rewards.tasks import get_task
from ..rollout import rollout
from ..rollout.engine import Engine, release_memory
from ..rollout.scripted import replay
from ..runtime.cold_starts import cold_start_key, sft_seed
from .batch import Rows, build_rows, collate, micro_batches
from .distributed import Dist
from .logprobs import token_logprobs
from .memory import release_freed_memory, update_heap
from .policy import Policy, resync_engines, sync_engine
from .sft_cache import through_cache
from .strategy import Strategy

if TYPE_CHECKING:
    from rich.console import Console

Bars = Callable[[str], AbstractContextManager[Callable[..., None]]]
"""``bars(label)``: a progress bar as a context that yields ``update(done, total, text="")`` (the trainer's
:meth:`~rema.train.trainer.Trainer.progress`)."""


def cold_start(
    cfg: Config,
    policies: Sequence[Policy],
    *,
    roles: tuple[str, ...],
    prompts: PromptSet,
    train_problems: Sequence,
    engines: dict[str, Engine],
    dist: Dist,
    strategy: Strategy,
    device: torch.device,
    bf16: bool,
    run_dir: Path,
    console: Console,
    bars: Bars,
    should_stop: Callable[[], bool],
    correctness_fn: Callable | None = None,
) -> dict[str, float]:
    """The cold start of a run: supervised fine-tuning of each policy on ``sft.data`` (a dialogue file, or
    ``self``: the model's own correct episodes, sampled from ``train_problems`` with ``engines``) before RL.

    ``roles`` are the method's roles (each policy trains on its own); ``dist`` and ``strategy`` the run's
    processes and how they share the update (data are sampled per process and gathered); ``device`` and
    ``bf16`` where and how the update runs; ``bars(label)`` opens a progress bar (a context yielding
    ``update(done, total, text)``); ``should_stop()`` is polled between SFT steps (Ctrl-C);
    ``correctness_fn``: a custom grader, which ``sft.data=self`` refuses. The dialogues are saved to
    ``<run_dir>/cold_start_dialogues.jsonl``; the engines get the tuned weights. Returns ``sft/*`` metrics."""

    def train() -> dict[str, float]:
        t0 = time.perf_counter()
        dialogues, stats = _dialogues(cfg, train_problems, engines, prompts, dist, bars, correctness_fn)
        if cfg.sft.over_limit == "truncate":  # ("refuse": a file's or the teacher's were checked before any load)
            dialogues = _cut_to_limits(dialogues, cfg, prompts, policies[0].tokenizer, stats)
        if dist.is_main:
            save_dialogues(dialogues, run_dir / "cold_start_dialogues.jsonl")
        source = f"from {cfg.sft.data}"
        if "episodes" in stats:
            right = int(stats["with_correct_answer"])
            source = f"from {int(stats['episodes'])} sampled episodes ({right} with a correct answer)"
        console.print(f"cold start: {len(dialogues)} dialogues {source}")
        t1 = time.perf_counter()
        out = {f"sft/data/{k}": float(v) for k, v in stats.items()}
        out.update(
            _fine_tune(cfg, policies, dialogues, roles, prompts, strategy, device, bf16, console, bars, should_stop)
        )
        release_freed_memory()
        return out | {"sft/time_data": t1 - t0, "sft/time_train": time.perf_counter() - t1}

    if not cfg.sft.cache or dist.world > 1:
        return train()
    return through_cache(Path(cfg.sft.cache) / cold_start_key(cfg), policies, run_dir, console, train, should_stop)


def _dialogues(
    cfg: Config,
    train_problems: Sequence,
    engines: dict[str, Engine],
    prompts: PromptSet,
    dist: Dist,
    bars: Bars,
    correctness_fn: Callable | None,
) -> tuple[list[Dialogue], dict[str, float]]:
    """The cold start's dialogues and their counts, from ``sft.data``: the program teacher, the model's own
    correct episodes (sampled on every process and gathered), or a dialogue file."""
    s = cfg.sft
    if s.data == "teacher":  # exact dialogues from the synthetic problems' expressions (rema.data.teacher)
        return teacher_dialogues(cold_start_questions(cfg, train_problems), cfg)
    if s.data != "self":
        two_agents, multi = prompts.mta is not None, cfg.rollout.mode == "multi_turn"
        dialogues = load_dialogues(s.data, two_agents=two_agents, multi_turn=multi, max_turns=cfg.rollout.max_turns)
        return dialogues, {"dialogues": float(len(dialogues))}
    if correctness_fn is not None:
        raise ConfigError(
            "sft.data=self keeps episodes the task's grader accepts (math answers, judge "
            "verdicts), not a custom correctness function's; give sft.data a dialogue file instead"
        )
    problems = cold_start_questions(cfg, train_problems)
    with bars("cold start: sampling") as progress:
        dialogues, stats = self_dialogues(dist.shard(problems), engines, prompts, cfg, on_progress=progress)
    dialogues = [d for part in dist.gather(dialogues) for d in part]
    stats = {k: sum(st[k] for st in dist.gather(stats)) for k in stats}
    if not dialogues:
        raise RuntimeError(
            f"cold start: none of the {int(stats['episodes'])} sampled episodes gave a dialogue "
            f"({int(stats['with_correct_answer'])} had a correct answer); sample more (sft.questions, "
            "sft.samples), use easier questions (data.train), or give sft.data a dialogue file"
        )
    return dialogues, stats


def _fine_tune(
    cfg: Config,
    policies: Sequence[Policy],
    dialogues: list[Dialogue],
    roles: tuple[str, ...],
    prompts: PromptSet,
    strategy: Strategy,
    device: torch.device,
    bf16: bool,
    console: Console,
    bars: Bars,
    should_stop: Callable[[], bool],
) -> dict[str, float]:
    """Fine-tune each policy on its roles' messages of ``dialogues`` (a fresh AdamW each), then give every
    engine its weights; returns ``sft/[<policy>/]*`` metrics."""
    s, out, synced = cfg.sft, {}, []
    for pol in policies:
        rows = dialogue_rows(dialogues, cfg, prompts, pol.tokenizer, tuple(r for r in pol.roles if r in roles))
        if not len(rows):
            continue
        params = [p for p in pol.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=cfg.train.weight_decay)
        with bars(f"cold start: SFT ({pol.name})") as progress, update_heap(cfg.train.malloc_mmap_threshold_mb, device):
            result = sft_train(
                pol.model,
                rows,
                optimizer,
                epochs=s.epochs,
                batch_dialogues=s.batch_dialogues,
                micro_batch_tokens=cfg.train.micro_batch_tokens,
                pad_id=pol.tokenizer.pad_token_id,
                device=device,
                bf16=bf16,
                grad_clip=cfg.train.grad_clip,
                seed=sft_seed(cfg),
                strategy=strategy,
                on_step=lambda i, n, loss: progress(i, n, f"loss {loss:.3f}"),
                should_stop=should_stop,
            )
        del optimizer
        sync = sync_engine(pol)
        synced.append(pol)
        tag = "" if pol.name == "shared" else f"{pol.name}/"
        out.update({k.replace("sft/", f"sft/{tag}", 1): v for k, v in result.items()})
        out.update({f"sft/{tag}sync/{k}": v for k, v in sync.items()})
        console.print(
            f"cold start ({pol.name}): NLL {result['sft/loss_first']:.3f} -> "
            f"{result['sft/loss_last_epoch']:.3f} (last epoch) in {int(result['sft/steps'])} steps"
        )
    out.update(resync_engines(policies, synced=synced))  # a policy without rows, asleep at level 2
    return out


def _cut_to_limits(dialogues: list[Dialogue], cfg: Config, prompts: PromptSet, tokenizer, stats: dict) -> list:
    """``sft.over_limit=truncate``: the dialogues cut to what RL could reproduce (:func:`rema.preflight.fit_dialogues`),
    the counts added to ``stats``; none left is an error."""
    dialogues, fit = fit_dialogues(dialogues, cfg.rollout, prompts, tokenizer, over_limit="truncate")
    stats.update(fit)
    if not dialogues:
        raise DialogueError(
            f"cold start: no dialogue of sft.data={cfg.sft.data} fits the rollout limits even cut "
            "(rollout.max_context_tokens, rollout.max_tokens_per_turn); raise them"
        )
    return dialogues


def self_dialogues(
    problems: Sequence,
    engines: dict,
    prompts: PromptSet,
    cfg: Config,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Dialogue], dict[str, float]]:
    """Sample ``sft.samples`` episodes of each problem with the current model and keep the correct ones as
    cold-start dialogues; returns ``(dialogues, stats)`` (stats as in ``dialogues_from_episodes``). Correct is
    the verdict of ``rollout.task``'s grader (``rema.rewards.tasks``: the math verifier, for ``judge`` a last
    ``[[A]]``/``[[B]]`` equal to the label)."""
    s, r = cfg.sft, cfg.rollout
    rcfg = dataclasses.replace(r, temperature=r.temperature if s.temperature is None else s.temperature)
    episodes = rollout(problems, rcfg, engines, prompts, samples_per_question=s.samples, on_progress=on_progress)
    release_memory(engines)  # fine-tuning comes next: no KV cache needed until the next rollout

    def grade(responses: list[str], golds: list[str]) -> list[bool]:
        return [parts["correct"] >= 1.0 for _, parts, _ in get_task(r.task)(responses, golds, cfg.reward)]

    return dialogues_from_episodes(
        episodes,
        grade,
        two_agents=prompts.mta is not None,
        multi_turn=r.mode == "multi_turn",
        max_turns=r.max_turns,
        max_per_question=s.max_per_question,
        task=r.task,
    )


def dialogue_rows(
    dialogues: Sequence[Dialogue], cfg: Config, prompts: PromptSet, tokenizer, roles: tuple[str, ...]
) -> Rows:
    """Training rows of ``roles`` for every dialogue (``rows.episode_index`` = the dialogue's index)."""
    return build_rows([replay(d, cfg.rollout, prompts, tokenizer) for d in dialogues], roles)


def sft_train(
    model,
    rows: Rows,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    batch_dialogues: int,
    micro_batch_tokens: int,
    pad_id: int,
    device: torch.device,
    bf16: bool = False,
    grad_clip: float = 1.0,
    seed: int = 0,
    strategy=None,
    on_step: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, float]:
    """Fine-tune ``model`` on ``rows``: shuffled batches of ``batch_dialogues`` dialogues, token-mean NLL.

    Under data parallelism (a ``strategy`` over several ranks) every rank holds all rows and takes its share of
    each batch's dialogues; gradients are summed and the loss is normalised by the global token count.
    ``on_step(step, total, loss)`` is called after each optimizer step; ``should_stop()`` is polled between
    steps. Returns the first and last step's loss, the mean over the last epoch, steps and tokens/s.
    """
    rank, world = (strategy.dist.rank, strategy.dist.world) if strategy is not None else (0, 1)
    dialogue_ids = sorted(set(rows.episode_index))
    by_dialogue: dict[int, list[int]] = {}
    for i, d in enumerate(rows.episode_index):
        by_dialogue.setdefault(d, []).append(i)
    params = [p for p in model.parameters() if p.requires_grad]
    per_epoch = math.ceil(len(dialogue_ids) / batch_dialogues)
    total_steps = epochs * per_epoch
    losses: list[float] = []
    tokens, t0, step = 0, time.perf_counter(), 0
    rng = random.Random(seed)
    model.train()
    for _ in range(epochs):
        order = dialogue_ids[:]
        rng.shuffle(order)
        for b in range(0, len(order), batch_dialogues):
            if should_stop():
                return _summary(losses, step, per_epoch, tokens, t0, stopped=True)
            mine = [i for d in order[b : b + batch_dialogues][rank::world] for i in by_dialogue[d]]
            loss_sum, n = _accumulate(model, rows, mine, micro_batch_tokens, pad_id, device, bf16, strategy)
            tokens += n
            loss_sum = _optimizer_step(optimizer, params, loss_sum, grad_clip, strategy)
            losses.append(loss_sum)
            step += 1
            if on_step is not None:
                on_step(step, total_steps, loss_sum)
    return _summary(losses, step, per_epoch, tokens, t0)


def _accumulate(
    model, rows: Rows, mine: list[int], micro_batch_tokens: int, pad_id: int, device: torch.device, bf16: bool, strategy
) -> tuple[float, int]:
    """Backward of the token-mean NLL over this process's rows ``mine`` of one batch, micro-batch by micro-batch
    (normalised by the batch's global token count; a process with fewer micro-batches runs zero-weighted ones so
    that a sharded forward stays collective). Returns this process's loss sum and the tokens it read."""
    n_tokens = n_local = sum(sum(rows.mask[i]) for i in mine)
    if strategy is not None:
        n_tokens = int(strategy.sum_value(n_local))
    loss_sum, tokens = 0.0, 0
    plan = list(micro_batches([rows.lengths[i] for i in mine], micro_batch_tokens)) if mine else []
    for r in range(strategy.rounds(len(plan)) if strategy is not None else len(plan)):
        padding = r >= len(plan)  # a sharded forward is collective: match the busiest process
        micro = plan[min(r, len(plan) - 1)] if plan else [0]
        batch = collate(rows, [mine[j] for j in micro] if plan else [0], pad_id)
        mask = batch["mask"].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logp, _ = token_logprobs(
                model, batch["input_ids"].to(device), batch["attention_mask"].to(device), positions=mask
            )
        loss = sft_nll(logp, mask, n_tokens) * (0.0 if padding else 1.0)
        loss.backward()
        if padding:
            continue
        loss_sum += float(loss.detach())
        tokens += int(batch["attention_mask"].sum())
    return loss_sum, tokens


def _optimizer_step(
    optimizer: torch.optim.Optimizer, params: list, loss_sum: float, grad_clip: float, strategy
) -> float:
    """Sum the processes' gradients, clip and step; a non-finite loss (summed over processes) skips the step.
    Returns the loss summed over processes."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if strategy is not None:
        strategy.reduce_grads_(params)
        loss_sum = strategy.sum_value(loss_sum)
    if math.isfinite(loss_sum):
        if strategy is not None:
            strategy.clip_grad_norm_(params, grad_clip)
        else:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum


def _summary(losses: list[float], steps: int, per_epoch: int, tokens: int, t0: float, *, stopped: bool = False) -> dict:
    last_epoch = losses[-per_epoch:] if losses else []
    return {
        "sft/loss_first": losses[0] if losses else float("nan"),
        "sft/loss_last": losses[-1] if losses else float("nan"),
        "sft/loss_last_epoch": sum(last_epoch) / len(last_epoch) if last_epoch else float("nan"),
        "sft/steps": float(steps),
        "sft/stopped": float(stopped),
        "sft/tokens_per_s": tokens / max(time.perf_counter() - t0, 1e-9),
    }
