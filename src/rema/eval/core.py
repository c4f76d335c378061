"""Evaluation core shared by ``rema eval`` and the trainer's periodic held-out evaluation.

``run_eval`` = rollout (greedy by default) → scoring → ``episode_metrics``. The same metric names are
used for training batches, so curves line up: ``acc``, ``reward/<agent>``, ``end/<code>``, ``turns/mean``,
``tokens_per_turn/<agent>``, ``boxed_rate``, ``leak_rate`` (an MTA message holds a ``\\boxed{}``),
``plan_leak_rate`` (the MTA's first message gives the answer away: box, answer statement or closing
"= gold"), ``actions/<ACTION>`` and
``actions/<ACTION>/level_<L>`` (action-set mode).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from ..config import Config
from ..prompts import PromptSet, get_prompt_set
from ..rewards.format_terms import mta_format
from ..rollout import Engine, Episode, rollout
from ..rollout.episode import END_CODES
from ..scoring import score_episodes

_BOXED = re.compile(r"\\boxed\s*\{")


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
    if "mta" in agents:
        leaks = [any(_BOXED.search(t.text) for t in ep.turns_of("mta")) for ep in episodes]
        m["leak_rate"] = sum(leaks) / n
        # the stricter reading: the MTA's first message (written before the RA has worked on anything) gives the
        # answer away in any way ``mta_format`` flags: a box, an answer statement, or a closing "= gold"
        firsts = [ep.turns_of("mta")[0].text if ep.turns_of("mta") else "" for ep in episodes]
        m["plan_leak_rate"] = sum(mta_format(t, gold=ep.answer)[1]["leak"] for t, ep in zip(firsts, episodes)) / n
        actions = [t for ep in episodes for t in ep.turns_of("mta") if t.format_ok is not None]
        if actions:
            by_action = Counter(t.action or "INVALID" for t in actions)
            for a, c in by_action.items():
                m[f"actions/{a}"] = c / len(actions)
            by_level: dict[object, Counter] = defaultdict(Counter)
            for ep in episodes:
                for t in ep.turns_of("mta"):
                    if t.format_ok is not None:
                        by_level[ep.meta.get("level")][t.action or "INVALID"] += 1
            for level, counter in by_level.items():
                total = sum(counter.values())
                for a, c in counter.items():
                    m[f"actions/{a}/level_{level}"] = c / total
    levels = sorted({ep.meta.get("level") for ep in episodes if ep.meta.get("level") is not None}, key=str)
    for level in levels:
        eps = [ep for ep in episodes if ep.meta.get("level") == level]
        m[f"acc/level_{level}"] = sum(bool(ep.meta.get("correct")) for ep in eps) / len(eps)
    return m


def run_eval(
    problems: Sequence,
    engines: dict[str, Engine],
    cfg: Config,
    *,
    greedy: bool = True,
    n: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
    prompts: PromptSet | None = None,
    first_episode_id: int = 0,
    correctness_fn: Callable[[Episode], float] | None = None,
) -> tuple[dict[str, float], list[Episode]]:
    """Roll out ``n`` episodes per problem with ``cfg``'s method, score them, return (metrics, episodes).

    ``prompts`` overrides the prompt set implied by ``cfg.method_name`` (``rema eval`` uses it for
    single-agent judge prompt sets); ``first_episode_id`` numbers episodes across chunks;
    ``correctness_fn`` replaces the task's grader (see ``scoring.score_episodes``).
    """
    prompts = prompts or get_prompt_set(cfg.method_name)
    episodes = rollout(problems, cfg.rollout, engines, prompts, greedy=greedy, samples_per_question=n,
                       on_progress=on_progress, first_episode_id=first_episode_id)
    counters = score_episodes(episodes, cfg.reward, task=cfg.rollout.task, mode=cfg.rollout.mode,
                              correctness_fn=correctness_fn)
    metrics = episode_metrics(episodes)
    metrics.update(counters)
    return metrics, episodes
