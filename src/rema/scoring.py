"""Turning finished episodes into per-agent rewards (orchestration over the pure functions in ``rewards``).

Math task: the RA's final response is graded against the reference answer (one batched call to the
grader pool, hard timeout per item). The correctness reward is shared by both agents and every turn
(SPEC §2); a right answer given outside ``\\boxed{}`` earns only ``reward.unboxed_credit`` of it (1 = the
reference's lenient grading). Then, in order:

1. unfinished masking (``reward.mask_unfinished``): an episode not ended ``finished`` scores 0;
2. single-turn format terms (``reward.format_terms``): each agent adds its own term — the MTA is penalised
   for leaking an answer, the RA for not ending with exactly one ``\\boxed{}``;
3. otherwise, the plan-leak term (``reward.plan_leak_penalty``): the MTA alone is penalised when its first
   message gives the answer away.

Every component is kept in ``episode.reward_parts[agent]`` so metrics can show it.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import RewardConfig
from .rewards import grade_math_batch, judge_verdict, mta_format, ra_format, unfinished_mask
from .rollout.episode import Episode


CorrectnessFn = Callable[[Episode], float]
"""A custom shared reward: episode -> score in [0, 1] (replaces the task's grader; used by tests and users)."""


def score_episodes(episodes: list[Episode], cfg: RewardConfig, *, task: str = "math", mode: str = "multi_turn",
                   correctness_fn: CorrectnessFn | None = None) -> dict[str, float]:
    """Fill ``reward``/``reward_parts``/``meta['correct']`` on each episode; returns grading counters.

    ``mode`` is the rollout mode the episodes were played in: format terms apply only to ``single_turn``
    episodes (per-turn format rewards in multi-turn are exploitable, SPEC §2), and only where
    ``cfg.format_terms`` asks for them. This rule lives here so training, evaluation and ``rema chat`` score an
    episode the same way."""
    use_format = cfg.format_terms and mode == "single_turn"
    responses = [ep.final_response for ep in episodes]
    timeouts = 0
    extracted: list[str | None] = [None] * len(episodes)
    if correctness_fn is not None:
        scores = [float(correctness_fn(ep)) for ep in episodes]
        correctness = [(s, {"correct": s}) for s in scores]
    elif task == "judge":
        base = [judge_verdict(r, ep.answer) for r, ep in zip(responses, episodes)]
        correctness = [(rew, {"correct": rew, **parts}) for rew, parts in base]
    else:
        grades = grade_math_batch(responses, [ep.answer for ep in episodes], timeout_s=cfg.grader_timeout_s,
                                  workers=cfg.grader_workers)
        correctness = [(float(g.correct) * (1.0 if g.source == "boxed" else cfg.unboxed_credit),
                        {"correct": float(g.correct), "boxed": float(g.source == "boxed"),
                         "timed_out": float(g.timed_out)}) for g in grades]
        extracted = [g.extracted for g in grades]
        timeouts = sum(g.timed_out for g in grades)
    for ep, (r, parts), ext in zip(episodes, correctness, extracted):
        ep.meta["correct"] = parts["correct"] >= 1.0
        ep.meta["extracted"] = ext
        shared, mask_parts = unfinished_mask(r, ep.end_code, enabled=cfg.mask_unfinished)
        for agent in ep.views:
            total = shared
            agent_parts = {**parts, **mask_parts}
            if use_format:
                text = " ".join(t.text for t in ep.turns_of(agent))
                if agent == "mta":
                    term, fparts = mta_format(text, gold=ep.answer, penalty=-cfg.format_penalty)
                else:
                    term, fparts = ra_format(ep.final_response, penalty=-cfg.format_penalty)
                total += term
                agent_parts.update({f"format/{k}": float(v) for k, v in fparts.items()})
                agent_parts["format"] = term
            elif agent == "mta" and cfg.plan_leak_penalty > 0 and (first := ep.turns_of("mta")):
                term, fparts = mta_format(first[0].text, gold=ep.answer, penalty=-cfg.plan_leak_penalty)
                total += term
                agent_parts["plan_leak"] = float(fparts["leak"])
                agent_parts["plan_leak_term"] = term
            ep.reward[agent] = float(total)
            ep.reward_parts[agent] = {k: float(v) for k, v in agent_parts.items()}
    return {"grader/timeouts": float(timeouts), "grader/items": float(len(episodes))}
