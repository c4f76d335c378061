"""The RL training loop: rollout → reward → advantage → loss → step → log.

How this trainer departs from / chooses among the paper and the reference code:

1. Rows are (episode, agent) chat views grown in token ids: the update scores exactly the sampled ids.
2. Shared weights: one model, both roles' rows in one update. Separate weights: both models roll out
   every step, only one is updated, switching every ``train.switch_freq`` steps, MTA first (SPEC §3).
3. π_old: with one epoch and one mini-batch the policy has not moved when the loss is computed, so
   π_old = π_θ.detach() from the same forward (provably equal, no extra pass; logged as
   ``check/old_logp_source = 0``). With several epochs or mini-batches π_old is recomputed under the
   training forward before the first update (``1``), or taken from the sampler if
   ``train.recompute_old_logp=false`` (``2``). ``check/sampler_logp_abs_diff`` compares the sampler's
   log-probs with the trainer's on the first mini-batch — a silent token or weight mismatch shows here.
4. Micro-batches are weighted by their share of the aggregation units, so gradient accumulation gives the
   gradient of the loss aggregated over the whole mini-batch, for every aggregation mode.
5. Data parallel under ``accelerate launch``: each rank rolls out whole questions of the same global
   batch; losses are normalised by global unit counts and gradients summed, so N processes give the update
   of one process on the global batch (tested with two gloo processes). REINFORCE++ whitens with global
   moments. Only rank 0 writes.
6. A non-finite loss or gradient skips the optimizer step (logged); ``train.nan_patience`` in a row stops
   the run with an error. Ctrl-C finishes the current step, saves a checkpoint and exits; a second Ctrl-C
   aborts at once.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
import math
import random
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from .. import __version__
from ..algos import aggregate, get_advantage_estimator, kl_k1, kl_k3, policy_loss, reinforce_pp_returns
from ..config import Config, ConfigError, load_config, save_config
from ..data import ProblemSampler, load_problems, resolve_dataset
from ..data.dialogues import load_dialogues, save_dialogues
from ..models import (LoraSpec, compile_decoder_layers, describe, enable_checkpointing, export_model,
                      linear_per_attention, load_model, native_bf16, store_frozen_weights)
from ..prompts import get_prompt_set
from ..rollout import rollout
from ..rollout.engine import release_memory
from ..rollout.factory import engine_options, make_engine
from ..scoring import episode_metrics, run_eval, score_episodes
from .batch import Rows, build_rows, collate, count_units, group_ids, pad, plan_micro_batches
from .checkpoint import (latest_checkpoint, load_checkpoint, load_trainable_state, rng_state, save_checkpoint,
                         set_rng_state, trainable_state)
from .logprobs import token_logprobs
from .packed_attention import NAME as PACKED_ATTENTION, use_packed_attention
from .distributed import Dist, merge_metrics
from .metrics import MetricsLogger
from .sft import dialogue_rows, self_dialogues, sft_train

OLD_LOGP_SOURCES = {"same_forward": 0, "recomputed": 1, "sampler": 2}


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses or gradients."""


@dataclass
class Policy:
    """One set of trainable weights and everything attached to it."""

    name: str
    """``shared``, ``mta`` or ``ra``."""
    roles: tuple[str, ...]
    model: torch.nn.Module
    tokenizer: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    engine: object
    ref: torch.nn.Module | None
    """Frozen reference for KL (None: not needed, or LoRA, where the base with the adapter off is used)."""


def _device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GiB)."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 2**20 if sys.platform != "darwin" else kb / 2**30


def release_freed_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    glibc keeps most memory that torch frees on CPU: after an update the trainer process would hold its
    peak (4.5 GB measured in the demo) through the next rollout, while the engine needs the memory. It
    only releases pages that are already free."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


GLIBC_MMAP_THRESHOLD_MAX_MB = 32
"""glibc's ceiling for its self-raising mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``)."""


def set_malloc_mmap_threshold(mb: float) -> bool:
    """glibc: allocations of at least ``mb`` MiB get their own memory map (returned to the OS when freed);
    a fixed threshold also stops glibc from raising it. Returns whether it was set (no-op off glibc)."""
    if mb <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, int(mb * 2**20)))  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        return False


@contextmanager
def update_heap(mb: float, device: torch.device):
    """Within: ``train.malloc_mmap_threshold_mb`` (tensors of ``mb`` MiB or more mapped and unmapped on their
    own), with freed memory returned to the OS on the way in and out. After: the threshold at glibc's
    ceiling, where its own raising would put it, because generation wants the heap: vLLM's per-step tensors
    (12.6 MB of logits at 64 rows) mapped afresh each step cost 30% of rollout speed (measured: 192-209 vs
    287-292 tok/s, 64 rows of the embedded model). ``mb <= 0`` or a non-CPU device: the threshold is left alone."""
    active = mb > 0 and device.type == "cpu" and set_malloc_mmap_threshold(mb)
    release_freed_memory()
    try:
        yield
    finally:
        if active:
            set_malloc_mmap_threshold(GLIBC_MMAP_THRESHOLD_MAX_MB)
        release_freed_memory()


