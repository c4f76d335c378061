"""Validation of a whole :class:`~rema.config.Config`, run by ``load_config`` (every command) before anything
else happens; every error names the key and what to change.

Four kinds of rule:

1. **Choices**: a key that names something takes one of its registry's names (:mod:`.choices`).
2. **Ranges**: every numeric key has one (:data:`RANGES`, a table: a test walks it), finite values only.
3. **Combinations that cannot work** are refused with the reason and the fix (``_check_*`` below).
4. **Keys set where they have no effect** (:func:`no_effect`): ``rema train`` and ``rema sft`` refuse them
   (:func:`check_training`, where a silently ignored setting costs a run); the other commands, which often
   start from a training run's saved config, warn once per message, in one line.

:func:`check_training` adds what only a training run needs: a turn budget its context can hold, groups that
give a learning signal, a warm-up that ends.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass

from .choices import DIALOGUE_SOURCES, choice_table


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it and what to do."""


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric key: ``low``/``high`` bounds (None = unbounded), open or closed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    what: str = ""
    """What the value is, said before "must be" (``is a share of the reward and``)."""
    hint: str = ""
    """Said after the value: why, or the flag that sets it."""

    def holds(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        low_ok = self.low is None or (x > self.low if self.low_open else x >= self.low)
        high_ok = self.high is None or (x < self.high if self.high_open else x <= self.high)
        return low_ok and high_ok

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


def _positive(hint: str = "") -> Range:
    return Range(0, low_open=True, hint=hint)


def _at_least(n: float, hint: str = "") -> Range:
    return Range(n, hint=hint)


SHARE = Range(0, 1)
"""[0, 1]."""

RANGES: dict[str, Range] = {
    "model.lora_r": _at_least(0, "0 = full fine-tuning"),
    "model.lora_alpha": _positive(),
    "model.lora_dropout": Range(0, 1, high_open=True),
    "model.checkpoint_layers": Range(
        0,
        1,
        low_open=True,
        what="is a share of the decoder layers and",
        hint="model.gradient_checkpointing=false turns it off",
    ),
    "rollout.max_turns": _at_least(1),
    "rollout.max_tokens_per_turn": _at_least(1),
    "rollout.max_context_tokens": _at_least(2),
    "rollout.samples_per_question": _at_least(1),
    "rollout.temperature": _at_least(0, "0 = greedy"),
    "rollout.top_p": Range(0, 1, low_open=True, what="is a share of the probability mass and", hint="1 = off"),
    "rollout.eval_temperature": _at_least(0, "0 = greedy"),
    "rollout.vllm_kv_cache_gib": _positive("null = vLLM's default"),
    "rollout.vllm_gpu_memory_utilization": Range(0, 1, low_open=True, what="is a share of the GPU's memory and"),
    "rollout.vllm_tensor_parallel_size": _at_least(1),
    "reward.format_penalty": _at_least(0, "the size of the penalty; 0 turns it off"),
    "reward.plan_leak_penalty": Range(0, what="is the size of a penalty and", hint="0 = off"),
    "reward.action_format_penalty": Range(0, what="is the size of a penalty and", hint="0 = off"),
    "reward.unboxed_credit": Range(0, 1, what="is a share of the reward and"),
    "reward.grader_timeout_s": _positive(),
    "reward.grader_workers": _at_least(1),
    "algo.clip_eps": Range(
        0,
        1,
        low_open=True,
        high_open=True,
        hint="the ratio is clipped to [1 - clip_eps, 1 + clip_eps]; the usual value is 0.2",
    ),
    "algo.clip_eps_high": _positive("null = algo.clip_eps"),
    "algo.dual_clip": Range(
        1, low_open=True, hint="the loss of a negative advantage is capped at dual_clip x |A|; null turns it off"
    ),
    "algo.log_ratio_clamp": _positive(),
    "algo.gamma": Range(0, 1, low_open=True, hint="1 = no discount"),
    "algo.kl_coef": _at_least(0, "0 = off; a negative weight would reward drifting from the reference"),
    "algo.entropy_coef": _at_least(0, "0 = off; a negative weight would punish exploration"),
    "algo.adv_eps": _positive(),
    "train.steps": _at_least(0, "0 evaluates the starting model and stops"),
    "train.questions_per_step": _at_least(1),
    "train.ppo_epochs": _at_least(1),
    "train.mini_batches": _at_least(1),
    "train.micro_batch_tokens": _at_least(1),
    "train.malloc_mmap_threshold_mb": _at_least(0, "0 = leave glibc's"),
    "train.lr": _positive(),
    "train.warmup_steps": _at_least(0),
    "train.weight_decay": _at_least(0),
    "train.grad_clip": _positive("the largest gradient norm; a negative clip reverses every gradient, 0 zeroes them"),
    "train.switch_freq": _at_least(1),
    "train.seed": _at_least(0),
    "train.eval_every": _at_least(0, "0 = never; see `rema train --help-config`"),
    "train.save_every": _at_least(0, "0 = only at the end; see `rema train --help-config`"),
    "train.sample_every": _at_least(0, "0 = never; see `rema train --help-config`"),
    "train.samples_to_log": _at_least(0),
    "train.nan_patience": _at_least(1),
    "train.dist_timeout_min": _positive("minutes a collective waits for the other processes"),
    "train.keep_checkpoints": _at_least(0, "0 = keep all"),
    "data.eval_limit": _at_least(1, "null = every question"),
    "sft.questions": _at_least(1),
    "sft.seed": _at_least(0, "null = train.seed"),
    "sft.samples": _at_least(1),
    "sft.temperature": _at_least(0, "null = rollout.temperature"),
    "sft.max_per_question": _at_least(1),
    "sft.epochs": _at_least(1),
    "sft.lr": _positive(),
    "sft.batch_dialogues": _at_least(1),
    "distill.limit": _at_least(1, "null = every row"),
    "distill.concurrency": _at_least(1, "rema distill --concurrency"),
    "distill.max_retries": _at_least(0, "0 = no retry"),
    "distill.backoff_s": _at_least(0),
    "distill.timeout_s": _positive(),
    "distill.temperature": _at_least(0),
    "distill.max_tokens": _at_least(1, "rema distill --max-tokens"),
    "eval.n": _at_least(1),
    "eval.limit": _at_least(1, "null = every question"),
    "eval.batch_size": _at_least(1),
    "eval.seed": _at_least(0),
    "serve.port": Range(0, 65535, what="is a TCP port and"),
    "serve.max_concurrency": _at_least(1, "rema serve --max-concurrency"),
    "serve.batch_wait_ms": _at_least(0, "0 = no wait"),
    "serve.max_request_bytes": _at_least(1024),
}
"""Dotted numeric key -> its range. ``null`` (where the key allows it) is not checked."""


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Print ``warning: message`` on stderr, once per message and process (a config is validated again
    whenever a command derives one from it)."""
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)


def _get(cfg, key: str):
    section, name = key.split(".", 1)
    return getattr(getattr(cfg, section), name)


def _check_choices(cfg) -> None:
    for key, allowed in choice_table().items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(allowed)}")


def _check_ranges(cfg) -> None:
    for key, rng in RANGES.items():
        value = _get(cfg, key)
        if value is None:
            continue
        if not rng.holds(value):
            what = f" {rng.what}" if rng.what else ""
            hint = f" ({rng.hint})" if rng.hint else ""
            raise ConfigError(f"{key}{what} must be {rng.describe()}, got {value}{hint}")
    levels = cfg.data.levels
    if levels is not None and (not levels or any(lv < 1 for lv in levels)):
        raise ConfigError(
            f"data.levels={levels!r}: give difficulty levels >= 1 (e.g. data.levels=[3,4,5]), or "
            "data.levels=null for every level"
        )


HEALTH_CHECKS = (
    "entropy",
    "turns_collapse",
    "turns_pinned",
    "length_pinned",
    "format",
    "degenerate",
    "reward_cliff",
    "eval_cliff",
    "kl_spike",
    "grad_spike",
    "logp_drift",
)
"""The names of ``train.health``'s checks (``rema.train.health.CHECKS`` implements each one)."""


def validate(cfg) -> None:
    """Check a :class:`~rema.config.Config`'s choices, ranges and combinations (raises :class:`ConfigError`),
    and warn once about keys set where they have no effect. (``cfg`` is not annotated: this module sits below
    the one that defines ``Config``, which calls it.)"""
    _check_choices(cfg)
    _check_ranges(cfg)
    _check_method(cfg)
    _check_algo(cfg)
    _check_rollout(cfg)
    _check_reward(cfg)
    _check_train(cfg)
    _check_eval(cfg)
    _validate_health(cfg.train.health)
    for message in no_effect(cfg):
        warn_once(message)


def _check_method(cfg) -> None:
    from ..prompts import PROMPT_SETS

    r = cfg.rollout
    if r.action_set and (r.method != "rema" or r.mode != "single_turn"):
        raise ConfigError("rollout.action_set=true needs rollout.method=rema and rollout.mode=single_turn")
    if r.action_set and r.task == "judge":
        raise ConfigError(
            "rollout.action_set=true has no judge prompts; set rollout.action_set=false for rollout.task=judge"
        )
    _check_prompt_set(cfg)
    if cfg.method_name not in PROMPT_SETS:
        raise ConfigError(
            f"no prompt set {cfg.method_name!r} for rollout.method={r.method}, rollout.mode={r.mode}, "
            f"rollout.task={r.task}; the sets are {sorted(PROMPT_SETS)} (rema.prompts)"
        )
    if r.method != "rema" and not cfg.train.shared_weights:
        raise ConfigError(f"rollout.method={r.method} has one agent; set train.shared_weights=true")
    if r.method != "rema" and cfg.train.update_agents == "mta":
        raise ConfigError(
            f"train.update_agents=mta freezes the only agent of rollout.method={r.method} (its "
            "reasoner); use train.update_agents=both"
        )
    if cfg.model.ra_name is not None and cfg.train.shared_weights:
        raise ConfigError(
            f"model.ra_name={cfg.model.ra_name!r} is the reasoner's model under separate weights; set "
            "train.shared_weights=false too (rema eval/serve --ra-model does), or drop model.ra_name"
        )


def _check_prompt_set(cfg) -> None:
    """``rollout.prompts``: a registered prompt set that fits ``rollout.method``."""
    from ..prompts import PROMPT_SETS

    r = cfg.rollout
    if not r.prompts:
        return
    if r.prompts not in PROMPT_SETS:
        raise ConfigError(
            f"rollout.prompts={r.prompts!r} is not a registered prompt set; choose one of "
            f"{sorted(PROMPT_SETS)} or register one with rema.prompts.register_prompt_set"
        )
    two_agents = PROMPT_SETS[r.prompts].mta is not None
    if two_agents != (r.method == "rema"):
        has = "an MTA prompt" if two_agents else "no MTA prompt"
        raise ConfigError(
            f"rollout.prompts={r.prompts!r} has {has} but rollout.method={r.method}; use a set with "
            f"{'none' if two_agents else 'one'}, or rollout.method={'rema' if two_agents else 'vrp'}"
        )


def _validate_health(h) -> None:
    if h.action not in ("warn", "stop", "rollback"):
        raise ConfigError(f"train.health.action={h.action!r} is not valid; choose one of ['warn', 'stop', 'rollback']")
    for key in ("warn_only", "skip"):
        unknown = [name for name in getattr(h, key) if name not in HEALTH_CHECKS]
        if unknown:
            raise ConfigError(f"train.health.{key}: unknown check(s) {unknown}; the checks are {list(HEALTH_CHECKS)}")
    for key in ("patience", "eval_patience", "min_history", "window", "smooth", "eval_min_episodes"):
        if getattr(h, key) < 1:
            raise ConfigError(f"train.health.{key} must be >= 1, got {getattr(h, key)}")
    if h.max_rollbacks < 0:
        raise ConfigError(
            f"train.health.max_rollbacks must be >= 0 (0: the first firing check stops), got {h.max_rollbacks}"
        )
    if not 0.0 < h.lr_factor <= 1.0:
        raise ConfigError(
            f"train.health.lr_factor multiplies the learning rate at a rollback and must be in (0, 1], "
            f"got {h.lr_factor}"
        )
    for key in (
        "turns_collapse",
        "pinned_share",
        "pinned_from",
        "format_drop",
        "format_from",
        "degenerate_share",
        "degenerate_from",
        "cliff_ratio",
    ):
        if not 0.0 <= getattr(h, key) <= 1.0:
            raise ConfigError(f"train.health.{key} is a share and must be in [0, 1], got {getattr(h, key)}")
    for key in (
        "entropy_floor",
        "turns_collapse_from",
        "reward_cliff",
        "eval_cliff",
        "spike_factor",
        "kl_floor",
        "logp_drift",
    ):
        if getattr(h, key) < 0:
            raise ConfigError(f"train.health.{key} must be >= 0, got {getattr(h, key)}")


def _check_algo(cfg) -> None:
    from ..algos import ESTIMATOR_INFO, EstimatorInfo

    a = cfg.algo
    if a.agg == "token" and a.ratio_level == "turn":
        raise ConfigError(
            "algo.agg=token with algo.ratio_level=turn is invalid (a turn ratio has no per-token "
            "loss to average); use algo.agg=turn or trajectory, or algo.ratio_level=token"
        )
    per_token = sorted(name for name, info in ESTIMATOR_INFO.items() if info.per_token)
    if not ESTIMATOR_INFO.get(a.advantage, EstimatorInfo()).per_token:
        fix = f"algo.advantage={per_token[0]}" if per_token else "an estimator registered with per_token=True"
        if a.gamma != 1.0:
            raise ConfigError(
                f"algo.gamma={a.gamma} discounts per-token rewards, which algo.advantage={a.advantage} "
                f"does not take (it scores whole episodes); set algo.gamma=1, or use {fix}"
            )
        if a.kl_in_reward:
            raise ConfigError(
                f"algo.kl_in_reward=true folds the KL into per-token rewards, which algo.advantage="
                f"{a.advantage} does not take; use the KL loss term (algo.kl_in_reward=false), or {fix}"
            )
    if a.kl_in_reward and a.kl_coef == 0:
        raise ConfigError(
            "algo.kl_in_reward=true with algo.kl_coef=0 adds nothing to the reward; set algo.kl_coef > 0 "
            "(e.g. 0.05), or algo.kl_in_reward=false"
        )


def _check_rollout(cfg) -> None:
    r = cfg.rollout
    if r.vllm_tensor_parallel_size > 1 and r.engine == "hf":
        raise ConfigError("rollout.vllm_tensor_parallel_size > 1 is vLLM's; set rollout.engine=vllm (or auto)")
    if r.max_tokens_per_turn >= r.max_context_tokens:
        raise ConfigError(
            f"rollout.max_tokens_per_turn ({r.max_tokens_per_turn}) must be smaller than "
            f"rollout.max_context_tokens ({r.max_context_tokens}); raise rollout.max_context_tokens "
            "(chat/eval: --max-context)"
        )


def _check_reward(cfg) -> None:
    bad = {k: v for k, v in cfg.reward.extra_terms.items() if not math.isfinite(v)}
    if bad:
        raise ConfigError(f"reward.extra_terms: each term's number must be finite, got {bad}")
    if cfg.reward.action_format_penalty > 0 and not cfg.rollout.action_set:
        raise ConfigError(
            "reward.action_format_penalty only acts in action-set mode; set rollout.action_set=true "
            "(with rollout.mode=single_turn) or reward.action_format_penalty=0"
        )


def _check_train(cfg) -> None:
    t, r = cfg.train, cfg.rollout
    if isinstance(cfg.data.eval, list) and (
        not cfg.data.eval or not all(isinstance(spec, str) and spec.strip() for spec in cfg.data.eval)
    ):
        raise ConfigError(
            f"data.eval={cfg.data.eval!r}: give one or more non-empty data specs, e.g. "
            "data.eval=[gsm8k,math500], or data.eval=null for no held-out evaluation"
        )
    episodes = t.questions_per_step * r.samples_per_question
    if t.mini_batches > episodes:
        raise ConfigError(
            f"train.mini_batches={t.mini_batches} is more than the {episodes} episodes of a step "
            f"(train.questions_per_step x rollout.samples_per_question): some optimizer steps would "
            f"have nothing to train on; lower train.mini_batches to at most {episodes}"
        )
    if not cfg.data.train.strip():
        raise ConfigError("data.train is empty; give a benchmark name, a file, synthetic:... or hf:owner/name")
    if not cfg.sft.data.strip():
        raise ConfigError("sft.data is empty; give a dialogue file (.jsonl) or a source such as self")
    if cfg.sft.data == "teacher" and r.task == "judge":
        raise ConfigError(
            "sft.data=teacher writes arithmetic dialogues, not judge verdicts (rollout.task=judge); use "
            "sft.data=self or a dialogue file"
        )


def _check_eval(cfg) -> None:
    e = cfg.eval
    if not e.benches:
        raise ConfigError(
            "eval.benches is empty; name at least one benchmark, e.g. eval.benches=[gsm8k] (rema eval --bench gsm8k)"
        )
    if e.checkpoint and not e.run:
        raise ConfigError(
            f"eval.checkpoint={e.checkpoint!r} picks a checkpoint of a run; set eval.run=RUN_DIR "
            "(rema eval --run RUN_DIR) too"
        )
    if e.n > 1 and cfg.rollout.eval_temperature == 0:
        raise ConfigError(
            f"eval.n={e.n} samples per question at rollout.eval_temperature=0 (greedy) would all be "
            "the same; set rollout.eval_temperature > 0 (rema eval --temperature 1.0)"
        )


def _changed(section, *names: str) -> bool:
    """Whether any of ``section``'s fields ``names`` differs from its default."""
    fields = {f.name: f for f in dataclasses.fields(section)}
    return any(getattr(section, n) != fields[n].default for n in names)


WARN_ONLY = ("reward.plan_leak_penalty penalises", "train.switch_freq alternates")
"""The no-effect messages (their beginnings) that training warns about instead of refusing: the shipped arm
configs of ``rema reproduce`` share one base across arms (a baseline arm keeps the plan-leak penalty and the
switching period of the ReMA arms it is compared with), so refusing them would break shipped configs."""


def no_effect(cfg) -> list[str]:
    """Keys set (away from their default) where they change nothing, each with what to do: one message each."""
    m, r, w, t, s = cfg.model, cfg.rollout, cfg.reward, cfg.train, cfg.sft
    out = []
    if w.format_terms and r.mode != "single_turn":
        out.append(
            "reward.format_terms=true acts on single-turn episodes only (per-turn format rewards in multi turn "
            "are exploitable); set reward.format_terms=false, or rollout.mode=single_turn"
        )
    if w.plan_leak_penalty > 0 and r.method != "rema":
        out.append(
            f"reward.plan_leak_penalty penalises the meta-thinker, which rollout.method={r.method} does not "
            "have; set reward.plan_leak_penalty=0"
        )
    elif w.plan_leak_penalty > 0 and w.format_terms and r.mode == "single_turn":
        out.append(
            "reward.plan_leak_penalty is not added where the single-turn format terms apply (they include "
            "the same check, at reward.format_penalty); set reward.plan_leak_penalty=0"
        )
    if _changed(w, "format_penalty") and not w.format_terms:
        out.append(
            "reward.format_penalty sizes the format terms, which are off; set reward.format_terms=true, or "
            "drop reward.format_penalty"
        )
    if m.lora_r == 0 and _changed(m, "lora_alpha", "lora_dropout", "lora_fused"):
        out.append(
            "model.lora_alpha / lora_dropout / lora_fused shape LoRA, which is off (model.lora_r=0); set "
            "model.lora_r > 0, or drop them"
        )
    if _changed(m, "checkpoint_layers") and not m.gradient_checkpointing:
        out.append(
            "model.checkpoint_layers chooses the layers gradient checkpointing recomputes, which is off; set "
            "model.gradient_checkpointing=true, or drop model.checkpoint_layers"
        )
    if t.fsdp_cpu_offload and t.strategy != "fsdp":
        out.append("train.fsdp_cpu_offload=true offloads FSDP's shards; set train.strategy=fsdp, or drop it")
    if _changed(t, "switch_freq") and (t.shared_weights or t.update_agents != "both"):
        out.append(
            "train.switch_freq alternates two trained agents under separate weights; this config trains one "
            "set of weights (train.shared_weights=true, or train.update_agents freezes one), so drop it"
        )
    if s.data not in DIALOGUE_SOURCES and _changed(s, "temperature", "questions", "samples", "max_per_question"):
        out.append(
            f"sft.temperature / questions / samples / max_per_question choose the episodes a source such as "
            f"sft.data=self samples; the file sft.data={s.data!r} is read as it is, so drop them"
        )
    r = cfg.rollout
    vrp_styles = ("reduce", "reduce_givens")
    shaped = r.method == "rema" and r.mode == "multi_turn" or r.method == "vrp" and s.teacher_style in vrp_styles
    if _changed(s, "teacher_style") and (s.data != "teacher" or not shaped):
        out.append(
            "sft.teacher_style shapes the program teacher's multi-turn ReMA dialogues (sft.data=teacher, "
            "rollout.method=rema, rollout.mode=multi_turn; and reduce or reduce_givens for rollout.method=vrp); "
            "this config writes none, so drop it"
        )
    if cfg.data.eval_limit is not None and not cfg.data.eval_specs:
        out.append("data.eval_limit caps the held-out sets, and data.eval is null; drop data.eval_limit")
    return out


def turn_budget(r) -> tuple[int, int]:
    """``(tokens, rounds)`` of a :class:`~rema.config.RolloutConfig`'s turn budget: the most tokens its messages can
    take in one agent's context (every message of every round at ``max_tokens_per_turn``), and the rounds."""
    rounds = r.max_turns if r.mode == "multi_turn" and r.method == "rema" else 1
    messages = 2 * rounds if r.method == "rema" else 1
    return messages * r.max_tokens_per_turn, rounds


def check_training(cfg) -> None:
    """What ``rema train`` and ``rema sft`` refuse on top of :func:`validate`, before anything loads: keys set
    where they have no effect (:func:`no_effect`; those of :data:`WARN_ONLY` stay warnings), a turn budget the
    context cannot hold, groups without a learning signal, a warm-up longer than the run."""
    for message in no_effect(cfg):
        if not message.startswith(WARN_ONLY):
            raise ConfigError(message)
    r, t = cfg.rollout, cfg.train
    need, rounds = turn_budget(r)
    if need >= r.max_context_tokens:
        fit = max(0, (r.max_context_tokens - 1) // (2 * r.max_tokens_per_turn))
        raise ConfigError(
            f"rollout: {rounds} round(s) of messages of up to {r.max_tokens_per_turn} tokens take up to {need} tokens "
            f"of an agent's context, more than rollout.max_context_tokens={r.max_context_tokens} holds ({fit} full "
            f"round(s) fit; the rest would end context_exceeded, scored 0): raise rollout.max_context_tokens above "
            f"{need} plus the prompt, or lower rollout.max_turns (to {max(fit, 1)}) or rollout.max_tokens_per_turn"
        )
    from ..algos import ESTIMATOR_INFO, EstimatorInfo

    if r.samples_per_question == 1 and ESTIMATOR_INFO.get(cfg.algo.advantage, EstimatorInfo()).grouped:
        raise ConfigError(
            f"rollout.samples_per_question=1 gives algo.advantage={cfg.algo.advantage} groups of one "
            "episode, whose advantage is 0: nothing would be learned; sample 2 or more per question "
            "(the paper: 16), or use algo.advantage=reinforce_pp"
        )
    if 0 < t.steps < t.warmup_steps:  # (train.steps=0 evaluates only: no schedule to speak of)
        raise ConfigError(
            f"train.warmup_steps={t.warmup_steps} is longer than the run (train.steps={t.steps}): the "
            "learning rate would never reach train.lr; lower train.warmup_steps"
        )
    if r.action_set and cfg.reward.action_format_penalty == 0:
        warn_once(
            "rollout.action_set=true with reward.action_format_penalty=0: an MTA message that is not a valid "
            "JSON choice costs the MTA nothing (configs/rema_actions.yaml sets 1.0)"
        )
