"""The held-out evaluation of a training run (``data.eval``, every ``train.eval_every`` steps and at step 0):
each set in turn, every process evaluating its share of the problems, the metrics merged over the processes;
and the console's line for it. The trainer logs the result (:meth:`rema.train.trainer.Trainer._log_eval`)."""

from __future__ import annotations

from ..config import Config
from ..scoring import run_eval
from .distributed import Dist, merge_metrics
from .memory import release_freed_memory
from .metrics import MetricsLogger


def evaluate_sets(
    eval_sets: dict[str, list],
    engines: dict,
    cfg: Config,
    *,
    prompts,
    correctness_fn,
    dist: Dist,
    logger: MetricsLogger,
    step: int,
    prefix: str,
) -> dict[str, dict[str, float]]:
    """Each set's metrics by name (:func:`rema.scoring.run_eval` at ``rollout.eval_temperature``, merged over
    the processes, weighted by episodes). The first ``train.samples_to_log`` episodes of each set go to
    ``samples.jsonl`` under the split ``<prefix>`` (one set) or ``<prefix>/<set>``."""
    per_set = {}
    for name, problems in eval_sets.items():
        metrics, episodes = run_eval(dist.shard(problems), engines, cfg, prompts=prompts, correctness_fn=correctness_fn)
        release_freed_memory()
        per_set[name] = merge_metrics(dist.gather(metrics), dist.gather(float(len(episodes))))
        split = prefix if len(eval_sets) == 1 else f"{prefix}/{name}"
        logger.samples(step, split, episodes[: cfg.train.samples_to_log])
    return per_set


def eval_summary(per_set: dict[str, dict[str, float]], record: dict[str, float], *, step: int, prefix: str) -> str:
    """The console's line for one evaluation: one set's accuracy and accuracy by level, or the average accuracy
    (``record``'s, :func:`~rema.train.metrics.eval_record`) and each set's."""
    what = "before the cold start" if prefix == "base_eval" else f"@ step {step}"
    if len(per_set) == 1:
        (metrics,) = per_set.values()
        levels = "  ".join(f"{k}={v:.2f}" for k, v in metrics.items() if k.startswith("acc/level_"))
        return f"eval {what}: acc {metrics.get('acc', 0):.3f}  {levels}"
    sets = "  ".join(f"{name} {m.get('acc', 0):.3f}" for name, m in per_set.items())
    return f"eval {what}: average acc {record.get(f'{prefix}/avg/acc', 0):.3f}  {sets}"
