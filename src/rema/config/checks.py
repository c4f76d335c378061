"""Validation of a whole :class:`~rema.config.Config`: choices and combinations, each error naming the key
and what to change."""

from __future__ import annotations

from ..algos.advantages import ADVANTAGE_ESTIMATORS
from ..prompts import PROMPT_SETS


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it and what to do."""


_CHOICES = {
    ("rollout", "method"): ("rema", "vrp", "mrp"),
    ("rollout", "mode"): ("single_turn", "multi_turn"),
    ("rollout", "engine"): ("auto", "hf", "vllm"),
    ("rollout", "vllm_sleep"): (0, 1, 2),
    ("rollout", "vllm_dtype"): ("", "float32", "bfloat16", "float16"),
    ("algo", "ratio_level"): ("token", "turn"),
    ("algo", "ratio_mean"): ("geometric", "arithmetic"),
    ("algo", "agg"): ("token", "turn", "trajectory"),
    ("train", "lr_schedule"): ("constant", "cosine"),
    ("train", "autocast"): ("off", "bf16", "auto"),
    ("model", "dtype"): ("float32", "bfloat16", "float16"),
    ("eval", "task"): ("auto", "math", "judge"),
    ("eval", "answer_format"): ("auto", "boxed", "gsm8k", "raw"),
    ("train", "strategy"): ("ddp", "fsdp"),
    ("train", "update_agents"): ("both", "mta", "ra"),
}

HEALTH_CHECKS = ("entropy", "turns_collapse", "turns_pinned", "length_pinned", "format", "degenerate", "reward_cliff",
                 "eval_cliff", "kl_spike", "grad_spike", "logp_drift")
"""The names of ``train.health``'s checks (``rema.train.health.CHECKS`` implements each one)."""


