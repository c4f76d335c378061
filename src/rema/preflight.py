"""What a command checks before it loads weights or creates a directory, and what ``--dry-run`` prints.

A run of the paper's setup costs a day of 8 GPUs; a mistake in its inputs must cost seconds. So ``rema train``,
``rema sft`` and ``rema eval`` read their inputs first, each failure one line naming the file:line or key:

1. the config: ``load_config`` (every range and combination), then for training :func:`~rema.config.check_training`;
2. the data: every data set (``data.train``, each ``data.eval`` set; ``rema eval``'s benchmarks), every row
   converted, so a bad row stops the command with its ``file:line`` (:func:`load_data`);
3. a dialogue file (``sft.data``) for the cold start: read, checked row by row, and replayed under the rollout
   limits: a dialogue that RL could not reproduce is refused (``sft.over_limit``; :func:`load_dialogue_file`,
   :func:`fit_dialogues`, which the cold start also uses to cut dialogues under ``sft.over_limit=truncate``);
4. the model's name: its tokenizer and chat template load (no weights), and one episode's opening prompts for each
   agent are rendered (:func:`budget`): they must leave room for a first turn in ``rollout.max_context_tokens``,
   and a warning says how many rounds fit at full length when not all of them do (the messages alone must fit:
   :func:`~rema.config.check_training`).

``--dry-run`` does the same on the first rows of every data set and prints the plan instead of running it
(:func:`training_plan`): the prompts' sizes, the budget, steps, rows and tokens per step, and the memory per
process from ``rema plan``'s model. Nothing is written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .config import Config, ConfigError, RolloutConfig
from .config.checks import turn_budget, warn_once
from .config.choices import DIALOGUE_SOURCES
from .data import DataError, load_split
from .data.benchmarks import dataset_names
from .data.dialogues import DialogueError
from .prompts import PromptSet, get_prompt_set, ra_first_message
from .rollout.scripted import replay

FIRST_ROWS = 8
"""Rows a dry run reads of each data set."""


@dataclass
class Inputs:
    """What a training command read before loading any weights."""

    train: list
    evals: dict[str, list]
    """Held-out sets by name (``data.eval``)."""
    dialogues: list | None
    """The dialogue file's dialogues (``sft.data`` a file and a cold start), else None."""
    tokenizer: object
    prompts: PromptSet


def load_data(cfg: Config, *, limit: int | None = None) -> tuple[list, dict[str, list]]:
    """``(data.train's problems, {eval set name: problems})``, every row converted (``limit``: the first rows of
    each set only; the whole set when ``data.levels`` filters it, so the filter has rows to keep)."""
    d = cfg.data
    fields = dict(data_dir=d.data_dir, question_field=d.question_field, answer_field=d.answer_field, levels=d.levels)
    first = None if d.levels else limit
    cap = min((x for x in (first, d.eval_limit) if x is not None), default=None)
    train = _named("data.train", lambda: load_split(d.train, **fields, limit=first))
    evals = {
        name: _named("data.eval", lambda spec=spec: load_split(spec, **fields, limit=cap))
        for name, spec in zip(dataset_names(d.eval_specs), d.eval_specs)
    }
    return train, evals


def _named(key: str, load):
    """``load()``, its :class:`~rema.data.DataError` prefixed with the config key whose data it read."""
    try:
        return load()
    except DataError as err:
        raise DataError(f"{key}: {err}") from err


def load_dialogue_file(cfg: Config, prompts: PromptSet, tokenizer) -> list | None:
    """The dialogues of ``sft.data`` when it is a file (None for a source such as ``self``), each checked against
    the method and, under ``sft.over_limit=refuse``, replayed under the rollout limits."""
    from .data.dialogues import load_dialogues

    s, r = cfg.sft, cfg.rollout
    if s.data in DIALOGUE_SOURCES:
        return None
    dialogues = load_dialogues(
        s.data, two_agents=prompts.mta is not None, multi_turn=r.mode == "multi_turn", max_turns=r.max_turns
    )
    if s.over_limit == "refuse":
        fit_dialogues(dialogues, r, prompts, tokenizer, over_limit="refuse", source=s.data)
    return dialogues


