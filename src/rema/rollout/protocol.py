"""The MTA/RA rollout protocol (docs/design.md §1): questions in, episodes (token ids, log-probs, tags, end codes) out.

Single turn:  x → MTA plan m → RA answer y (graded).
Multi turn:   x → m1 → y1 → m2 → y2 → … until the MTA ends a message with [FINISH]; the RA's reply to that
              message is graded. Limits end an episode early with an end code (see ``episode.END_CODES``).
Single agent: x → y (the VRP / MRP baselines; the one agent plays the ``ra`` role).

Conversation views. The MTA's chat is ``system(MTA), user(x), assistant(m1), user(y1), assistant(m2)…``; the
RA's is ``system(RA), user(x + m1), assistant(y1), user(m2), assistant(y2)…`` with the finish marker removed
from what it sees. Each view is grown in token ids (``ChatCodec``): the sampled ids go in untouched, so the
training rows are exactly what was sampled.

Batching. Each step generates the next turn of *every* active episode in one engine call (MTA turns, then
RA turns); an episode leaves the batch when it ends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

from ..config import RolloutConfig
from ..prompts import ACTIONS, JUDGE_QUESTION, PromptSet, action_instruction, ra_first_message, strip_finish
from .chat import ChatCodec
from .engine import Engine, SamplingParams, stop_token_ids
from .episode import AgentView, Episode, Turn


def question_text(problem) -> str:
    """The text the MTA (or single agent) sees first. Judge problems are rendered from their parts with
    ``JUDGE_QUESTION``: a ``Problem``'s own ``prompt``/``response_a``/``response_b`` fields, else the same keys in
    ``meta`` (how ``rema chat`` and replayed dialogues pass them)."""
    parts = {k: getattr(problem, k, None) for k in ("prompt", "response_a", "response_b")}
    if any(v is None for v in parts.values()):
        meta = getattr(problem, "meta", None) or {}
        parts = {k: meta.get(k) for k in parts}
    if all(isinstance(v, str) for v in parts.values()):
        return JUDGE_QUESTION.format(**parts)
    return problem.question


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def parse_action(text: str) -> tuple[str | None, str, bool]:
    """Parse an action-set MTA message ``{"action": ..., "content": ...}``.

    Returns ``(action, content, ok)``; ``ok`` is False (a format failure) when there is no JSON object, it
    does not parse, or the action is not one of ``ACTIONS``.
    """
    match = _JSON_OBJECT.search(text)
    if not match:
        return None, "", False
    try:
        obj = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None, "", False
    if not isinstance(obj, dict):
        return None, "", False
    action = str(obj.get("action", "")).strip().upper()
    content = obj.get("content", "")
    if action not in ACTIONS or not isinstance(content, str):
        return None, "", False
    return action, content, True


class _Agent:
    """What the protocol needs to drive one role: its engine, codec and stop ids."""

    def __init__(self, name: str, engine: Engine, system: str | None):
        self.name, self.engine, self.system = name, engine, system
        self.codec = ChatCodec(engine.tokenizer)
        self.eos_ids = stop_token_ids(engine.tokenizer, getattr(engine, "model", None))


def rollout(
    problems: Sequence,
    cfg: RolloutConfig,
    engines: dict[str, Engine],
    prompts: PromptSet,
    *,
    greedy: bool = False,
    samples_per_question: int | None = None,
    first_episode_id: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    sampling: Sequence[SamplingParams | None] | None = None,
) -> list[Episode]:
    """Play ``samples_per_question`` (default ``cfg.samples_per_question``) episodes of every problem.

    Args:
        problems: objects with ``id``, ``question``, ``answer`` and ``meta``.
        engines: ``{"mta": engine, "ra": engine}`` (the same object twice for shared weights); single-agent
            methods need only ``"ra"``.
        prompts: the method's prompt set; ``prompts.mta is None`` means a single-agent method.
        greedy: sample at temperature 0 (evaluation), else ``cfg.temperature`` / ``cfg.top_p``.
        sampling: one entry per problem: how that problem's turns are sampled (``rema serve``'s requests each
            bring their own temperature and token limit), None for the default above. A ``max_tokens`` over
            ``cfg.max_tokens_per_turn`` is the caller's to refuse.
    Returns:
        Episodes in problem order, samples of one problem adjacent, each with an end code.
    """
    two_agents = prompts.mta is not None
    ra = _Agent("ra", engines["ra"], prompts.ra)
    mta = _Agent("mta", engines["mta"], prompts.mta) if two_agents else None
    default = SamplingParams(
        max_tokens=cfg.max_tokens_per_turn,
        temperature=0.0 if greedy else cfg.temperature,
        top_p=1.0 if greedy else cfg.top_p,
    )
    if sampling is not None and len(sampling) != len(problems):
        raise ValueError(f"{len(problems)} problems but {len(sampling)} sampling entries")
    episodes, params = _new_episodes(
        problems,
        samples_per_question or cfg.samples_per_question,
        prompts,
        first_episode_id=first_episode_id,
        sampling=sampling,
        default=default,
    )
    if not two_agents:
        _single_agent(ra, episodes, cfg, params)
        _report(on_progress, episodes)
        _end_rollout(engines)
        return episodes

    rounds = cfg.max_turns if cfg.mode == "multi_turn" else 1
    for ep in episodes:
        ep.views["mta"].extend_context(mta.codec.start(mta.system, ep.question))
    for r in range(rounds):
        active = [ep for ep in episodes if ep.end_code is None]
        if not active:
            break
        _round(mta, ra, active, r, cfg, params, prompts)
        _report(on_progress, episodes)
    for ep in episodes:
        if ep.end_code is None:
            ep.end_code = "max_turns"
    _report(on_progress, episodes)
    _end_rollout(engines)
    return episodes


def _new_episodes(
    problems: Sequence,
    g: int,
    prompts: PromptSet,
    *,
    first_episode_id: int,
    sampling: Sequence[SamplingParams | None] | None,
    default: SamplingParams,
) -> tuple[list[Episode], dict[int, SamplingParams]]:
    """``g`` empty episodes per problem (samples of one problem adjacent, ids from ``first_episode_id``), each
    with a view per role, and how each one's turns are sampled: ``(episodes, {episode id: params})``."""
    roles = ("mta", "ra") if prompts.mta is not None else ("ra",)
    episodes: list[Episode] = []
    params: dict[int, SamplingParams] = {}
    for i, p in enumerate(problems):
        for s in range(g):
            ep = Episode(
                episode_id=first_episode_id + len(episodes),
                problem_id=str(p.id),
                question=question_text(p),
                answer=str(p.answer),
                sample_index=s,
                method=prompts.name,
                meta=dict(getattr(p, "meta", None) or {}),
            )
            ep.views = {role: AgentView(role) for role in roles}
            params[ep.episode_id] = (sampling[i] if sampling is not None else None) or default
            episodes.append(ep)
    return episodes, params