class PhasePeak:
    """Peak resident memory of this process per phase (Linux: ``VmHWM``, reset through ``clear_refs``)."""

    def __init__(self):
        self.ok = Path("/proc/self/clear_refs").exists()

    def reset(self) -> None:
        if self.ok:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts from the current RSS
            except OSError:
                self.ok = False

    def read_gb(self) -> float:
        """The peak since the last reset (GiB); NaN where the kernel does not say."""
        if self.ok:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
        return float("nan")


def children_rss_gb() -> float:
    """Resident memory of this process's children now (vLLM's engine processes; GiB, PSS where known)."""
    try:
        import psutil
    except ImportError:
        return float("nan")
    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            info = child.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            pass
    return total / 2**30


def _lr_lambda(warmup: int, total: int, schedule: str):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return f


def load_split(spec: str | None, cfg: Config, limit: int | None = None) -> list:
    """Problems for a data spec, honouring the config's field mapping and level filter."""
    if spec is None:
        return []
    d = cfg.data
    if (d.question_field or d.answer_field) and Path(spec).suffix in (".jsonl", ".json", ".parquet"):
        problems = load_problems(spec, question_field=d.question_field, answer_field=d.answer_field,
                                 data_dir=d.data_dir, limit=limit)
    else:
        problems = resolve_dataset(spec, d.data_dir, limit=limit)
    if d.levels:
        problems = [p for p in problems if p.meta.get("level") in set(d.levels)]
    if not problems:
        raise ValueError(f"data spec {spec!r} gave no problems (levels filter: {d.levels})")
    return problems