def check_teacher_dialogues(cfg: Config, train: list, prompts: PromptSet, tokenizer) -> None:
    """``sft.data=teacher`` under ``sft.over_limit=refuse``: the program teacher's dialogues, written now as the
    cold start will write them (no sampling), replayed under the rollout limits, so that a plan longer than
    ``rollout.max_tokens_per_turn`` is refused before any weights load."""
    from .data.teacher import cold_start_questions, teacher_dialogues

    if cfg.sft.data != "teacher" or cfg.sft.over_limit != "refuse":
        return
    dialogues, _ = teacher_dialogues(cold_start_questions(cfg, train), cfg)
    fit_dialogues(dialogues, cfg.rollout, prompts, tokenizer, over_limit="refuse", source="sft.data=teacher")


def load_tokenizers(cfg: Config, *, materialize: bool = True):
    """The tokenizer of ``model.name`` (and of ``model.ra_name``, checked only: both agents must be loadable) —
    no weights. ``materialize=False`` writes nothing (the embedded model's tokenizer is read from its GGUF)."""
    from .models import load_tokenizer

    tokenizer = load_tokenizer(cfg.model.name, materialize=materialize)
    if cfg.model.ra_name and not cfg.train.shared_weights:
        load_tokenizer(cfg.model.ra_name, materialize=materialize)
    return tokenizer


def check_training_inputs(
    cfg: Config, *, cold_start: bool, limit: int | None = None, materialize: bool = True
) -> Inputs:
    """Everything ``rema train`` (``cold_start``: ``sft.cold_start``) or ``rema sft`` (always) reads before
    loading weights: the data sets, the dialogue file, the tokenizer, and the turn budget of the longest
    question read (:func:`budget`). Raises a one-line error naming what to fix."""
    from .scoring import check_scoring

    check_scoring(cfg)  # rollout.task and reward.extra_terms name registered graders and terms
    train, evals = load_data(cfg, limit=limit)
    prompts = get_prompt_set(cfg.method_name)
    tokenizer = load_tokenizers(cfg, materialize=materialize)
    dialogues = load_dialogue_file(cfg, prompts, tokenizer) if cold_start else None
    if cold_start:
        check_teacher_dialogues(cfg, train, prompts, tokenizer)
    b = budget(cfg, prompts, tokenizer, train[: FIRST_ROWS * 8])
    b.refuse_unless_a_turn_fits()
    if b.rounds_that_fit < b.rounds:  # the messages alone fit (check_training); with the prompt the last ones do not
        warn_once(
            f"rollout: with the longest question read ({max(b.opening.values())} tokens of opening prompt), "
            f"{b.rounds_that_fit} of {b.rounds} rounds fit rollout.max_context_tokens={b.context} at full "
            f"length (the context reaches {b.need}); longer dialogues end context_exceeded"
        )
    return Inputs(train, evals, dialogues, tokenizer, prompts)


# ------------------------------------------------------------------------------------------ the dialogues


def over_limits(ep, cfg: RolloutConfig) -> str | None:
    """Why RL under ``cfg`` could not produce the replayed episode ``ep`` (None when it could): a message longer
    than ``max_tokens_per_turn`` (the sampler would cut it there), or a turn whose context plus
    ``max_tokens_per_turn`` passes ``max_context_tokens`` (the episode would end ``context_exceeded`` before it).
    Rounds over ``max_turns`` are refused when a dialogue file is read (``rema.data.dialogues.check_dialogue``)."""
    for t in ep.turns:
        if len(t.token_ids) > cfg.max_tokens_per_turn:
            return (
                f"its {t.agent} message of round {t.index + 1} takes {len(t.token_ids)} tokens, over "
                f"rollout.max_tokens_per_turn={cfg.max_tokens_per_turn}"
            )
        if t.context_len + cfg.max_tokens_per_turn > cfg.max_context_tokens:
            return (
                f"its {t.agent} message of round {t.index + 1} starts at {t.context_len} tokens of context, and "
                f"{t.context_len} + rollout.max_tokens_per_turn={cfg.max_tokens_per_turn} is over "
                f"rollout.max_context_tokens={cfg.max_context_tokens}"
            )
    return None