def _single_agent(ra: _Agent, episodes: list[Episode], cfg: RolloutConfig, params: dict[int, SamplingParams]) -> None:
    """The single-agent baselines (VRP, MRP): x → y, one turn of the one agent (the ``ra`` role)."""
    for ep in episodes:
        ep.views["ra"].extend_context(ra.codec.start(ra.system, ep.question))
    _step(ra, episodes, 0, cfg, params)
    for ep in episodes:
        if ep.end_code is None:
            ep.end_code = "truncated" if (ep.turns[-1].truncated and cfg.stop_on_truncation) else "finished"


def _round(
    mta: _Agent,
    ra: _Agent,
    active: list[Episode],
    r: int,
    cfg: RolloutConfig,
    params: dict[int, SamplingParams],
    prompts: PromptSet,
) -> None:
    """Round ``r`` of the active episodes: the MTA's message (after reading the RA's last reply), handed to the
    RA without its finish marker (an action-set message as its instruction), then the RA's reply. An episode
    ends on a truncated turn (``rollout.stop_on_truncation``), or ``finished`` after the RA answers an MTA
    message that finished (every message does in single turn)."""
    multi = cfg.mode == "multi_turn"
    if r > 0:  # the MTA reads the RA's last reply
        for ep in active:
            ep.views["mta"].extend_context(mta.codec.user_turn(ep.turns_of("ra")[-1].text))
    _step(mta, active, r, cfg, params)
    finished: set[int] = set()
    for ep in active:
        if ep.end_code is not None:
            continue
        turn = ep.turns[-1]
        instruction, had_finish = strip_finish(turn.text)
        if cfg.action_set:
            turn.action, content, turn.format_ok = parse_action(turn.text)
            instruction = action_instruction(turn.action, content)
        if turn.truncated and cfg.stop_on_truncation:
            ep.end_code = "truncated"
            continue
        if had_finish or not multi:
            finished.add(ep.episode_id)
        if r == 0:
            ep.views["ra"].extend_context(ra.codec.start(ra.system, ra_first_message(ep.question, instruction)))
        else:
            ep.views["ra"].extend_context(ra.codec.user_turn(instruction or prompts.final_instruction))
    active = [ep for ep in active if ep.end_code is None]
    _step(ra, active, r, cfg, params)
    for ep in active:
        if ep.end_code is not None:
            continue
        if ep.turns[-1].truncated and cfg.stop_on_truncation:
            ep.end_code = "truncated"
        elif ep.episode_id in finished:
            ep.end_code = "finished"


def _end_rollout(engines: dict[str, Engine]) -> None:
    """Tell each distinct engine, in role order, that this rollout is over (an engine shared with other
    processes waits there for theirs: :mod:`rema.rollout.tp_group`)."""
    seen: set[int] = set()
    for role in ("mta", "ra"):
        engine = engines.get(role)
        if engine is not None and id(engine) not in seen:
            seen.add(id(engine))
            engine.end_rollout()


def _step(
    agent: _Agent, episodes: list[Episode], turn_index: int, cfg: RolloutConfig, params: dict[int, SamplingParams]
) -> None:
    """Generate ``agent``'s next turn for every episode in one engine call (context check first);
    ``params``: episode id -> its sampling parameters."""
    ready = []
    for ep in episodes:
        if ep.end_code is not None:
            continue
        if len(ep.views[agent.name].input_ids) + params[ep.episode_id].max_tokens > cfg.max_context_tokens:
            ep.end_code = "context_exceeded"
        else:
            ready.append(ep)
    if not ready:
        return
    outs = agent.engine.generate(
        [ep.views[agent.name].input_ids for ep in ready], [params[ep.episode_id] for ep in ready]
    )
    tok = agent.engine.tokenizer
    for ep, out in zip(ready, outs):
        view = ep.views[agent.name]
        context_len = len(view.input_ids)
        view.extend_sampled(out.token_ids, out.logprobs, turn_index)
        view.extend_context(agent.codec.close_assistant(out.token_ids, agent.eos_ids))
        text = tok.decode(out.token_ids, skip_special_tokens=True)
        ep.turns.append(
            Turn(
                agent=agent.name,
                index=turn_index,
                text=text.strip(),
                token_ids=list(out.token_ids),
                logprobs=list(out.logprobs),
                finish_reason=out.finish_reason,
                context_len=context_len,
            )
        )


def _report(on_progress, episodes: list[Episode]) -> None:
    if on_progress is not None:
        on_progress(sum(ep.end_code is not None for ep in episodes), len(episodes))
