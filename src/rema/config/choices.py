"""The valid values of every key that names something: one list per key, read by the validation
(:mod:`.checks`), by the commands' flags (``rema.cli_args.Shorthands`` gives a flag its key's choices) and by
docs/config.md (``rema.config_docs``).

Where a name means something to a registry, the list is that registry's own: ``algo.advantage`` is the keys of
``rema.algos.ADVANTAGE_ESTIMATORS`` at the moment the config is validated (an estimator registered with
``register_advantage_estimator`` is accepted from then on), ``algo.agg`` / ``ratio_level`` / ``ratio_mean``
are ``rema.algos.policy_loss``'s, ``train.lr_schedule`` is ``rema.algos.schedule``'s, the dtypes are
``rema.models.DTYPES``. The generation engines are listed here (:data:`ENGINES`) and ``rema.rollout.factory``
builds from this list, because the rollout package sits above the config.
"""

from __future__ import annotations

ENGINES: tuple[str, ...] = ("auto", "hf", "vllm")
"""``rollout.engine``: vLLM where installed else transformers (``auto``), transformers (``hf``), vLLM."""
ROLLOUT_METHODS: tuple[str, ...] = ("rema", "vrp", "mrp")
"""``rollout.method``: the two agents, or one of the single-agent baselines."""
MODES: tuple[str, ...] = ("single_turn", "multi_turn")
"""``rollout.mode``."""
ROW_TASKS: tuple[str, ...] = ("auto", "math", "judge")
"""``eval.task``: how a file's rows are read (``rema.data.load_problems``). (``rollout.task`` names a grader of
``rema.rewards.tasks``, a registry above the config: it is checked where it is used, before any model loads.)"""
ANSWER_FORMATS: tuple[str, ...] = ("auto", "boxed", "gsm8k", "raw")
"""``eval.answer_format`` (``rema.data.normalize_answer_value``'s modes)."""
TEACHER_STYLES: tuple[str, ...] = ("steps", "plan", "reduce", "reduce_solver", "reduce_givens")
"""``sft.teacher_style``: how the program teacher's multi-turn meta-thinker leads (``rema.data.teacher``)."""
OVER_LIMIT: tuple[str, ...] = ("refuse", "truncate")
"""``sft.over_limit``: what the cold start does with a dialogue RL could not reproduce (``rema.rollout.scripted``)."""
DIALOGUE_SOURCES: dict[str, str] = {
    "self": "the model's own correct episodes on data.train, rewritten in the method's format",
    "teacher": "exact dialogues a program teacher writes from synthetic problems' expressions (rema.data.teacher)",
}
"""``sft.data`` values that name a source of cold-start dialogues (-> what it gives); any other value is a
dialogue file, which the commands read and check before a model loads. A new source registers here
(:func:`register_dialogue_source`) and is dispatched on by the cold start (``rema.train.sft``)."""


def register_dialogue_source(name: str, description: str) -> None:
    """Make ``sft.data=name`` a source of dialogues rather than a file name (``description``: what it gives)."""
    if name in DIALOGUE_SOURCES:
        raise ValueError(f"dialogue source {name!r} is already registered")
    DIALOGUE_SOURCES[name] = description


def choice_table(*, shipped: bool = False) -> dict[str, tuple]:
    """Dotted key -> its valid values, the registries' lists read now; ``shipped``: only what rema itself
    registers (docs/config.md lists those, whatever a user's code registered in this process)."""
    from ..algos import ADVANTAGE_ESTIMATORS, AGG_MODES, RATIO_LEVELS, RATIO_MEANS
    from ..algos.schedule import LR_SCHEDULES
    from ..models.loading import DTYPES

    estimators = tuple(
        name
        for name, fn in ADVANTAGE_ESTIMATORS.items()
        if not shipped or getattr(fn, "__module__", "").startswith("rema.")
    )

    return {
        "model.dtype": DTYPES,
        "rollout.method": ROLLOUT_METHODS,
        "rollout.mode": MODES,
        "rollout.engine": ENGINES,
        "rollout.vllm_sleep": (0, 1, 2),
        "rollout.vllm_dtype": ("", *DTYPES),
        "algo.advantage": estimators,
        "algo.ratio_level": RATIO_LEVELS,
        "algo.ratio_mean": RATIO_MEANS,
        "algo.agg": AGG_MODES,
        "train.lr_schedule": LR_SCHEDULES,
        "train.autocast": ("off", "bf16", "auto"),
        "train.strategy": ("ddp", "fsdp"),
        "train.update_agents": ("both", "mta", "ra"),
        "eval.task": ROW_TASKS,
        "eval.answer_format": ANSWER_FORMATS,
        "sft.over_limit": OVER_LIMIT,
        "sft.teacher_style": TEACHER_STYLES,
    }


def choices(key: str) -> tuple | None:
    """The valid values of dotted ``key`` (None: the key is not a choice)."""
    return choice_table().get(key)