def _cut(dialogue, tokenizer, max_tokens: int):
    """``dialogue`` with every message cut to ``max_tokens - 1`` tokens (its end-of-turn token is the last one
    RL's limit allows), and how many messages were cut."""
    turns, cut = [], 0
    for agent, text in dialogue.turns:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > max_tokens - 1:
            text, cut = tokenizer.decode(ids[: max_tokens - 1], skip_special_tokens=True), cut + 1
        turns.append((agent, text))
    return dataclasses.replace(dialogue, turns=turns), cut


def fit_dialogues(
    dialogues, cfg: RolloutConfig, prompts: PromptSet, tokenizer, *, over_limit: str = "refuse", source: str = ""
) -> tuple[list, dict[str, float]]:
    """The cold-start dialogues that RL under ``cfg`` could reproduce (:func:`over_limits` on their replay).

    ``over_limit="refuse"``: the first one that RL could not reproduce raises :class:`DialogueError` naming it
    (``source``: where the dialogues came from) and what to change. ``"truncate"``: messages over
    ``max_tokens_per_turn`` are cut to it, as the sampler would cut them, and dialogues whose context still does
    not fit are left out. Returns ``(dialogues, {"truncated_messages": n, "dropped_dialogues": m})``."""
    kept, truncated, dropped = [], 0, 0
    for d in dialogues:
        why = over_limits(replay(d, cfg, prompts, tokenizer), cfg)
        if why and over_limit == "refuse":
            where = f"{source}: " if source else ""
            raise DialogueError(
                f"{where}dialogue {d.id or '?'}: {why}; RL could not reproduce it: shorten it, raise "
                "the limit, or set sft.over_limit=truncate (cuts long messages, leaves out what still "
                "does not fit)"
            )
        if why:
            d, n = _cut(d, tokenizer, cfg.max_tokens_per_turn)
            truncated += n
            if over_limits(replay(d, cfg, prompts, tokenizer), cfg):
                dropped += 1
                continue
        kept.append(d)
    return kept, {"truncated_messages": float(truncated), "dropped_dialogues": float(dropped)}


# --------------------------------------------------------------------------------------------- the budget