class Trainer:
    """Owns the models, optimizers, engines, data cursor and run directory of one training run."""

    def __init__(self, cfg: Config, run_dir: str | Path | None = None, *, resume: bool = False, console=None,
                 correctness_fn=None, prompts=None, engine_factory=None):
        """``engine_factory(model, tokenizer, seed) -> Engine`` replaces :func:`make_engine` (tests reuse one
        running vLLM engine across runs this way; the trainer syncs its weights into it after each update)."""
        from rich.console import Console

        self.cfg = cfg
        self.correctness_fn = correctness_fn
        self.engine_factory = engine_factory
        self.dist = Dist()
        self.console = console or Console(stderr=True, quiet=not self.dist.is_main)
        default_dir = f"runs/{cfg.log.name}-{datetime.now():%Y%m%d-%H%M%S}"
        self.run_dir = Path(self.dist.gather(str(run_dir or cfg.log.run_dir or default_dir))[0])
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.train.questions_per_step < self.dist.world:
            raise ValueError(f"train.questions_per_step={cfg.train.questions_per_step} is below the number of "
                             f"processes ({self.dist.world}): every rank needs at least one question")
        self.ckpt_root = self.run_dir / "checkpoints"
        self.step = 0
        self.nan_streak = 0
        self.episode_counter = 0
        self.started = False
        """Whether the step-0 work (cold start, first evaluation) is done; a checkpoint implies it is."""
        self._stop_requested = False
        seed = cfg.train.seed
        random.seed(seed)
        torch.manual_seed(seed)
        self.device = _device(cfg.model.device, self.dist.local_rank)
        self.bf16 = cfg.train.autocast == "bf16" or (cfg.train.autocast == "auto" and native_bf16(self.device))
        self.prompts = prompts or get_prompt_set(cfg.method_name)
        self.roles = ("mta", "ra") if self.prompts.mta is not None else ("ra",)
        self.policies = self._build_policies()
        self.train_problems = load_split(cfg.data.train, cfg)
        self.eval_problems = load_split(cfg.data.eval, cfg, limit=cfg.data.eval_limit) if cfg.data.eval else []
        self.sampler = ProblemSampler(self.train_problems, cfg.train.questions_per_step, seed=seed)
        resume_step = None
        if resume:
            ckpt = latest_checkpoint(self.ckpt_root)
            if ckpt is None:
                raise FileNotFoundError(f"--resume: no checkpoint in {self.ckpt_root}")
            self._restore(load_checkpoint(ckpt))
            resume_step = self.step
            self.console.print(f"resumed from {ckpt} (step {self.step})")
        elif self.dist.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
            meta = {"rema_version": __version__, "prompts": self.prompts.to_dict(), "argv": sys.argv,
                    "started": datetime.now().isoformat(timespec="seconds"), "device": str(self.device),
                    "models": {p.name: describe(p.model) for p in self.policies},
                    "engines": {p.name: type(p.engine).__name__ for p in self.policies},
                    "update_bf16_autocast": self.bf16}
            (self.run_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        self.logger = MetricsLogger(self.run_dir, tensorboard=cfg.log.tensorboard, wandb=cfg.log.wandb,
                                    name=cfg.log.name, config=cfg.to_dict(), resume_step=resume_step,
                                    enabled=self.dist.is_main)

    # ---------------------------------------------------------------------------------------------- setup

    def _build_policies(self) -> list[Policy]:
        cfg = self.cfg
        m = cfg.model
        lora = LoraSpec(r=m.lora_r, alpha=m.lora_alpha, dropout=m.lora_dropout, fused=m.lora_fused)
        if cfg.train.shared_weights:
            groups = [("shared", self.roles, m.name)]
        else:
            groups = [("mta", ("mta",), m.name), ("ra", ("ra",), m.ra_name or m.name)]
        policies = []
        for i, (name, roles, model_name) in enumerate(groups):
            model, tok = load_model(model_name, dtype=m.dtype, device=self.device, lora=lora, seed=cfg.train.seed)
            if self.bf16 and m.lora_r > 0:  # autocast rounds them to bf16 anyway (the embedding table aside)
                store_frozen_weights(model, torch.bfloat16)
            if m.gradient_checkpointing:
                enable_checkpointing(model, m.checkpoint_layers)
            model.config.use_cache = False
            if cfg.train.compile:
                compile_decoder_layers(model)
            elif cfg.train.share_prefix:  # packs' attention per segment (compiled layers keep the dense mask)
                use_packed_attention(model)
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, _lr_lambda(cfg.train.warmup_steps, cfg.train.steps, cfg.train.lr_schedule))
            ref = None
            if cfg.algo.kl_coef > 0 and m.lora_r == 0:
                ref = copy.deepcopy(model).eval().requires_grad_(False)
            engine_seed = cfg.train.seed * 1000 + i + 7919 * self.dist.rank
            if self.engine_factory is not None:
                engine = self.engine_factory(model, tok, engine_seed)
            else:
                engine = make_engine(model, tok, engine=cfg.rollout.engine, seed=engine_seed,
                                     **engine_options(cfg.rollout))
            policies.append(Policy(name, roles, model, tok, opt, sched, engine, ref))
        return policies

    def policy_of(self, role: str) -> Policy:
        return next(p for p in self.policies if role in p.roles)

    @property
    def engines(self) -> dict:
        return {role: self.policy_of(role).engine for role in self.roles}

    def active_policies(self, step: int) -> list[Policy]:
        """Policies updated at ``step``: all with shared weights; one, alternating, with separate weights."""
        if self.cfg.train.shared_weights:
            return self.policies
        which = ("mta", "ra")[(step // self.cfg.train.switch_freq) % 2]
        return [self.policy_of(which)]

    # ------------------------------------------------------------------------------------------- the loop

    def fit(self, max_steps: int | None = None) -> dict:
        """Train until ``train.steps`` (or ``max_steps`` more steps); returns the last metrics."""
        cfg = self.cfg
        end = cfg.train.steps if max_steps is None else min(cfg.train.steps, self.step + max_steps)
        engines = ", ".join(f"{p.name}: {p.engine.describe()}" for p in self.policies)
        update = "bf16 autocast" if self.bf16 else str(self.policies[0].model.dtype).replace("torch.", "")
        self.console.print(f"run dir {self.run_dir}; generation engine {engines}; update in {update}")
        with self.graceful_stop():
            return self._fit(end)

    def _fit(self, end: int) -> dict:
        """The step-0 work, then RL steps up to ``end``, evaluations, checkpoints, the export at the end."""
        cfg = self.cfg
        last: dict = {}
        try:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            if not self.started and not self.start():  # before the step bar: the cold start has bars of its own
                return last
            with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          TextColumn("{task.description}"), console=self.console,
                          disable=not (cfg.log.progress and self.dist.is_main)) as bar:
                task = bar.add_task("", total=cfg.train.steps, completed=self.step)
                while self.step < end and not self._stop_requested:
                    last = self.train_step()
                    self.step += 1
                    self._stop_requested = any(self.dist.gather(self._stop_requested))
                    if cfg.train.eval_every and self.eval_problems and (
                            self.step % cfg.train.eval_every == 0 or self.step == cfg.train.steps):
                        last.update(self._log_eval(self.step, log=False))
                    self.logger.log(self.step, last)
                    bar.update(task, completed=self.step, description=self._summary(last))
                    if not cfg.log.progress and self.dist.is_main:
                        self.console.print(f"step {self.step}: {self._summary(last)}")
                    if self.step % cfg.train.save_every == 0 or self.step == end or self._stop_requested:
                        self.save()
            if self.step >= cfg.train.steps and self.dist.is_main:
                self.export()
                self.print_before_after()
        finally:
            self.logger.close()
        if self._stop_requested:
            self.console.print(f"stopped at step {self.step}; resume with: rema train --resume {self.run_dir}")
        return last

    @contextmanager
    def graceful_stop(self):
        """While active, Ctrl-C or SIGTERM (a scheduler's, `kill`'s) asks the run to finish its step, save and
        exit (:meth:`_on_sigint`); the previous handlers come back afterwards."""
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_sigint)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self, *, cold_start: bool | None = None) -> bool:
        """Step-0 work: the cold start when configured (held-out evaluation before it, logged as
        ``base_eval/*``), then the held-out evaluation RL starts from (``eval/*`` at step 0). With a cold start a
        step-0 checkpoint follows, so a resumed run does not repeat it. Returns False when stopped (Ctrl-C)
        during the cold start; nothing is saved then."""
        cfg = self.cfg
        cold_start = cfg.sft.cold_start if cold_start is None else cold_start
        evaluate = bool(cfg.train.eval_every and self.eval_problems)
        record: dict = {}
        if cold_start:
            if evaluate:
                record.update(self._log_eval(0, log=False, prefix="base_eval"))
            record.update(self.cold_start())
            if self._stop_requested:
                self.console.print("[yellow]stopped during the cold start; nothing was saved: start the run again")
                return False
        if evaluate:
            record.update(self._log_eval(0, log=False))
        if record:
            self.logger.log(0, record)
        self.started = True
        if cold_start:
            self.save()
        return True

    def cold_start(self) -> dict:
        """Supervised fine-tuning on ``sft.data`` (a dialogue file, or ``self``: the model's own correct
        episodes) before RL; see :mod:`rema.train.sft`. Returns ``sft/*`` metrics."""
        cfg, s = self.cfg, self.cfg.sft
        two_agents, multi = self.prompts.mta is not None, cfg.rollout.mode == "multi_turn"
        t0 = time.perf_counter()
        if s.data == "self":
            if cfg.rollout.task != "math" or self.correctness_fn is not None:
                raise ConfigError("sft.data=self keeps episodes whose answer the math grader accepts: it needs "
                                  "rollout.task=math (and no custom correctness function); give sft.data a "
                                  "dialogue file instead")
            rng = random.Random(cfg.train.seed * 7919 + 17)
            problems = rng.sample(self.train_problems, min(s.questions, len(self.train_problems)))
            with self._progress("cold start: sampling") as progress:
                dialogues, stats = self_dialogues(self.dist.shard(problems), self.engines, self.prompts, cfg,
                                                  on_progress=progress)
            dialogues = [d for part in self.dist.gather(dialogues) for d in part]
            stats = {k: sum(st[k] for st in self.dist.gather(stats)) for k in stats}
            if not dialogues:
                raise RuntimeError(
                    f"cold start: none of the {int(stats['episodes'])} sampled episodes gave a dialogue "
                    f"({int(stats['with_correct_answer'])} had a correct answer); sample more (sft.questions, "
                    "sft.samples), use easier questions (data.train), or give sft.data a dialogue file")
        else:
            dialogues = load_dialogues(s.data, two_agents=two_agents, multi_turn=multi, max_turns=cfg.rollout.max_turns)
            stats = {"dialogues": float(len(dialogues))}
        if self.dist.is_main:
            save_dialogues(dialogues, self.run_dir / "cold_start_dialogues.jsonl")
        self.console.print(f"cold start: {len(dialogues)} dialogues"
                           + (f" from {int(stats['episodes'])} sampled episodes ({int(stats['with_correct_answer'])} "
                              "with a correct answer)" if "episodes" in stats else f" from {s.data}"))
        t1 = time.perf_counter()
        out = {f"sft/data/{k}": float(v) for k, v in stats.items()}
        for pol in self.policies:
            rows = dialogue_rows(dialogues, cfg, self.prompts, pol.tokenizer, tuple(r for r in pol.roles if r in self.roles))
            if not len(rows):
                continue
            params = [p for p in pol.model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=cfg.train.weight_decay)
            with self._progress(f"cold start: SFT ({pol.name})") as progress, \
                    update_heap(cfg.train.malloc_mmap_threshold_mb, self.device):
                result = sft_train(pol.model, rows, optimizer, epochs=s.epochs, batch_dialogues=s.batch_dialogues,
                                   micro_batch_tokens=cfg.train.micro_batch_tokens,
                                   pad_id=pol.tokenizer.pad_token_id, device=self.device, bf16=self.bf16,
                                   grad_clip=cfg.train.grad_clip, seed=cfg.train.seed, dist=self.dist,
                                   on_step=lambda i, n, loss: progress(i, n, f"loss {loss:.3f}"),
                                   should_stop=lambda: self._stop_requested)
            del optimizer
            sync = pol.engine.sync_weights(pol.model)
            tag = "" if pol.name == "shared" else f"{pol.name}/"
            out.update({k.replace("sft/", f"sft/{tag}", 1): v for k, v in result.items()})
            out.update({f"sft/{tag}sync/{k}": v for k, v in sync.items()})
            self.console.print(f"cold start ({pol.name}): NLL {result['sft/loss_first']:.3f} -> "
                               f"{result['sft/loss_last_epoch']:.3f} (last epoch) in {int(result['sft/steps'])} steps")
        release_freed_memory()
        out.update({"sft/time_data": t1 - t0, "sft/time_train": time.perf_counter() - t1})
        return out

    def _progress(self, label: str):
        """A context manager yielding ``update(done, total, text="")`` that drives a progress bar."""
        from contextlib import contextmanager

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        @contextmanager
        def bar():
            with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          TextColumn("{task.description}"), console=self.console,
                          disable=not (self.cfg.log.progress and self.dist.is_main)) as p:
                task = p.add_task("", total=None)
                yield lambda done, total, text="": p.update(task, completed=done, total=total, description=text)

        return bar()

    def _on_sigint(self, signum, frame) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        what = "Ctrl-C" if signum in (None, signal.SIGINT) else f"signal {signal.Signals(signum).name}"
        self.console.print(f"[yellow]{what}: finishing this step, then saving a checkpoint "
                           "(Ctrl-C again aborts without saving)[/yellow]")

    def close(self) -> None:
        """Stop the generation engines (vLLM's processes), release their memory, and leave the process group."""
        for p in self.policies:
            p.engine.close()
        self.dist.close()

    def train_step(self) -> dict:
        """One RL step: rollout → reward → advantage → update; returns the step's metrics."""
        cfg = self.cfg
        problems = self.dist.shard(self.sampler.next_batch())  # the same global batch on every rank
        phase_peak = PhasePeak()
        phase_peak.reset()
        t0 = time.perf_counter()
        episodes = rollout(problems, cfg.rollout, self.engines, self.prompts, first_episode_id=self.episode_counter)
        self.episode_counter += len(episodes)
        memory = {"perf/peak_rss_gb/rollout": phase_peak.read_gb(), "perf/engine_rss_gb": children_rss_gb()}
        memory.update({f"perf/{k}": v for k, v in release_memory(self.engines).items()})  # e.g. vLLM's KV pages
        t1 = time.perf_counter()
        phase_peak.reset()
        counters = score_episodes(episodes, cfg.reward, task=cfg.rollout.task, mode=cfg.rollout.mode,
                                  correctness_fn=self.correctness_fn)
        t2 = time.perf_counter()
        local = {**{f"train/{k}": v for k, v in episode_metrics(episodes).items()}, **counters}
        update_stats: dict[str, float] = {}
        sync_time = 0.0
        active = self.active_policies(self.step)
        for pol in active:
            roles = tuple(r for r in pol.roles if r in self.roles)
            rows = build_rows(episodes, roles)
            if len(rows):
                with update_heap(cfg.train.malloc_mmap_threshold_mb, self.device):  # freed memory goes back to
                    update_stats.update(self._update(pol, rows))                   # the OS, i.e. to vLLM's tenancy
            ts = time.perf_counter()
            update_stats.update({f"sync/{k}": v for k, v in pol.engine.sync_weights(pol.model).items()})
            sync_time += time.perf_counter() - ts
            pol.scheduler.step()
        release_freed_memory()
        t3 = time.perf_counter()
        gen_tokens = sum(len(t.token_ids) for ep in episodes for t in ep.turns)
        local.update(update_stats)
        metrics = merge_metrics(self.dist.gather(local), self.dist.gather(float(len(episodes))))
        metrics["train/episodes"] = float(sum(self.dist.gather(len(episodes))))
        metrics.update({
            "lr": active[0].scheduler.get_last_lr()[0],
            "train/active_agent": -1.0 if cfg.train.shared_weights else float(active[0].name == "ra"),
            "time/rollout": t1 - t0, "time/reward": t2 - t1, "time/update": t3 - t2 - sync_time,
            "time/sync": sync_time, "time/step": t3 - t0, "perf/peak_rss_gb": peak_rss_gb(),
            "perf/peak_rss_gb/update": phase_peak.read_gb(), **memory,
            "perf/tokens_per_s": gen_tokens / max(t1 - t0, 1e-9) * self.dist.world,
            "perf/generated_tokens": float(gen_tokens) * self.dist.world,
        })
        if cfg.train.sample_every and (self.step + 1) % cfg.train.sample_every == 0:
            self.logger.samples(self.step + 1, "train", episodes[:cfg.train.samples_to_log])
        return metrics

    # ----------------------------------------------------------------------------------------- the update

    def _logp(self, model, batch, *, with_entropy: bool = False):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            pack = ({k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch["pack"].items()}
                    if "pack" in batch else None)
            return token_logprobs(model, batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                                  positions=batch["mask"].to(self.device), pack=pack,
                                  temperature=self.cfg.rollout.temperature, with_entropy=with_entropy,
                                  entropy_grad=self.cfg.algo.entropy_coef > 0)

    @torch.no_grad()
    def _ref_logp(self, pol: Policy, batch) -> torch.Tensor:
        if pol.ref is not None:
            return self._logp(pol.ref, batch)[0]
        with pol.model.disable_adapter():  # LoRA: the base model is the reference
            return self._logp(pol.model, batch)[0]

    def _micro_batches(self, pol: Policy, rows: Rows, index: list[int]):
        """(row indices, batch) per micro-batch of ``index``'s rows, packed around shared prefixes where
        ``train.share_prefix`` and the attention implementation allow."""
        impl = getattr(pol.model.config, "_attn_implementation", None)
        share = self.cfg.train.share_prefix and impl in ("sdpa", "eager", PACKED_ATTENTION)
        # per-segment attention costs what the unpacked rows' would: a pack always pays, up to the budget
        ratio = math.inf if impl == PACKED_ATTENTION else linear_per_attention(pol.model)
        for units in plan_micro_batches(rows, index, self.cfg.train.micro_batch_tokens, share_prefix=share,
                                        linear_per_attention=ratio):
            idx = [i for u in units for i in u]
            yield idx, collate(rows, idx, pol.tokenizer.pad_token_id, units=units, attn_impl=impl)

    @torch.no_grad()
    def _per_row(self, fn, rows: Rows, pol: Policy) -> torch.Tensor:
        """Apply ``fn(batch) -> (B, T)`` over micro-batches and scatter into an (N, T_max) tensor."""
        out = torch.zeros((len(rows), max(rows.lengths)))
        for idx, b in self._micro_batches(pol, rows, list(range(len(rows)))):
            out[idx, :b["input_ids"].shape[1]] = fn(b).float().cpu()
        return out

    def _update(self, pol: Policy, rows: Rows) -> dict[str, float]:
        a, t = self.cfg.algo, self.cfg.train
        n = len(rows)
        full_mask = pad(rows.mask, 0, torch.float32)  # (N, T_max)
        full_turns = pad(rows.turn_ids, -1, torch.long)
        rewards = torch.tensor(rows.reward, dtype=torch.float32)
        need_ref = a.kl_coef > 0
        kl_tok = None
        if need_ref and a.kl_in_reward:  # REINFORCE++ style: -kl_coef * (logπ - logπ_ref) on every token
            cur = self._per_row(lambda b: self._logp(pol.model, b)[0], rows, pol)
            ref = self._per_row(lambda b: self._ref_logp(pol, b), rows, pol)
            kl_tok = kl_k1(cur, ref, full_mask)
        kl_coef = a.kl_coef if kl_tok is not None else 0.0
        if a.advantage == "reinforce_pp" and self.dist.enabled:  # whiten with the global batch's moments
            returns = reinforce_pp_returns(rewards, full_mask, full_turns, gamma=a.gamma, kl=kl_tok, kl_coef=kl_coef)
            moments = self.dist.sum_(torch.stack([(returns * full_mask).sum(), (returns ** 2 * full_mask).sum(),
                                                  full_mask.sum()]).double())
            mean = moments[0] / moments[2]
            var = (moments[1] - moments[2] * mean ** 2) / (moments[2] - 1).clamp(min=1)
            adv = ((returns - mean) / (var.clamp(min=0).sqrt() + a.adv_eps) * full_mask).float()
            adv_stats = {"adv_mean": float(mean), "return_std": float(var.clamp(min=0).sqrt())}
        else:
            estimator = get_advantage_estimator(a.advantage)
            adv, adv_stats = estimator(rewards, group_ids(rows), full_mask, full_turns, eps=a.adv_eps,
                                       gamma=a.gamma, kl=kl_tok, kl_coef=kl_coef)
        single_pass = t.ppo_epochs == 1 and t.mini_batches == 1
        source = "sampler" if not t.recompute_old_logp else ("same_forward" if single_pass else "recomputed")
        old_full = None
        if source == "recomputed":
            old_full = self._per_row(lambda b: self._logp(pol.model, b)[0], rows, pol)
        elif source == "sampler":
            old_full = pad(rows.sampler_logp, 0.0, torch.float32)

        params = [p for p in pol.model.parameters() if p.requires_grad]
        gen = torch.Generator().manual_seed(t.seed * 1_000_003 + self.step)
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        n_opt, skipped, grad_norms = 0, 0, []
        first_diff = None
        tokens_trained = 0
        trim = t.malloc_mmap_threshold_mb > 0 and self.device.type == "cpu"
        t_start = time.perf_counter()
        pol.model.train()
        for _ in range(t.ppo_epochs):
            perm = torch.randperm(n, generator=gen).tolist()
            for chunk in range(t.mini_batches):
                mb = perm[chunk * n // t.mini_batches:(chunk + 1) * n // t.mini_batches]
                if not mb:
                    continue
                # the global unit count: every rank's micro-batches are weighted against the whole batch
                total = int(self.dist.sum_(torch.tensor(float(count_units(full_mask[mb], full_turns[mb], a.agg)))))
                finite = True
                for idx, b in self._micro_batches(pol, rows, mb):
                    width = b["input_ids"].shape[1]
                    mask, turns = b["mask"].to(self.device), b["turn_ids"].to(self.device)
                    logp, entropy = self._logp(pol.model, b, with_entropy=True)
                    old = logp.detach() if old_full is None else old_full[idx, :width].to(self.device)
                    loss, st = policy_loss(logp, old, adv[idx, :width].to(self.device), mask, turns,
                                           ratio_level=a.ratio_level, ratio_mean=a.ratio_mean, agg=a.agg,
                                           clip_eps=a.clip_eps, clip_eps_high=a.clip_eps_high,
                                           dual_clip=a.dual_clip, log_ratio_clamp=a.log_ratio_clamp)
                    st = {f"stats/{k}": float(v) for k, v in st.items() if not k.startswith("num_")}
                    st["loss/policy"] = float(loss.detach())
                    ent = aggregate(entropy, mask, a.agg, turns)
                    st["stats/entropy"] = float(ent.detach())
                    if a.entropy_coef > 0:
                        loss = loss - a.entropy_coef * ent
                    if need_ref and not a.kl_in_reward:
                        kl = aggregate(kl_k3(logp, self._ref_logp(pol, b).to(self.device), mask), mask, a.agg, turns)
                        loss = loss + a.kl_coef * kl
                        st["stats/kl"] = float(kl.detach())
                    if first_diff is None:
                        sampler = b["sampler_logp"].to(self.device)
                        first_diff = float(((logp.detach() - sampler).abs() * mask).sum() / mask.sum().clamp(min=1))
                    w = count_units(b["mask"], b["turn_ids"], a.agg) / max(total, 1)
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
                for p in params:  # ranks without rows still join the gradient sum
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                self.dist.sum_grads_(params)
                finite = bool(self.dist.sum_(torch.tensor(float(not finite))) == 0)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, t.grad_clip)) if params else 0.0
                if finite and math.isfinite(grad_norm):
                    pol.optimizer.step()
                    n_opt += 1
                    grad_norms.append(grad_norm)
                else:
                    skipped += 1
                pol.optimizer.zero_grad(set_to_none=True)
        self.nan_streak = self.nan_streak + 1 if skipped and not n_opt else 0
        if skipped:
            self.console.print(f"[red]step {self.step + 1}: {skipped} update(s) skipped (non-finite loss or grad)")
        if self.nan_streak >= t.nan_patience:
            raise TrainingDiverged(
                f"{self.nan_streak} steps in a row had a non-finite loss or gradient; lower train.lr, set "
                f"train.grad_clip, or check the data; last good checkpoint: {latest_checkpoint(self.ckpt_root)}")
        elapsed = time.perf_counter() - t_start
        out = {k: sums[k] / weights[k] for k in sums if weights[k] > 0}
        out.update({f"adv/{k}": float(v) for k, v in adv_stats.items()})
        out.update({
            "stats/grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else float("nan"),
            "stats/optimizer_steps": float(n_opt), "stats/skipped_updates": float(skipped),
            "check/old_logp_source": float(OLD_LOGP_SOURCES[source]),
            "check/update_bf16": float(self.bf16),
            "check/sampler_logp_abs_diff": first_diff if first_diff is not None else float("nan"),
            "perf/update_tokens_per_s": tokens_trained / max(elapsed, 1e-9),
            "train/rows": float(self.dist.sum_(torch.tensor(float(n)))),  # global count
        })
        return out

    # -------------------------------------------------------------------------------- eval, save, restore

    def _log_eval(self, step: int, log: bool = True, prefix: str = "eval") -> dict:
        metrics, episodes = run_eval(self.dist.shard(self.eval_problems), self.engines, self.cfg, greedy=True,
                                     prompts=self.prompts, correctness_fn=self.correctness_fn)
        release_freed_memory()
        metrics = merge_metrics(self.dist.gather(metrics), self.dist.gather(float(len(episodes))))
        out = {f"{prefix}/{k}": v for k, v in metrics.items()}
        self.logger.samples(step, prefix, episodes[:self.cfg.train.samples_to_log])
        if log:
            self.logger.log(step, out)
        what = "before the cold start" if prefix == "base_eval" else f"@ step {step}"
        self.console.print(f"eval {what}: acc {metrics.get('acc', 0):.3f}  " + "  ".join(
            f"{k}={v:.2f}" for k, v in metrics.items() if k.startswith("acc/level_")))
        return out

    def print_before_after(self) -> None:
        """Held-out accuracy (overall and per level) at the first and last evaluation of the run."""
        evals = [json.loads(line) for line in (self.run_dir / "metrics.jsonl").read_text().splitlines()]
        evals = [e for e in evals if "eval/acc" in e or "base_eval/acc" in e]
        if len(evals) < 2 and not (evals and "base_eval/acc" in evals[0]):
            return
        from rich.table import Table

        first, last = evals[0], evals[-1]
        base = "base_eval/acc" in first
        if base and len(evals) == 1:  # `rema sft`: before and after the cold start
            last, first = first, {"step": first["step"], **{k.replace("base_eval/", "eval/", 1): v
                                                             for k, v in first.items() if k.startswith("base_eval/")}}
            base = False
        title = f"held-out accuracy, step {first['step']} -> step {last['step']}"
        table = Table(title=title + (" (cold start at step 0)" if base else ""))
        table.add_column("")
        columns = (("base", "after SFT", "after RL", "RL change") if base else ("before", "after", "change"))
        for col in columns:
            table.add_column(col, justify="right")
        keys = ["eval/acc"] + sorted(k for k in last if k.startswith("eval/acc/level_"))
        keys += [k for k in ("eval/boxed_rate", "eval/leak_rate", "eval/plan_leak_rate", "eval/end/finished") if k in last]
        for k in keys:
            if k in first:
                label = k.removeprefix("eval/").replace("acc/level_", "level ")
                cells = [f"{first[k]:.1%}", f"{last[k]:.1%}", f"{last[k] - first[k]:+.1%}"]
                if base:
                    cells.insert(0, f"{first.get(k.replace('eval/', 'base_eval/', 1), float('nan')):.1%}")
                table.add_row(label, *cells)
        self.console.print(table)

    def _summary(self, m: dict) -> str:
        parts = [f"{a} {m[f'train/reward/{a}']:+.2f}" for a in self.roles if f"train/reward/{a}" in m]
        parts.append(f"acc {m.get('train/acc', 0):.2f}")
        if "eval/acc" in m:
            parts.append(f"eval {m['eval/acc']:.2f}")
        parts.append(f"turns {m.get('train/turns/mean', 0):.1f}")
        parts.append(f"{m.get('perf/tokens_per_s', 0):.0f} tok/s")
        parts.append(f"roll {m.get('time/rollout', 0):.0f}s upd {m.get('time/update', 0):.0f}s")
        return "  ".join(parts)

    def state_dict(self) -> dict:
        return {
            "step": self.step, "nan_streak": self.nan_streak, "episode_counter": self.episode_counter,
            "sampler": self.sampler.state_dict(), "rng": rng_state(),
            "policies": {p.name: {"model": trainable_state(p.model), "optimizer": p.optimizer.state_dict(),
                                  "scheduler": p.scheduler.state_dict(),
                                  "engine": self.dist.gather(p.engine.state_dict())}  # one per rank
                         for p in self.policies},
        }

    def _restore(self, state: dict) -> None:
        self.step, self.nan_streak = state["step"], state["nan_streak"]
        self.episode_counter = state["episode_counter"]
        self.started = True
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        for p in self.policies:
            s = state["policies"][p.name]
            load_trainable_state(p.model, s["model"])
            p.optimizer.load_state_dict(s["optimizer"])
            p.scheduler.load_state_dict(s["scheduler"])
            engines = s["engine"]
            if len(engines) != self.dist.world:
                raise RuntimeError(f"checkpoint was written by {len(engines)} process(es); resume with the same number")
            p.engine.load_state_dict(engines[self.dist.rank])
            p.engine.sync_weights(p.model)

    def save(self) -> Path:
        state = self.state_dict()  # collective: every rank contributes its sampler state
        path = self.ckpt_root / f"step_{self.step:06d}"
        if self.dist.is_main:
            path = save_checkpoint(self.ckpt_root, self.step, state, keep=self.cfg.train.keep_checkpoints)
            self.console.print(f"checkpoint: {path}")
        self.dist.barrier()
        return path

    def export(self) -> Path:
        """Final model(s) as ``save_pretrained`` folders (LoRA merged): ``final/`` or ``final/{mta,ra}/``."""
        root = self.run_dir / "final"
        release_memory(self.engines)  # the engines' KV pages are not needed while the weights are written
        for p in self.policies:
            export_model(p.model, p.tokenizer, root if p.name == "shared" else root / p.name)
        return root


