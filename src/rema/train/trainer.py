"""The RL training loop: rollout → rewards → advantages and update → weight sync → log.

The loop owns the run: its directory, the data cursor, the step counter, evaluation, checkpoints and the
export. What one step computes lives elsewhere: the update in :mod:`rema.train.update`, the policies (models,
optimizers, engines) in :mod:`rema.train.policy`, the cold start in :mod:`rema.train.sft`, scoring in
:mod:`rema.scoring`.

1. Data parallel under ``torchrun`` / ``accelerate launch``: each process rolls out whole questions of the
   same global batch (:mod:`rema.train.distributed`); only process 0 writes.
2. A non-finite loss or gradient skips the optimizer step (logged); ``train.nan_patience`` steps in a row
   without a good update stop the run with an error naming the last good checkpoint.
3. Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and exits; a second Ctrl-C aborts at once.
4. After each step the health guard (:mod:`rema.train.guard`, ``train.health``) runs its checks; a firing check
   warns, stops the run, or rolls it back to the newest healthy checkpoint with a lower learning rate
   (:meth:`Trainer._health`). Checkpoints carry the guard's state and a health mark.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
from datetime import datetime
from pathlib import Path

import torch

from .. import __version__
from ..config import Config, save_config
from ..data import ProblemSampler, load_split, split_record
from ..data.benchmarks import dataset_names
from ..models import describe, export_model, native_bf16
from ..prompts import get_prompt_set
from ..rollout import rollout
from ..rollout.engine import mix_seed, release_memory
from ..runtime import device_for, resolved
from ..runtime.checkpoints import (
    HEALTH_FILE,
    drop_checkpoints_after,
    healthy_before,
    latest_checkpoint,
    load_checkpoint,
    mark_text,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ..scoring import check_scoring, episode_metrics, score_episodes
from .batch import build_rows
from .distributed import Dist, merge_metrics
from .evaluation import eval_summary, evaluate_sets
from .guard import HealthGuard, RunUnhealthy, Verdict, guard_sync_checks, needed_for_rollback, remark
from .memory import children_rss_gb, peak_rss_gb, release_freed_memory, update_heap
from .metrics import MetricsLogger, PhaseTimer, eval_record, print_before_after, step_summary
from .plumbing import progress_bar, signals_to
from .policy import Policy, active_policies, build_policies, release_modules, resync_engines, set_base_lr, sync_engine
from .policy_state import policies_state, restore_policies, save_policy_shards
from .sft import cold_start as run_cold_start
from .strategy import local_elements, make_strategy
from .update import Forward, update_policy


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses or gradients."""