@dataclass
class Budget:
    """The tokens of one episode's opening prompts and the most context its turns can take."""

    opening: dict[str, int]
    """Agent -> tokens of its opening context (system prompt and first message; the RA's holds the MTA's first
    message at its longest)."""
    per_round: int
    """Tokens a round adds to an agent's context: both messages at ``max_tokens_per_turn`` and the template's glue."""
    max_tokens: int
    rounds: int
    context: int
    """``rollout.max_context_tokens``."""

    @property
    def need(self) -> int:
        """The most tokens an agent's context reaches: its opening plus every turn at ``max_tokens_per_turn``."""
        return max(self.opening.values()) + (self.rounds - 1) * self.per_round + self.max_tokens

    @property
    def rounds_that_fit(self) -> int:
        """Rounds played at full length before the next turn would not fit (``context_exceeded``)."""
        room = self.context - max(self.opening.values()) - self.max_tokens
        return 0 if room < 0 else min(self.rounds, 1 + (room // self.per_round if self.per_round else self.rounds))

    def refuse_unless_a_turn_fits(self) -> None:
        """A :class:`ConfigError` when not even the first turn fits the context (every episode would end
        ``context_exceeded`` before it)."""
        if self.rounds_that_fit < 1:
            raise ConfigError(
                f"rollout: the longest question read opens at {max(self.opening.values())} tokens; with a "
                f"{self.max_tokens}-token message that is over rollout.max_context_tokens={self.context}, so no turn "
                "could be played: raise it, or lower rollout.max_tokens_per_turn"
            )


def budget(cfg: Config, prompts: PromptSet, tokenizer, problems) -> Budget:
    """The turn budget of the longest of ``problems`` rendered in the method's chat: its opening prompts, every
    message at ``max_tokens_per_turn`` tokens, the template's glue between turns."""
    from .rollout.chat import ChatCodec
    from .rollout.protocol import question_text

    r, codec = cfg.rollout, ChatCodec(tokenizer)
    T = r.max_tokens_per_turn
    glue = len(codec.close_assistant([], set())) + len(codec.user_turn(""))
    questions = [question_text(p) for p in problems] or [""]
    longest = max(questions, key=lambda q: len(codec.encode(q)))
    if prompts.mta is None:
        opening = {"ra": len(codec.start(prompts.ra, longest))}
    else:  # the RA starts from the question and the MTA's first message (up to T tokens)
        opening = {
            "mta": len(codec.start(prompts.mta, longest)),
            "ra": len(codec.start(prompts.ra, ra_first_message(longest, "."))) + T,
        }
    _, rounds = turn_budget(r)
    per_round = (2 * T + glue) if prompts.mta is not None else 0
    return Budget(opening, per_round, T, rounds, r.max_context_tokens)


# ------------------------------------------------------------------------------------------------ the plan


def memory_line(cfg: Config) -> str:
    """``rema plan``'s verdict for one process of this machine's kind (CPU), or why it is unknown."""
    from .models import ModelNotFoundError
    from .plan import config_shape, plan, setup_from_config, verdict

    try:
        shape = config_shape(cfg)
    except (ModelNotFoundError, OSError, ValueError) as err:
        return f"unknown ({' '.join(str(err).split())[:120]})"
    p = plan(shape, setup_from_config(cfg))
    return f"{shape.name} ({shape.params / 1e6:.0f}M params): {verdict(p, [])} (rema plan CONFIG for GPUs)"


def training_plan(cfg: Config, inputs: Inputs, *, command: str, cold_start: bool) -> list[str]:
    """The lines ``rema train|sft --dry-run`` prints: what was read, the budget, the work per step, the memory."""
    r, t, s = cfg.rollout, cfg.train, cfg.sft
    b = budget(cfg, inputs.prompts, inputs.tokenizer, inputs.train)
    first = inputs.train[0].question.replace("\n", " ")
    lines = [
        f"rema {command} --dry-run: the config resolves and its inputs load; nothing was written",
        f'  data.train   {cfg.data.train}: first {len(inputs.train)} rows read ("{first[:60]}")',
    ]
    lines += [f"  data.eval    {name}: first {len(rows)} rows read" for name, rows in inputs.evals.items()]
    if cold_start:
        what = (
            f"{len(inputs.dialogues)} dialogues, each replayable under the rollout limits"
            if inputs.dialogues is not None
            else DIALOGUE_SOURCES.get(s.data, "a source")
        )
        lines.append(f"  sft.data     {s.data}: {what}; {s.epochs} epoch(s) at lr {s.lr:g}")
    openings = ", ".join(f"{agent.upper()} {n}" for agent, n in b.opening.items())
    lines += [
        f"  model        {cfg.model.name}: tokenizer and chat template load",
        f"  prompts      {inputs.prompts.name}: opening tokens of the longest question read: {openings}",
        f"  budget       {b.rounds} round(s) x {r.max_tokens_per_turn} tokens per message: an agent's context "
        f"reaches {b.need} of rollout.max_context_tokens={b.context}"
        + ("" if b.rounds_that_fit == b.rounds else f" ({b.rounds_that_fit} rounds fit at full length)"),
    ]
    if command == "train":
        roles = 2 if inputs.prompts.mta is not None else 1
        episodes = t.questions_per_step * r.samples_per_question
        need, _ = turn_budget(r)
        lines += [
            f"  steps        {t.steps} x {t.questions_per_step} questions x {r.samples_per_question} samples = "
            f"{episodes} episodes per step, {episodes * roles} training rows ({roles} agent(s))",
            f"  tokens       at most {episodes * need:,} generated per step, {t.steps * episodes * need:,} "
            f"over the run",
        ]
    lines.append(f"  memory       {memory_line(cfg)}")
    return lines
