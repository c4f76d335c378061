"""Scoring and summarising episodes: the layer below both training and evaluation.

``score_episodes`` turns finished episodes into per-agent rewards by composing the pure terms of
``rewards.terms`` in one place; ``episode_metrics`` summarises scored episodes; ``run_eval`` is
rollout → ``score_episodes`` → ``episode_metrics`` (``rema eval`` and the trainer's held-out evaluation).

The reward of an agent in an episode (every component kept in ``episode.reward_parts[agent]``):

1. correctness, shared by both agents and every turn (docs/design.md §2): the RA's final response graded against the
   reference answer (one batched call to the grader pool, hard timeout per item; a right answer given
   outside ``\\boxed{}`` earns ``reward.unboxed_credit`` of it), the judge verdict, or a custom
   ``correctness_fn``;
2. unfinished masking (``reward.mask_unfinished``): an episode not ended ``finished`` scores 0;
3. plus the shaping terms ``selected_terms`` picks from the config: the single-turn format terms
   (``reward.format_terms``: the MTA is penalised for leaking an answer, the RA for not ending with exactly
   one ``\\boxed{}``), otherwise the plan-leak term (``reward.plan_leak_penalty``: the MTA alone, when its
   first message gives the answer away); and in action-set mode ``reward.action_format_penalty`` (the MTA
   alone, when its choice is not valid JSON).

The metric names are the same for training batches and evaluations, so curves line up: ``acc``,
``reward/<agent>``, ``reward_parts/<agent>/<part>``, ``end/<code>``, ``turns/mean``,
``tokens_per_turn/<agent>``, ``boxed_rate``, ``leak_rate`` (an MTA message holds a ``\\boxed{}``),
``plan_leak_rate`` (the MTA's first message gives the answer away: box, answer statement or closing
"= gold"), ``degenerate/repetitive`` and ``degenerate/non_text`` (shares of messages that repeat themselves or
are not text: ``repetitive``, ``non_text``), ``actions/<ACTION>``, ``actions/<ACTION>/level_<L>`` and
``action_level/<ACTION>/...`` (action-set mode, ``action_metrics``); judge episodes add
``judge/verdict_found``, ``judge/verdict_A`` (the share of verdicts that pick A: position bias when the labels
are balanced) and ``acc/family_<F>`` (accuracy per benchmark family, ``rema.rewards.judge_family``).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from .config import Config, ConfigError, RewardConfig
from .prompts import PromptSet, get_prompt_set
from .rewards import judge_family, last_verdict, mta_format
from .rewards.tasks import get_task
from .rewards.terms import TERMS, get_term, unfinished_mask
from .rollout import Engine, rollout
from .rollout.episode import END_CODES, Episode

CorrectnessFn = Callable[[Episode], float]
"""A custom shared reward: episode -> score in [0, 1] (replaces the task's grader; used by tests and users)."""

_BOXED = re.compile(r"\\boxed\s*\{")


def selected_terms(cfg: RewardConfig, mode: str, task: str = "math") -> list[tuple[str, dict[str, float]]]:
    """The shaping terms (names in ``rewards.terms.TERMS``, with their keyword arguments) that ``cfg`` adds to
    episodes of ``task`` played in rollout ``mode`` (the judge's format term asks for a verdict, not a box).

    Format terms apply only to ``single_turn`` episodes (per-turn format rewards in multi-turn are exploitable,
    docs/design.md §2), and only where ``cfg.format_terms`` asks for them; they include the plan-leak check, so the
    plan-leak term is added only where they are not. The action-set term (``cfg.action_format_penalty``) comes on
    top of either. This rule lives here so training, evaluation and
    ``rema chat`` score an episode the same way."""
    terms: list[tuple[str, dict[str, float]]] = []
    if cfg.format_terms and mode == "single_turn":
        terms.append(("judge_format" if task == "judge" else "format", {"penalty": -cfg.format_penalty}))
    elif cfg.plan_leak_penalty > 0:
        terms.append(("plan_leak", {"penalty": -cfg.plan_leak_penalty}))
    if cfg.action_format_penalty > 0:  # inert on episodes whose MTA made no action-set choice
        terms.append(("action_format", {"penalty": -cfg.action_format_penalty}))
    for name, penalty in cfg.extra_terms.items():  # registered with rewards.terms.register_term
        if name not in TERMS:
            raise ConfigError(f"reward.extra_terms: no reward term {name!r}; registered: {sorted(TERMS)} (add one with "
                              "rema.rewards.terms.register_term, docs/extending.md)")
        terms.append((name, {"penalty": float(penalty)}))
    return terms


def check_scoring(cfg: Config, *, custom_correctness: bool = False) -> None:
    """Fail now, naming the key, when ``rollout.task`` or ``reward.extra_terms`` names nothing registered (callers
    run it before loading models). ``custom_correctness``: a ``correctness_fn`` replaces the task's grader."""
    selected_terms(cfg.reward, cfg.rollout.mode)
    if not custom_correctness:
        get_task(cfg.rollout.task)


def score_episodes(episodes: list[Episode], cfg: RewardConfig, *, task: str = "math", mode: str = "multi_turn",
                   correctness_fn: CorrectnessFn | None = None) -> dict[str, float]:
    """Fill ``reward``/``reward_parts``/``meta['correct']``/``meta['extracted']`` on each episode; returns
    grading counters.

    ``mode`` is the rollout mode the episodes were played in (it decides the shaping terms, see
    ``selected_terms``); ``task`` picks the correctness reward (the grader registered under that name in
    ``rewards.tasks``: ``math``, ``judge``, or a user's) unless ``correctness_fn`` replaces it."""
    terms = [(get_term(name), kwargs) for name, kwargs in selected_terms(cfg, mode, task)]
    if correctness_fn is not None:
        scores = [float(correctness_fn(ep)) for ep in episodes]
        graded = [(s, {"correct": s}, None) for s in scores]
    else:
        graded = get_task(task)([ep.final_response for ep in episodes], [ep.answer for ep in episodes], cfg)
    timeouts = sum(parts.get("timed_out", 0.0) for _, parts, _ in graded)
    for ep, (r, parts, ext) in zip(episodes, graded):
        ep.meta["correct"] = parts["correct"] >= 1.0
        ep.meta["extracted"] = ext
        shared, mask_parts = unfinished_mask(r, ep.end_code, enabled=cfg.mask_unfinished)
        for agent in ep.views:
            total = shared
            agent_parts = {**parts, **mask_parts}
            for term, kwargs in terms:
                value, term_parts = term(ep, agent, **kwargs)
                total += value
                agent_parts.update(term_parts)
            ep.reward[agent] = float(total)
            ep.reward_parts[agent] = {k: float(v) for k, v in agent_parts.items()}
    return {"grader/timeouts": float(timeouts), "grader/items": float(len(episodes))}


def repeated_share(text: str, n: int = 8) -> float:
    """The share of a message's character n-grams that already occurred earlier in it (0: none repeats; a
    message looping on one phrase tends to 1). Messages shorter than ``2 n`` characters count as 0."""
    if len(text) < 2 * n:
        return 0.0
    grams = [text[i:i + n] for i in range(len(text) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def repetitive(text: str) -> bool:
    """A message that mostly repeats itself: more than half of its 8-character windows occurred before in it."""
    return repeated_share(text) > 0.5


_GARBAGE = {"Cc", "Cf", "Cn", "Co", "Cs"}  # control, format, unassigned, private use, surrogates


def non_text(text: str) -> bool:
    """A message that is not text: over a fifth of its characters are control/unassigned/undecodable
    (U+FFFD), or, from 16 characters on, under a fifth are letters or digits (``))))))``, ``!!!!``)."""
    if not text:
        return False
    garbage = sum(c == "\ufffd" or (unicodedata.category(c) in _GARBAGE and c not in "\n\t\r") for c in text)
    if garbage > 0.2 * len(text):
        return True
    visible = [c for c in text if not c.isspace()]
    return len(visible) >= 16 and sum(c.isalnum() for c in visible) < 0.2 * len(visible)


def episode_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """Aggregate metrics of a list of scored episodes (means over episodes unless said otherwise)."""
    n = len(episodes)
    if n == 0:
        return {}
    m: dict[str, float] = {"episodes": float(n)}
    m["acc"] = sum(bool(ep.meta.get("correct")) for ep in episodes) / n
    codes = Counter(ep.end_code for ep in episodes)
    for code in END_CODES:
        m[f"end/{code}"] = codes.get(code, 0) / n
    m["turns/mean"] = sum(ep.n_rounds for ep in episodes) / n
    agents = sorted({a for ep in episodes for a in ep.views})
    for agent in agents:
        rewards = [ep.reward[agent] for ep in episodes if agent in ep.reward]
        if rewards:
            m[f"reward/{agent}"] = sum(rewards) / len(rewards)
        turns = [t for ep in episodes for t in ep.turns_of(agent)]
        if turns:
            m[f"tokens_per_turn/{agent}"] = sum(len(t.token_ids) for t in turns) / len(turns)
            m[f"truncated_turns/{agent}"] = sum(t.truncated for t in turns) / len(turns)
        parts = defaultdict(list)
        for ep in episodes:
            for k, v in ep.reward_parts.get(agent, {}).items():
                parts[k].append(v)
        for k, vs in parts.items():
            m[f"reward_parts/{agent}/{k}"] = sum(vs) / len(vs)
    m["boxed_rate"] = sum(bool(_BOXED.search(ep.final_response)) for ep in episodes) / n
    messages = [t for ep in episodes for t in ep.turns]
    if messages:
        m["degenerate/repetitive"] = sum(repetitive(t.text) for t in messages) / len(messages)
        m["degenerate/non_text"] = sum(non_text(t.text) for t in messages) / len(messages)
    if "mta" in agents:
        leaks = [any(_BOXED.search(t.text) for t in ep.turns_of("mta")) for ep in episodes]
        m["leak_rate"] = sum(leaks) / n
        # the stricter reading: the MTA's first message (written before the RA has worked on anything) gives the
        # answer away in any way ``mta_format`` flags: a box, an answer statement, or a closing "= gold"
        firsts = [ep.turns_of("mta")[0].text if ep.turns_of("mta") else "" for ep in episodes]
        m["plan_leak_rate"] = sum(mta_format(t, gold=ep.answer)[1]["leak"] for t, ep in zip(firsts, episodes)) / n
        m.update(action_metrics(episodes))
    m.update(_judge_metrics(episodes))
    levels = sorted({ep.meta.get("level") for ep in episodes if ep.meta.get("level") is not None}, key=str)
    for level in levels:
        eps = [ep for ep in episodes if ep.meta.get("level") == level]
        m[f"acc/level_{level}"] = sum(bool(ep.meta.get("correct")) for ep in eps) / len(eps)
    return m


def _judge_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """Verdict rates and per-family accuracy of the judge-task episodes among ``episodes`` (those scored by
    ``judge_verdict``: their RA's reward parts hold ``verdict_found``)."""
    judged = [ep for ep in episodes if "verdict_found" in ep.reward_parts.get("ra", {})]
    if not judged:
        return {}
    verdicts = [v for v in (last_verdict(ep.final_response) for ep in judged) if v is not None]
    m = {"judge/verdict_found": len(verdicts) / len(judged)}
    if verdicts:
        m["judge/verdict_A"] = sum(v == "A" for v in verdicts) / len(verdicts)
    by_family: dict[str, list[bool]] = defaultdict(list)
    for ep in judged:
        family = judge_family(ep.meta.get("subset"))
        if family is not None:
            by_family[family].append(bool(ep.meta.get("correct")))
    m.update({f"acc/family_{f}": sum(v) / len(v) for f, v in sorted(by_family.items())})
    return m


def action_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """What the MTA chose in action-set mode, over its messages that carry a choice (``format_ok`` set), each
    paired with its question's difficulty level (``meta["level"]``; questions without a numeric level count in
    ``actions/<A>`` only). ``A`` is DECOMPOSE / REWRITE / EMPTY, or INVALID when the JSON did not parse.

    * ``actions/<A>``: P(A), the share of those messages choosing A;
    * ``actions/<A>/level_<L>``: P(A | level L), the share of level-L messages choosing A;
    * ``action_level/<A>/mean``: E[level | A], the mean difficulty of the questions A was chosen for (the paper's
      Fig. 4 follows this per action over training: an MTA that adapts picks DECOMPOSE for harder questions);
    * ``action_level/<A>/level_<L>``: P(level L | A), the distribution behind that mean.

    Empty when no message carries a choice (not action-set mode)."""
    choices = [(t.action or "INVALID", ep.meta.get("level")) for ep in episodes for t in ep.turns_of("mta")
               if t.format_ok is not None]
    if not choices:
        return {}
    m: dict[str, float] = {}
    for a, c in Counter(a for a, _ in choices).items():
        m[f"actions/{a}"] = c / len(choices)
    leveled = [(a, lv) for a, lv in choices if isinstance(lv, int) and not isinstance(lv, bool)]
    for lv, n in Counter(lv for _, lv in leveled).items():
        for a, c in Counter(a for a, l2 in leveled if l2 == lv).items():
            m[f"actions/{a}/level_{lv}"] = c / n
    for a, n in Counter(a for a, _ in leveled).items():
        levels = [lv for a2, lv in leveled if a2 == a]
        m[f"action_level/{a}/mean"] = sum(levels) / n
        for lv, c in Counter(levels).items():
            m[f"action_level/{a}/level_{lv}"] = c / n
    return m


def run_eval(
    problems: Sequence,
    engines: dict[str, Engine],
    cfg: Config,
    *,
    greedy: bool | None = None,
    n: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
    prompts: PromptSet | None = None,
    first_episode_id: int = 0,
    correctness_fn: CorrectnessFn | None = None,
) -> tuple[dict[str, float], list[Episode]]:
    """Roll out ``n`` episodes per problem with ``cfg``'s method, score them, return (metrics, episodes).

    ``greedy=None`` samples at ``rollout.eval_temperature`` (greedy at 0, the default), as every evaluation does
    (the trainer's held-out sets, ``rema eval``); True / False: greedy, or ``cfg.rollout.temperature``.
    ``prompts`` overrides the prompt set implied by ``cfg.method_name`` (``rema eval`` uses it for
    single-agent judge prompt sets); ``first_episode_id`` numbers episodes across chunks;
    ``correctness_fn`` replaces the task's grader (see ``score_episodes``).
    """
    prompts = prompts or get_prompt_set(cfg.method_name)
    rcfg = cfg.rollout
    if greedy is None:
        rcfg = dataclasses.replace(rcfg, temperature=rcfg.eval_temperature)
        greedy = rcfg.temperature == 0
    episodes = rollout(problems, rcfg, engines, prompts, greedy=greedy, samples_per_question=n,
                       on_progress=on_progress, first_episode_id=first_episode_id)
    counters = score_episodes(episodes, cfg.reward, task=cfg.rollout.task, mode=cfg.rollout.mode,
                              correctness_fn=correctness_fn)
    metrics = episode_metrics(episodes)
    metrics.update(counters)
    return metrics, episodes
