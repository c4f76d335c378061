"""vLLM tensor parallelism across processes (rema.rollout.tp_group): the ranks of one engine ask for different
prompts and different numbers of turns, yet make identical engine calls and get their own completions back.

The two ranks run as threads whose exchange is a barrier (what ``all_gather_object`` does between processes);
each rank has its own inner engine, as each process has its part of the vLLM engine."""

from __future__ import annotations

import pickle
import threading
from types import SimpleNamespace

import pytest

from rema.config import RolloutConfig
from rema.prompts import get_prompt_set
from rema.rollout import rollout
from rema.rollout.engine import Completion, Engine
from rema.rollout.tp_group import TPGroup, TPGroupEngine, plan_round, tp_groups


class Threads:
    """An all-gather between ``n`` threads; objects travel pickled, as between processes."""

    def __init__(self, n: int):
        self.n, self.slots = n, [None] * n
        self.barrier = threading.Barrier(n)

    def run(self, rank_fn) -> None:
        """Run ``rank_fn(rank, group)`` on ``n`` threads, one TPGroup each; fail on an error or a rank left
        waiting for its group."""
        errors = []

        def target(r):
            try:
                rank_fn(r, TPGroup(None, r, self.n, exchange=self.exchange_for(r)))
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)
                self.barrier.abort()

        workers = [threading.Thread(target=target, args=(r,), daemon=True) for r in range(self.n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=30)
        assert not errors, errors
        assert not any(w.is_alive() for w in workers), "a rank is still waiting for its group"

    def exchange_for(self, rank: int):
        def exchange(obj):
            self.slots[rank] = pickle.dumps(obj)
            self.barrier.wait()
            out = [pickle.loads(x) for x in self.slots]
            self.barrier.wait()  # nobody overwrites a slot before everyone has read the round
            return out

        return exchange


class Echo(Engine):
    """A deterministic engine: the reply depends only on the prompt (so a rank can check it got its own), and
    every call is recorded (the ranks of a tensor-parallel engine must make the same calls)."""

    def __init__(self, tokenizer, finish_after: dict[str, int]):
        self.tokenizer, self.finish_after, self.calls = tokenizer, finish_after, []

    def generate(self, prompts, params):
        self.calls.append([tuple(p) for p in prompts])
        outs = []
        for prompt in prompts:
            text = self.tokenizer.decode(prompt)
            question = next(q for q in self.finish_after if q in text)
            turns = text.count("<|im_start|>assistant") - 1  # this agent's earlier turns in its context
            reply = f"step {turns} of {question}" + (
                " [FINISH] \\boxed{1}" if turns + 1 >= self.finish_after[question] else ""
            )
            ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            outs.append(Completion(ids, [-0.1] * len(ids), "stop", self.tokenizer.eos_token_id))
        return outs


def test_groups_are_consecutive_ranks_and_must_divide_the_world():
    assert tp_groups(4, 2) == [[0, 1], [2, 3]]
    assert tp_groups(8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert tp_groups(2, 1) == [[0], [1]]
    with pytest.raises(ValueError, match="must divide"):
        tp_groups(6, 4)


def test_a_round_serves_each_engine_once_with_the_union_in_rank_order():
    plan = plan_round([("ra", [[1], [2]], [0, 0]), (None, [], []), ("ra", [[3]], [0]), ("mta", [[4]], [0])])
    assert plan == [("mta", [(3, 0, 1)]), ("ra", [(0, 0, 2), (2, 2, 1)])]
    assert plan_round([(None, [], []), (None, [], [])]) == []


@pytest.mark.parametrize("shared", [True, False])
def test_ranks_with_different_questions_and_turn_counts_make_identical_engine_calls(tiny, shared):
    """Rank 0's questions finish after 1 and 3 turns, rank 1's single one after 2: rank 1 ends its rollout
    first and keeps serving rank 0's rounds; every rank gets the episodes it would have got alone, and both
    ranks' inner engines see the same calls."""
    _, tok = tiny
    finish_after = {"alpha": 1, "beta": 3, "gamma": 2}
    questions = [["alpha", "beta"], ["gamma"]]
    cfg = RolloutConfig(
        mode="multi_turn", max_turns=4, max_tokens_per_turn=64, max_context_tokens=2048, samples_per_question=2
    )
    prompts = get_prompt_set("rema-multi")

    def problems(names):
        return [SimpleNamespace(id=q, question=f"What is {q}?", answer="1", meta={}) for q in names]

    def engines_for(group):
        if shared:
            e = TPGroupEngine(Echo(tok, finish_after), group, "shared")
            return {"mta": e, "ra": e}
        return {r: TPGroupEngine(Echo(tok, finish_after), group, r) for r in ("mta", "ra")}

    # alone: each rank's episodes without tensor parallelism
    alone = [
        rollout(problems(q), cfg, {"mta": Echo(tok, finish_after), "ra": Echo(tok, finish_after)}, prompts)
        for q in questions
    ]

    results, engines, own_rounds = [None, None], [None, None], [0, 0]

    def rank(r, group):
        engines[r] = engines_for(group)
        for engine in set(engines[r].values()):  # count the rounds this rank asked for itself

            def counted(prompts, params, _generate=engine.generate):
                own_rounds[r] += 1
                return _generate(prompts, params)

            engine.generate = counted
        results[r] = rollout(problems(questions[r]), cfg, engines[r], prompts)

    Threads(2).run(rank)
    for r in range(2):
        got = [(ep.problem_id, [t.text for t in ep.turns], ep.end_code) for ep in results[r]]
        want = [(ep.problem_id, [t.text for t in ep.turns], ep.end_code) for ep in alone[r]]
        assert got == want
    assert [len(ep.turns_of("ra")) for ep in results[0]] == [1, 1, 3, 3]
    for key in engines[0]:
        calls = [engines[r][key].inner.calls for r in range(2)]
        assert calls[0] == calls[1] and calls[0]  # the same prompts, in the same order, on both ranks
    # rank 1's rollout (2 turns) ended first: it went on taking part in rank 0's rounds (3 turns)
    group1 = engines[1]["ra"].group
    assert own_rounds[0] > own_rounds[1] and group1.rounds > own_rounds[1]


def test_a_rank_without_questions_serves_its_peers_rollouts_twice_in_a_row(tiny):
    """A rank with no questions (fewer questions than processes, an eval shard) only serves the other's
    rounds, rollout after rollout, with separate weights' two engines in one group."""
    _, tok = tiny
    finish_after = {"alpha": 2}
    cfg = RolloutConfig(
        mode="multi_turn", max_turns=3, max_tokens_per_turn=64, max_context_tokens=2048, samples_per_question=1
    )
    prompts = get_prompt_set("rema-multi")
    results = [[], []]

    def rank(r, group):
        engines = {role: TPGroupEngine(Echo(tok, finish_after), group, role) for role in ("mta", "ra")}
        problems = [SimpleNamespace(id="alpha", question="What is alpha?", answer="1", meta={})] if r == 0 else []
        for _ in range(2):
            results[r].append(rollout(problems, cfg, engines, prompts))

    Threads(2).run(rank)
    assert [[len(ep.turns_of("ra")) for ep in eps] for eps in results[0]] == [[2], [2]] and results[1] == [[], []]
