"""The ``train.health`` section (docs/health.md): the collapse checks' thresholds and what a firing does. Its own
module so that :mod:`rema.config.sections` stays one screenful per concern."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class HealthConfig:
    """Health checks on every RL step (``train.health``; docs/health.md): each check reads the recent steps'
    metrics and fires when a signal of collapse holds for ``patience`` observations in a row; the run then warns,
    stops, or rolls back to its last healthy checkpoint with a lower learning rate. Thresholds are conservative:
    relative checks compare with the run's own recent steps and need a learned behaviour to lose first."""

    enabled: bool = True
    """Run the checks (``train.health=false`` is short for ``train.health.enabled=false``)."""
    action: str = "rollback"
    """What a firing check does: ``warn`` (a console line and an event in metrics.jsonl), ``stop`` (a checkpoint,
    then exit code 4 naming the check) or ``rollback`` (restore the newest healthy checkpoint, multiply the
    learning rate by ``lr_factor``, continue; a step-0 checkpoint is taken so there is always one)."""
    warn_only: list[str] = field(default_factory=list)
    """Checks that only warn whatever ``action`` says, e.g. ``[grad_spike,kl_spike]``."""
    skip: list[str] = field(default_factory=list)
    """Checks that do not run. The checks: ``entropy``, ``turns_collapse``, ``turns_pinned``, ``length_pinned``,
    ``format``, ``degenerate``, ``reward_cliff``, ``eval_cliff``, ``kl_spike``, ``grad_spike``, ``logp_drift``."""
    patience: int = 2
    """Consecutive steps a condition must hold before its check fires (held-out evaluations: ``eval_patience``)."""
    eval_patience: int = 1
    """Consecutive held-out evaluations below the cliff before ``eval_cliff`` fires (evaluations are rare)."""
    min_history: int = 3
    """Steps a relative check needs before the ones it judges (its baseline, whose median it compares with)."""
    window: int = 20
    """How many steps back the baseline of a relative check reaches."""
    smooth: int = 3
    """``reward_cliff`` compares running means over this many steps (one step's batch is noisy)."""
    entropy_floor: float = 0.01
    """``entropy``: the policy's mean token entropy (``stats/entropy``, nats) at or below this."""
    turns_collapse: float = 0.4
    """``turns_collapse``: mean rounds per episode (``train/turns/mean``) below this share of their recent level
    (the median over ``window``: the meta-thinker stops thinking) ..."""
    turns_collapse_from: float = 2.5
    """... when that level was at least this many rounds."""
    pinned_share: float = 0.95
    """``turns_pinned`` / ``length_pinned``: the share of episodes ending at ``rollout.max_turns``
    (``train/end/max_turns``), or of an agent's messages cut at ``rollout.max_tokens_per_turn``
    (``train/truncated_turns/<agent>``), at or above this ..."""
    pinned_from: float = 0.5
    """... after its recent level (the median over ``window``) was at or below this (a model that never learned to
    stop does not fire)."""
    format_drop: float = 0.5
    """``format``: the share of episodes closed by [FINISH] (``train/end/finished``), of boxed answers
    (``train/boxed_rate``) or of judge verdicts found below this share of its recent level (the median over
    ``window``) ..."""
    format_from: float = 0.8
    """... when that level was at least this (a format the run had learned; below it, batches of a few
    questions swing too much)."""
    degenerate_share: float = 0.5
    """``degenerate``: the share of messages that repeat themselves (``train/degenerate/repetitive``) or are not
    text (``train/degenerate/non_text``) at or above this ..."""
    degenerate_from: float = 0.1
    """... after its recent level (the median over ``window``) was at or below this."""
    reward_cliff: float = 0.4
    """``reward_cliff``: training accuracy or an agent's reward (running mean over ``smooth`` steps) this far
    below its recent level (the median over ``window``), and below ``1 - cliff_ratio`` of it when positive."""
    eval_cliff: float = 0.2
    """``eval_cliff``: held-out accuracy (``eval/acc``, or ``eval/avg/acc``) this far below the median
    evaluation within ``window``, and below ``1 - cliff_ratio`` of it."""
    eval_min_episodes: int = 20
    """``eval_cliff`` judges only evaluations of at least this many episodes per set (on 4 questions one answer
    moves accuracy by 25 points)."""
    cliff_ratio: float = 0.5
    """The relative part of the two cliffs: a value must also fall below ``(1 - cliff_ratio) x level``."""
    spike_factor: float = 10.0
    """``kl_spike`` / ``grad_spike`` / ``logp_drift``: a value above this many times its median over ``window``."""
    kl_floor: float = 0.05
    """``kl_spike``: KL (``stats/kl``, ``stats/approx_kl``) spikes count only above this."""
    logp_drift: float = 0.25
    """``logp_drift``: the post-sync check's mean |log-prob difference| between the engine and the trainer
    (``sync/sync_check_mean_abs_diff`` under vLLM, ``check/sampler_logp_abs_diff``) above this (and above
    ``spike_factor`` x its median): the sampler no longer samples the policy being trained."""
    lr_factor: float = 0.5
    """``rollback``: the learning rate is multiplied by this at each rollback (0.5: halved)."""
    max_rollbacks: int = 3
    """``rollback``: a check firing after this many rollbacks stops the run (exit code 4)."""
    reseed: bool = True
    """``rollback``: draw new sampling seeds after restoring, so the replayed steps sample other episodes."""