def train(config: str | Path | None, overrides: list[str] | None = None, *, resume: str | Path | None = None,
          max_steps: int | None = None) -> Trainer:
    """Entry point behind ``rema train``: build a Trainer from a YAML file (or resume a run dir) and fit."""
    if resume is not None:
        cfg = load_config(Path(resume) / "config.yaml", overrides)
        trainer = Trainer(cfg, resume, resume=True)
    else:
        cfg = load_config(config, overrides)
        trainer = Trainer(cfg)
    try:
        trainer.fit(max_steps=max_steps)
    finally:
        trainer.close()
    return trainer


def sft(config: str | Path | None, overrides: list[str] | None = None) -> Trainer:
    """Entry point behind ``rema sft``: the cold start alone (held-out evaluation before and after), then the
    model is exported to ``<run_dir>/final`` and a step-0 checkpoint is kept, so ``rema train --resume
    RUN_DIR`` continues with RL."""
    cfg = load_config(config, overrides)
    trainer = Trainer(cfg)
    try:
        with trainer.graceful_stop():
            trainer.console.print(f"run dir {trainer.run_dir}; cold start from sft.data={cfg.sft.data}")
            if trainer.start(cold_start=True) and trainer.dist.is_main:
                out = trainer.export()
                trainer.print_before_after()
                trainer.console.print(f"fine-tuned model: {out}  (RL from it: rema train CONFIG model.name={out}, "
                                      f"or rema train --resume {trainer.run_dir})")
    finally:
        trainer.logger.close()
        trainer.close()
    return trainer