class Trainer:
    """Owns the models, optimizers, engines, data cursor and run directory of one training run."""

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path | None = None,
        *,
        resume: bool = False,
        console=None,
        correctness_fn=None,
        prompts=None,
        engine_factory=None,
    ):
        """``cfg``'s ``auto`` engine is resolved here (a no-op for a command's config, resolved already:
        :func:`rema.runtime.resolved`), so ``config.yaml`` and ``meta.json`` name the engine that runs.
        ``engine_factory(model, tokenizer, seed) -> Engine`` replaces :func:`~rema.rollout.factory.make_engine`
        (tests reuse one running vLLM engine across runs this way; the trainer syncs its weights into it after
        each update). ``correctness_fn(episode) -> [0, 1]`` replaces the task's grader."""
        self.cfg = cfg = resolved(cfg)
        self.correctness_fn = correctness_fn
        self._open_run(run_dir, console)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.step = 0
        self.nan_streak = 0
        self.episode_counter = 0
        self.started = False
        """Whether the step-0 work (cold start, first evaluation) is done; a checkpoint implies it is."""
        self.stop_requested = False
        """Set by Ctrl-C / SIGTERM: the run finishes its step, saves and returns."""
        random.seed(cfg.train.seed)
        torch.manual_seed(cfg.train.seed)
        self._set_up_update()
        self._load_policies(prompts, engine_factory)
        self._load_data()
        self.guard = HealthGuard(cfg.train.health, eval_every=cfg.train.eval_every)
        guard_sync_checks(self.engines, self.guard)
        resume_step = self._resume_latest() if resume else None
        if not resume and self.dist.is_main:
            self._write_run_files()
        self.logger = MetricsLogger(
            self.run_dir,
            tensorboard=cfg.log.tensorboard,
            wandb=cfg.log.wandb,
            name=cfg.log.name,
            config=cfg.to_dict(),
            resume_step=resume_step,
            enabled=self.dist.is_main,
            keep_events=len(self.guard.events),
        )

    def _open_run(self, run_dir: str | Path | None, console) -> None:
        """This process's device and process group, the console (quiet but on rank 0), and the run directory:
        rank 0's path on every rank (a default name holds the time), made by rank 0. Refuses a step with fewer
        questions than processes."""
        from rich.console import Console

        cfg = self.cfg
        self.device = device_for(cfg.model.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = Dist(self.device, timeout_min=cfg.train.dist_timeout_min)  # collectives go through this device
        self.console = console or Console(stderr=True, quiet=not self.dist.is_main)
        default_dir = f"runs/{cfg.log.name}-{datetime.now():%Y%m%d-%H%M%S}"
        self.run_dir = Path(self.dist.gather(str(run_dir or cfg.log.run_dir or default_dir))[0])
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.train.questions_per_step < self.dist.world:
            raise ValueError(
                f"train.questions_per_step={cfg.train.questions_per_step} is below the number of "
                f"processes ({self.dist.world}): every rank needs at least one question"
            )

    def _set_up_update(self) -> None:
        """How the update computes: under bf16 autocast or not (``train.autocast``; ``auto``: where the device
        has native bf16), and the :class:`~rema.train.update.Forward` settings every update shares."""
        cfg = self.cfg
        self.bf16 = cfg.train.autocast == "bf16" or (cfg.train.autocast == "auto" and native_bf16(self.device))
        self.forward = Forward(
            self.device,
            bf16=self.bf16,
            temperature=cfg.rollout.temperature,
            entropy_grad=cfg.algo.entropy_coef > 0,
            micro_batch_tokens=cfg.train.micro_batch_tokens,
            share_prefix=cfg.train.share_prefix,
        )

    def _load_policies(self, prompts, engine_factory) -> None:
        """The prompt set (``prompts``, else the method's) and the roles it plays, then the strategy and the
        policies: models, optimizers, engines. Scoring is checked first, before any model loads."""
        cfg = self.cfg
        self.prompts = prompts or get_prompt_set(cfg.method_name)
        check_scoring(cfg, custom_correctness=self.correctness_fn is not None)  # before any model loads
        self.roles = ("mta", "ra") if self.prompts.mta is not None else ("ra",)
        self.updated_roles = tuple(r for r in self.roles if cfg.train.update_agents in ("both", r))
        """The roles whose rows RL trains on (``train.update_agents``); the others play but stay frozen."""
        self.strategy = make_strategy(
            cfg.train.strategy, self.dist, self.device, bf16=self.bf16, cpu_offload=cfg.train.fsdp_cpu_offload
        )
        self.policies: list[Policy] = build_policies(
            cfg,
            self.roles,
            self.device,
            bf16=self.bf16,
            rank=self.dist.rank,
            engine_factory=engine_factory,
            strategy=self.strategy,
        )

    def _load_data(self) -> None:
        """The training problems, the held-out sets and the sampler that draws each step's questions."""
        d = self.cfg.data
        fields = dict(
            data_dir=d.data_dir, question_field=d.question_field, answer_field=d.answer_field, levels=d.levels
        )
        self.train_problems = load_split(d.train, **fields)
        self.eval_sets = {
            name: load_split(spec, **fields, limit=d.eval_limit)
            for name, spec in zip(dataset_names(d.eval_specs), d.eval_specs)
        }
        """Held-out sets by name (:func:`~rema.data.benchmarks.dataset_names` of ``data.eval``), evaluated in turn."""
        self.eval_problems = [p for problems in self.eval_sets.values() for p in problems]
        self.sampler = ProblemSampler(self.train_problems, self.cfg.train.questions_per_step, seed=self.cfg.train.seed)

    def _resume_latest(self) -> int:
        """Restore the latest checkpoint of the run directory; returns its step."""
        ckpt = latest_checkpoint(self.ckpt_root)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.ckpt_root}")
        state = load_checkpoint(ckpt)
        self._restore(state, ckpt)
        self.guard.load_state_dict(state.get("health"))  # its events, spans, rollbacks: the run goes on as it was
        self.console.print(f"resumed from {ckpt} (step {self.step})")
        return self.step

    def _write_run_files(self) -> None:
        """A new run's ``config.yaml`` (the resolved config), ``meta.json`` (versions, prompts, device, models,
        the engine) and ``data_split.json`` (the ids trained and evaluated on, and the specs that re-create them)."""
        cfg, d = self.cfg, self.cfg.data
        save_config(cfg, self.run_dir / "config.yaml")
        meta = {
            "rema_version": __version__,
            "prompts": self.prompts.to_dict(),
            "argv": sys.argv,
            "started": datetime.now().isoformat(timespec="seconds"),
            "device": str(self.device),
            "models": {p.name: describe(p.model) for p in self.policies},
            "engine": cfg.rollout.engine,
            "engines": {p.name: type(p.engine).__name__ for p in self.policies},
            "update_bf16_autocast": self.bf16,
            "strategy": self.strategy.name,
            "processes": self.dist.world,
        }
        (self.run_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        evals = {
            "eval" if len(self.eval_sets) == 1 else f"eval/{name}": (spec, self.eval_sets[name])
            for name, spec in zip(self.eval_sets, d.eval_specs)
        }  # keyed as their metrics are
        split = split_record({"train": (d.train, self.train_problems), **evals})
        (self.run_dir / "data_split.json").write_text(json.dumps(split) + "\n")

    def policy_of(self, role: str) -> Policy:
        return next(p for p in self.policies if role in p.roles)

    @property
    def engines(self) -> dict:
        return {role: self.policy_of(role).engine for role in self.roles}

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
            if not self.started and not self.start():  # before the step bar: the cold start has bars of its own
                return last
            with self.progress("train", total=cfg.train.steps, completed=self.step) as bar:
                while self.step < end and not self.stop_requested:
                    last = self.train_step()
                    self.step += 1
                    self.stop_requested = any(self.dist.gather(self.stop_requested))
                    if (
                        cfg.train.eval_every
                        and self.eval_problems
                        and (self.step % cfg.train.eval_every == 0 or self.step == cfg.train.steps)
                    ):
                        last.update(self._log_eval(self.step, log=False))
                    self.logger.log(self.step, last)
                    bar(self.step, cfg.train.steps, step_summary(last, self.roles))
                    if not cfg.log.progress and self.dist.is_main:
                        self.console.print(f"step {self.step}: {step_summary(last, self.roles)}")
                    if self._health(last):  # rolled back: the step counter went back to a healthy checkpoint
                        continue
                    if (
                        (cfg.train.save_every and self.step % cfg.train.save_every == 0)
                        or self.step == end
                        or self.stop_requested
                    ):
                        self.save()
            if self.step >= cfg.train.steps:
                self.export()
                if self.dist.is_main:
                    print_before_after(self.run_dir / "metrics.jsonl", self.console)
        finally:
            self.logger.close()
        if self.stop_requested:
            self.console.print(f"stopped at step {self.step}; resume with: rema train --resume {self.run_dir}")
        return last

    def start(self, *, cold_start: bool | None = None) -> bool:
        """Step-0 work: the cold start when configured (held-out evaluation before it, logged as ``base_eval/*``,
        unless ``train.eval_before_cold_start`` is off), then the held-out evaluation RL starts from (``eval/*`` at
        step 0). With a cold start a step-0 checkpoint follows, so a resumed run does not repeat it. Returns False
        when stopped (Ctrl-C) during the cold start; nothing is saved then."""
        cfg = self.cfg
        do_cold_start = cfg.sft.cold_start if cold_start is None else cold_start
        evaluate = bool(cfg.train.eval_every and self.eval_problems)
        record: dict = {}
        if do_cold_start:
            if evaluate and cfg.train.eval_before_cold_start:
                record.update(self._log_eval(0, log=False, prefix="base_eval"))
            record.update(self.cold_start())
            if self.stop_requested:
                self.console.print("[yellow]stopped during the cold start; nothing was saved: start the run again")
                return False
        if evaluate:
            record.update(self._log_eval(0, log=False))
        if record:
            self.logger.log(0, record)
        self.guard.observe(0, record)  # the starting held-out accuracy is the first baseline of eval_cliff
        self.started = True
        if do_cold_start or (self.guard.can_roll_back and cfg.train.steps > 0):  # a rollback can go back to the start
            self.save()
        return True

    def cold_start(self) -> dict[str, float]:
        """The cold start (:func:`rema.train.sft.cold_start`) of this run's policies; returns ``sft/*`` metrics."""
        return run_cold_start(
            self.cfg,
            self.policies,
            roles=self.roles,
            prompts=self.prompts,
            train_problems=self.train_problems,
            engines=self.engines,
            dist=self.dist,
            strategy=self.strategy,
            device=self.device,
            bf16=self.bf16,
            run_dir=self.run_dir,
            console=self.console,
            bars=self.progress,
            should_stop=lambda: self.stop_requested,
            correctness_fn=self.correctness_fn,
        )

    def train_step(self) -> dict:
        """One RL step: rollout → rewards → advantages and update → weight sync; returns the step's metrics."""
        cfg, timer = self.cfg, PhaseTimer()
        problems = self.dist.shard(self.sampler.next_batch())  # the same global batch on every rank
        with timer.phase("rollout"):
            episodes = rollout(problems, cfg.rollout, self.engines, self.prompts, first_episode_id=self.episode_counter)
        self.episode_counter += len(episodes)
        local = {
            "perf/engine_rss_gb": children_rss_gb(),
            **{f"perf/{k}": v for k, v in release_memory(self.engines).items()},
        }  # KV pages back for the update
        with timer.phase("reward"):
            local.update(
                score_episodes(
                    episodes,
                    cfg.reward,
                    task=cfg.rollout.task,
                    mode=cfg.rollout.mode,
                    correctness_fn=self.correctness_fn,
                )
            )
        local.update({f"train/{k}": v for k, v in episode_metrics(episodes).items()})
        active = active_policies(self.policies, self.step, switch_freq=cfg.train.switch_freq)
        for pol in active:
            with timer.phase("update"):
                local.update(self.update(pol, episodes))
            with timer.phase("sync"):
                local.update({f"sync/{k}": v for k, v in sync_engine(pol).items()})
            pol.scheduler.step()
        with timer.phase("sync"):  # engines a level-2 sleep left without weights, not updated this step
            local.update(resync_engines(self.policies, synced=active))
        updated = {r for pol in active for r in pol.roles if r in self.updated_roles}
        release_freed_memory()
        metrics = self._reduce(local, episodes, rollout_s=timer.seconds["rollout"])
        metrics.update(timer.metrics())
        metrics["perf/peak_rss_gb"] = peak_rss_gb()  # the whole run's so far
        metrics["lr"] = active[0].scheduler.get_last_lr()[0]
        metrics["train/active_agent"] = -1.0 if cfg.train.shared_weights else float(active[0].name == "ra")
        metrics.update({f"train/updated/{r}": float(r in updated) for r in self.roles})  # 1: its rows were trained
        if cfg.train.sample_every and (self.step + 1) % cfg.train.sample_every == 0:
            self.logger.samples(self.step + 1, "train", episodes[: cfg.train.samples_to_log])
        return metrics

    def update(self, pol: Policy, episodes: list) -> dict[str, float]:
        """Update ``pol`` on its roles' rows of the scored ``episodes`` (:func:`~rema.train.update.update_policy`);
        counts steps without a good optimizer step and stops the run after ``train.nan_patience`` of them."""
        rows = build_rows(episodes, tuple(r for r in pol.roles if r in self.roles))
        if not len(rows):
            return {}
        with update_heap(self.cfg.train.malloc_mmap_threshold_mb, self.device):  # freed memory goes back to the OS
            out = update_policy(
                pol.model,
                pol.optimizer,
                rows,
                algo=self.cfg.algo,
                train=self.cfg.train,
                fwd=self.forward,
                pad_id=pol.tokenizer.pad_token_id,
                step=self.step,
                ref=pol.ref,
                strategy=self.strategy,
                agents=self.updated_roles,
            )
        local, whole = local_elements(pol.model)
        out["dist/param_shard_frac"] = local / whole  # 1 replicated; ~1/N sharded over N processes
        skipped, taken = out["stats/skipped_updates"], out["stats/optimizer_steps"]
        self.nan_streak = self.nan_streak + 1 if skipped and not taken else 0
        if skipped:
            self.console.print(f"[red]step {self.step + 1}: {int(skipped)} update(s) skipped (non-finite loss or grad)")
        if self.nan_streak >= self.cfg.train.nan_patience:
            raise TrainingDiverged(
                f"{self.nan_streak} steps in a row had a non-finite loss or gradient; lower train.lr, set "
                f"train.grad_clip, or check the data; last good checkpoint: {latest_checkpoint(self.ckpt_root)}"
            )
        return out

    def _reduce(self, local: dict, episodes: list, *, rollout_s: float) -> dict:
        """This process's metrics merged with every other's (weighted by episodes), plus global counts."""
        gen_tokens = sum(len(t.token_ids) for ep in episodes for t in ep.turns)
        metrics = merge_metrics(self.dist.gather(local), self.dist.gather(float(len(episodes))))
        metrics["train/episodes"] = float(sum(self.dist.gather(len(episodes))))
        metrics["perf/tokens_per_s"] = gen_tokens / max(rollout_s, 1e-9) * self.dist.world
        metrics["perf/generated_tokens"] = float(gen_tokens) * self.dist.world
        return metrics

    # -------------------------------------------------------------------------------- eval, save, restore

    def _log_eval(self, step: int, log: bool = True, prefix: str = "eval") -> dict:
        """Evaluation on each ``data.eval`` set at ``rollout.eval_temperature`` (greedy at 0); returns (and with
        ``log`` logs) :func:`eval_record`'s keys:
        ``<prefix>/<metric>`` for one set, ``<prefix>/<set>/<metric>`` and ``<prefix>/avg/<metric>`` for several.
        Samples go to ``samples.jsonl`` under the split ``<prefix>`` (one set) or ``<prefix>/<set>``."""
        per_set = evaluate_sets(
            self.eval_sets,
            self.engines,
            self.cfg,
            prompts=self.prompts,
            correctness_fn=self.correctness_fn,
            dist=self.dist,
            logger=self.logger,
            step=step,
            prefix=prefix,
        )
        out = eval_record(per_set, prefix)
        if log:
            self.logger.log(step, out)
        self.console.print(eval_summary(per_set, out, step=step, prefix=prefix))
        return out

    def state_dict(self) -> dict:
        """What a resumed run needs besides sharded weights (those go through :meth:`save`'s shard files)."""
        policies = policies_state(self.policies, self.strategy, self.dist)
        return {
            "step": self.step,
            "nan_streak": self.nan_streak,
            "episode_counter": self.episode_counter,
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(),
            "strategy": self.strategy.name,
            "policies": policies,
            "health": self.guard.state_dict(),
        }

    def _restore(self, state: dict, path: Path) -> None:
        written = state.get("strategy", "ddp")
        if written != self.strategy.name:
            raise RuntimeError(
                f"{path} was written with train.strategy={written}; resume with the same strategy "
                f"and number of processes"
            )
        self.step, self.nan_streak = state["step"], state["nan_streak"]
        self.episode_counter = state["episode_counter"]
        self.started = True
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        restore_policies(self.policies, state["policies"], path, self.strategy, self.dist)

    def save(self) -> Path:
        """A checkpoint of this step, complete or not at all: shards (sharded runs) and ``state.pt`` are
        written to a hidden folder that is renamed into place, then ``latest`` points at it."""
        state = self.state_dict()  # collective: every rank contributes its sampler state
        path = self.ckpt_root / f"step_{self.step:06d}"
        partial = (
            save_policy_shards(self.policies, self.ckpt_root, self.step, self.dist) if self.strategy.sharded else None
        )
        if self.dist.is_main:
            guarded = self.guard.enabled
            mark = {HEALTH_FILE: mark_text(self.guard.mark(self.step))} if guarded else None
            can = self.guard.can_roll_back
            spare = needed_for_rollback(self.ckpt_root, self.step, self.guard) if can else ()
            path = save_checkpoint(
                self.ckpt_root,
                self.step,
                state,
                keep=self.cfg.train.keep_checkpoints,
                partial=partial,
                files=mark,
                spare=spare,
            )
            self.console.print(f"checkpoint: {path}")
        self.dist.barrier()
        return path

    # -------------------------------------------------------------------------------------------- health

    def _health(self, metrics: dict) -> bool:
        """The health guard's verdict on this step, acted on (rank 0's verdict, broadcast: every rank acts alike):
        ``warn`` logs an event; ``stop`` logs it, saves and raises :class:`RunUnhealthy`; ``rollback`` goes back
        to the newest healthy checkpoint before the unhealthy steps (none: it stops). True after a rollback."""
        verdict: Verdict | None = self.dist.gather(self.guard.observe(self.step, metrics))[0]
        if self.guard.firing and self.dist.is_main:
            remark(self.ckpt_root, self.guard)  # checkpoints inside the unhealthy span lose their healthy mark
        if verdict is None:
            return False
        target = None
        if verdict.action == "rollback":
            target = self.dist.gather(healthy_before(self.ckpt_root, self.guard.rollback_before(verdict)))[0]
        if target is not None:
            self._rollback(verdict, target)
            return True
        if verdict.action == "warn":
            self.logger.log(verdict.step, self.guard.event(verdict, "warn"))
            self.console.print(f"[yellow]health: step {verdict.step}: {verdict.message}")
            return False
        self.logger.log(verdict.step, self.guard.event(verdict, "stop"))
        self.save()
        h = self.cfg.train.health
        why = (
            "train.health.action=stop"
            if h.action == "stop"
            else f"after {self.guard.rollbacks} rollback(s), train.health.max_rollbacks={h.max_rollbacks}"
            if self.guard.rollbacks >= h.max_rollbacks
            else f"no healthy checkpoint before step {self.guard.rollback_before(verdict)} to roll back to"
        )
        raise RunUnhealthy(
            f"health check {verdict.checks} fired at step {verdict.step}: {verdict.message}; the run "
            f"stopped ({why}); its best healthy checkpoint: rema eval --run {self.run_dir} "
            "--checkpoint best"
        )

    def _rollback(self, verdict: Verdict, target: Path) -> None:
        """Go back to checkpoint ``target`` (weights, optimizer, data cursor, RNG states) with the learning rate
        times ``train.health.lr_factor`` per rollback so far and, with ``train.health.reseed``, new sampling seeds.
        Later checkpoints are deleted and later records set aside (``*_rolled_back.jsonl``); ``target`` is then
        saved again with the guard's state, so a resumed run continues the rolled-back one."""
        cfg = self.cfg.train
        self._restore(load_checkpoint(target), target)
        self.guard.rolled_back(self.step, verdict.step)
        for p in self.policies:
            set_base_lr(p, cfg.lr * self.guard.lr_scale)
        if cfg.health.reseed:
            salt = self.guard.rollbacks
            for p in self.policies:
                p.engine.reseed(salt)
            random.seed(mix_seed(cfg.seed, salt))
            torch.manual_seed(mix_seed(cfg.seed, salt))
        if self.dist.is_main:
            drop_checkpoints_after(self.ckpt_root, self.step)
            self.logger.rewind(self.step, self.guard.rollbacks)
        self.dist.barrier()
        self.logger.log(
            verdict.step, self.guard.event(verdict, "rollback", to_step=self.step, lr_scale=self.guard.lr_scale)
        )
        self.console.print(
            f"[red]health: step {verdict.step}: {verdict.message} -> rollback "
            f"{self.guard.rollbacks}/{cfg.health.max_rollbacks} to {target.name}, learning rate "
            f"x{self.guard.lr_scale:g}"
        )
        self.save()

    def export(self) -> Path:
        """Final model(s) as ``save_pretrained`` folders (LoRA merged): ``final/`` or ``final/{mta,ra}/``,
        written by rank 0 (a sharded model's weights gathered one at a time, every process taking part)."""
        root = self.run_dir / "final"
        release_memory(self.engines)  # the engines' KV pages are not needed while the weights are written
        for p in self.policies:
            export_model(p.model, p.tokenizer, root if p.name == "shared" else root / p.name, write=self.dist.is_main)
        self.dist.barrier()
        return root

    # ------------------------------------------------------------------------------------ process plumbing

    def graceful_stop(self):
        """While active, Ctrl-C or SIGTERM asks the run to finish its step, save and exit; then the old handlers."""
        return signals_to(self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True
        what = "Ctrl-C" if signum in (None, signal.SIGINT) else f"signal {signal.Signals(signum).name}"
        self.console.print(
            f"[yellow]{what}: finishing this step, then saving a checkpoint "
            "(Ctrl-C again aborts without saving)[/yellow]"
        )

    def progress(self, label: str, *, total: int | None = None, completed: int = 0):
        """A progress bar (rank 0, ``log.progress``) yielding ``update(done, total, text="")``."""
        enabled = self.cfg.log.progress and self.dist.is_main
        return progress_bar(self.console, label, enabled=enabled, total=total, completed=completed)

    def close(self) -> None:
        """Stop the engines, drop the modules under several processes (:func:`release_modules`), leave the group."""
        for p in self.policies:
            p.engine.close()
        if self.dist.enabled:
            release_modules(self.policies)
        self.dist.close()