def validate(cfg) -> None:
    """Check a :class:`~rema.config.Config`'s choices and combinations; every error names the key and what to
    change. (``cfg`` is not annotated: this module sits below the one that defines ``Config``, which calls it.)"""
    # the registries are the lists: an estimator added with register_advantage_estimator is valid from then on
    # (rollout.task is checked against rema.rewards.tasks where it is used: that registry sits above this layer)
    choices = {**_CHOICES, ("algo", "advantage"): tuple(ADVANTAGE_ESTIMATORS)}
    for (section, key), allowed in choices.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key}={value!r} is not valid; choose one of {list(allowed)}")
    _validate_prompts(cfg)
    if cfg.algo.agg == "token" and cfg.algo.ratio_level == "turn":
        raise ConfigError("algo.agg=token with algo.ratio_level=turn is invalid (a turn ratio has no per-token "
                          "loss to average); use algo.agg=turn or trajectory, or algo.ratio_level=token")
    r = cfg.rollout
    if r.action_set and (r.method != "rema" or r.mode != "single_turn"):
        raise ConfigError("rollout.action_set=true needs rollout.method=rema and rollout.mode=single_turn")
    if r.action_set and r.task == "judge":
        raise ConfigError("rollout.action_set=true has no judge prompts; set rollout.action_set=false for "
                          "rollout.task=judge")
    if r.method != "rema" and not cfg.train.shared_weights:
        raise ConfigError(f"rollout.method={r.method} has one agent; set train.shared_weights=true")
    if r.method != "rema" and cfg.train.update_agents == "mta":
        raise ConfigError(f"train.update_agents=mta freezes the only agent of rollout.method={r.method} (its "
                          "reasoner); use train.update_agents=both")
    if r.vllm_tensor_parallel_size < 1:
        raise ConfigError(f"rollout.vllm_tensor_parallel_size must be >= 1, got {r.vllm_tensor_parallel_size}")
    if r.vllm_tensor_parallel_size > 1 and r.engine == "hf":
        raise ConfigError("rollout.vllm_tensor_parallel_size > 1 is vLLM's; set rollout.engine=vllm (or auto)")
    for key in ("max_turns", "max_tokens_per_turn", "max_context_tokens", "samples_per_question"):
        if getattr(r, key) < 1:
            raise ConfigError(f"rollout.{key} must be >= 1, got {getattr(r, key)}")
    if r.max_tokens_per_turn >= r.max_context_tokens:
        raise ConfigError(f"rollout.max_tokens_per_turn ({r.max_tokens_per_turn}) must be smaller than "
                          f"rollout.max_context_tokens ({r.max_context_tokens}); raise rollout.max_context_tokens "
                          "(chat/eval: --max-context)")
    if not 0.0 <= cfg.reward.unboxed_credit <= 1.0:
        raise ConfigError(f"reward.unboxed_credit is a share of the reward and must be in [0, 1], got "
                          f"{cfg.reward.unboxed_credit}")
    if cfg.reward.plan_leak_penalty < 0:
        raise ConfigError(f"reward.plan_leak_penalty is the size of a penalty and must be >= 0, got "
                          f"{cfg.reward.plan_leak_penalty}")
    if cfg.reward.action_format_penalty < 0:
        raise ConfigError(f"reward.action_format_penalty is the size of a penalty and must be >= 0, got "
                          f"{cfg.reward.action_format_penalty}")
    if cfg.reward.action_format_penalty > 0 and not r.action_set:
        raise ConfigError("reward.action_format_penalty only acts in action-set mode; set rollout.action_set=true "
                          "(with rollout.mode=single_turn) or reward.action_format_penalty=0")
    if isinstance(cfg.data.eval, list) and (not cfg.data.eval or not all(
            isinstance(spec, str) and spec.strip() for spec in cfg.data.eval)):
        raise ConfigError(f"data.eval={cfg.data.eval!r}: give one or more non-empty data specs, e.g. "
                          "data.eval=[gsm8k,math500], or data.eval=null for no held-out evaluation")
    if not 0.0 < cfg.model.checkpoint_layers <= 1.0:
        raise ConfigError(f"model.checkpoint_layers is a share of the decoder layers and must be in (0, 1], got "
                          f"{cfg.model.checkpoint_layers} (model.gradient_checkpointing=false turns it off)")
    t = cfg.train
    if t.steps < 0:
        raise ConfigError(f"train.steps must be >= 0 (0: evaluate the starting model and stop), got {t.steps}")
    for key in ("questions_per_step", "ppo_epochs", "mini_batches", "switch_freq", "nan_patience"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    for key in ("eval_every", "save_every", "sample_every"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key} must be >= 0 (see `rema train --help-config`), got {getattr(t, key)}")
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    _validate_sft(cfg)
    _validate_health(cfg.train.health)
    _validate_distill(cfg)
    _validate_eval(cfg)
    _validate_serve(cfg)


def _validate_sft(cfg) -> None:
    s = cfg.sft
    for key in ("questions", "samples", "max_per_question", "epochs", "batch_dialogues"):
        if getattr(s, key) < 1:
            raise ConfigError(f"sft.{key} must be >= 1, got {getattr(s, key)}")
    if s.lr <= 0:
        raise ConfigError(f"sft.lr must be > 0, got {s.lr}")
    if s.data == "teacher" and (cfg.rollout.task == "judge" or cfg.rollout.action_set):
        raise ConfigError("sft.data=teacher writes arithmetic dialogues, not for rollout.task=judge or "
                          "rollout.action_set; use sft.data=self or a dialogue file")


def _validate_prompts(cfg) -> None:
    r = cfg.rollout
    if not r.prompts:
        return
    if r.prompts not in PROMPT_SETS:
        raise ConfigError(f"rollout.prompts={r.prompts!r} is not a registered prompt set; choose one of "
                          f"{sorted(PROMPT_SETS)} or register one with rema.prompts.register_prompt_set")
    two_agents = PROMPT_SETS[r.prompts].mta is not None
    if two_agents != (r.method == "rema"):
        has = "an MTA prompt" if two_agents else "no MTA prompt"
        raise ConfigError(f"rollout.prompts={r.prompts!r} has {has} but rollout.method={r.method}; use a set with "
                          f"{'none' if two_agents else 'one'}, or rollout.method={'rema' if two_agents else 'vrp'}")


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
        raise ConfigError(f"train.health.max_rollbacks must be >= 0 (0: the first firing check stops), got "
                          f"{h.max_rollbacks}")
    if not 0.0 < h.lr_factor <= 1.0:
        raise ConfigError(f"train.health.lr_factor multiplies the learning rate at a rollback and must be in (0, 1], "
                          f"got {h.lr_factor}")
    for key in ("turns_collapse", "pinned_share", "pinned_from", "format_drop", "format_from", "degenerate_share",
                "degenerate_from", "cliff_ratio"):
        if not 0.0 <= getattr(h, key) <= 1.0:
            raise ConfigError(f"train.health.{key} is a share and must be in [0, 1], got {getattr(h, key)}")
    for key in ("entropy_floor", "turns_collapse_from", "reward_cliff", "eval_cliff", "spike_factor", "kl_floor",
                "logp_drift"):
        if getattr(h, key) < 0:
            raise ConfigError(f"train.health.{key} must be >= 0, got {getattr(h, key)}")


def _validate_distill(cfg) -> None:
    d = cfg.distill
    for key, flag in (("concurrency", "--concurrency"), ("max_tokens", "--max-tokens")):
        if getattr(d, key) < 1:
            raise ConfigError(f"distill.{key} must be >= 1, got {getattr(d, key)} (rema distill {flag})")
    if d.max_retries < 0:
        raise ConfigError(f"distill.max_retries must be >= 0 (0 = no retry), got {d.max_retries}")
    if d.backoff_s < 0 or d.timeout_s <= 0:
        raise ConfigError(f"distill.backoff_s must be >= 0 and distill.timeout_s > 0, got {d.backoff_s} and {d.timeout_s}")
    if d.temperature < 0:
        raise ConfigError(f"distill.temperature must be >= 0, got {d.temperature}")
    if d.limit is not None and d.limit < 1:
        raise ConfigError(f"distill.limit must be >= 1 (or null for every row), got {d.limit}")


def _validate_eval(cfg) -> None:
    e = cfg.eval
    if not e.benches:
        raise ConfigError("eval.benches is empty; name at least one benchmark, e.g. eval.benches=[gsm8k] "
                          "(rema eval --bench gsm8k)")
    for key in ("n", "batch_size"):
        if getattr(e, key) < 1:
            raise ConfigError(f"eval.{key} must be >= 1, got {getattr(e, key)}")
    if e.limit is not None and e.limit < 1:
        raise ConfigError(f"eval.limit must be >= 1 (or null for every question), got {e.limit}")
    if e.checkpoint and not e.run:
        raise ConfigError(f"eval.checkpoint={e.checkpoint!r} picks a checkpoint of a run; set eval.run=RUN_DIR "
                          "(rema eval --run RUN_DIR) too")
    if cfg.rollout.eval_temperature < 0:
        raise ConfigError(f"rollout.eval_temperature must be >= 0 (0 = greedy), got {cfg.rollout.eval_temperature}")
    if e.n > 1 and cfg.rollout.eval_temperature == 0:
        raise ConfigError(f"eval.n={e.n} samples per question at rollout.eval_temperature=0 (greedy) would all be "
                          "the same; set rollout.eval_temperature > 0 (rema eval --temperature 1.0)")


def _validate_serve(cfg) -> None:
    v = cfg.serve
    if not 0 <= v.port <= 65535:
        raise ConfigError(f"serve.port must be a TCP port (0-65535), got {v.port}")
    if v.max_concurrency < 1:
        raise ConfigError(f"serve.max_concurrency must be >= 1, got {v.max_concurrency} (rema serve --max-concurrency)")
    if v.batch_wait_ms < 0:
        raise ConfigError(f"serve.batch_wait_ms must be >= 0 (0 = no wait), got {v.batch_wait_ms}")
    if v.max_request_bytes < 1024:
        raise ConfigError(f"serve.max_request_bytes must be >= 1024, got {v.max_request_bytes}")
