"""The program teacher (``sft.data=teacher``): exact dialogues from synthetic expressions, per method, and the
cold start that trains on them."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch

from rema.config import ConfigError, load_config
from rema.config.checks import no_effect
from rema.data.dialogues import check_dialogue
from rema.data.problems import Problem
from rema.data.synthetic import LEVELS, arithmetic_steps, synthetic_problems
from rema.data.teacher import teacher_dialogue, teacher_dialogues
from rema.prompts import FINISH_MARKER, get_prompt_set
from rema.rewards import mta_format
from rema.rewards.restatement import restates_answer
from rema.rollout.scripted import replay
from rema.train import Trainer


class FirstChoice(random.Random):
    """An rng that always picks the first option: the teacher's first phrasing of every message, hand-checkable."""

    def choice(self, seq):
        return seq[0]

    def randrange(self, *args, **kwargs):
        return 0


# one problem per operation of levels 1-6, with its value worked out by hand
CASES = {
    "add": ({"a": 7, "b": 5}, "7 + 5", 12),
    "sub": ({"a": 47, "b": 6}, "47 - 6", 41),
    "mul": ({"a": 8, "b": 7}, "8 * 7", 56),
    "add_mul": ({"a": 3, "b": 4, "c": 5}, "(3 + 4) * 5", 35),
    "mul_add": ({"a": 6, "b": 3, "c": 7}, "6 * 3 + 7", 25),
    "mul_add_sub": ({"a": 4, "b": 6, "c": 5, "d": 3}, "4 * 6 + 5 - 3", 26),
    "add_mul_sub": ({"a": 7, "b": 2, "c": 3, "d": 4}, "(7 + 2) * 3 - 4", 23),
    "sub_mul_add": ({"a": 9, "b": 4, "c": 6, "d": 2}, "(9 - 4) * 6 + 2", 32),
}
# the multi-turn MTA's instructions and the RA's steps, by hand
MULTI_TURN = {
    "add": [("Add 7 and 5.", "7 + 5 = 12.")],
    "sub": [("Subtract 6 from 47.", "47 - 6 = 41.")],
    "mul": [("Multiply 8 by 7.", "8 × 7 = 56.")],
    "add_mul": [("First, add 3 and 4.", "3 + 4 = 7."), ("Finally, multiply 7 by 5.", "7 × 5 = 35.")],
    "mul_add": [("First, multiply 6 by 3.", "6 × 3 = 18."), ("Finally, add 18 and 7.", "18 + 7 = 25.")],
    "mul_add_sub": [
        ("First, multiply 4 by 6.", "4 × 6 = 24."),
        ("Now add 24 and 5.", "24 + 5 = 29."),
        ("Finally, subtract 3 from 29.", "29 - 3 = 26."),
    ],
    "add_mul_sub": [
        ("First, add 7 and 2.", "7 + 2 = 9."),
        ("Now multiply 9 by 3.", "9 × 3 = 27."),
        ("Finally, subtract 4 from 27.", "27 - 4 = 23."),
    ],
    "sub_mul_add": [
        ("First, subtract 4 from 9.", "9 - 4 = 5."),
        ("Now multiply 5 by 6.", "5 × 6 = 30."),
        ("Finally, add 30 and 2.", "30 + 2 = 32."),
    ],
}
# the single-turn plan (no result anywhere) and the worked solution, by hand
PLAN = {
    "add": "1. Add 7 and 5.",
    "sub": "1. Subtract 6 from 47.",
    "mul": "1. Multiply 8 by 7.",
    "add_mul": "1. Add 3 and 4.\n2. Multiply the result by 5.",
    "mul_add": "1. Multiply 6 by 3.\n2. Add 7 to the result.",
    "mul_add_sub": "1. Multiply 4 by 6.\n2. Add 5 to the result.\n3. Subtract 3 from the result.",
    "add_mul_sub": "1. Add 7 and 2.\n2. Multiply the result by 3.\n3. Subtract 4 from the result.",
    "sub_mul_add": "1. Subtract 4 from 9.\n2. Multiply the result by 6.\n3. Add 2 to the result.",
}
SOLUTION = {
    "add": "7 + 5 = 12.\nThe answer is \\boxed{12}.",
    "sub": "47 - 6 = 41.\nThe answer is \\boxed{41}.",
    "mul": "8 × 7 = 56.\nThe answer is \\boxed{56}.",
    "add_mul": "1. 3 + 4 = 7.\n2. 7 × 5 = 35.\nThe answer is \\boxed{35}.",
    "mul_add": "1. 6 × 3 = 18.\n2. 18 + 7 = 25.\nThe answer is \\boxed{25}.",
    "mul_add_sub": "1. 4 × 6 = 24.\n2. 24 + 5 = 29.\n3. 29 - 3 = 26.\nThe answer is \\boxed{26}.",
    "add_mul_sub": "1. 7 + 2 = 9.\n2. 9 × 3 = 27.\n3. 27 - 4 = 23.\nThe answer is \\boxed{23}.",
    "sub_mul_add": "1. 9 - 4 = 5.\n2. 5 × 6 = 30.\n3. 30 + 2 = 32.\nThe answer is \\boxed{32}.",
}


def _problem(op: str) -> Problem:
    operands, expression, value = CASES[op]
    return Problem(
        id=f"t-{op}",
        question=f"What is {expression.replace('*', '×')}?",
        answer=str(value),
        meta={"op": op, "operands": operands, "expression": expression},
    )


def test_arithmetic_steps_compute_every_synthetic_problem():
    for op, (operands, expression, value) in CASES.items():
        steps = arithmetic_steps(op, operands)
        assert steps[-1].result == value == eval(expression)
        assert [s.text for s in steps] == [m.split(" = ")[0] for _, m in MULTI_TURN[op]]
    for p in synthetic_problems(300, levels=tuple(LEVELS), seed=1):
        steps = arithmetic_steps(p.meta["op"], p.meta["operands"])
        assert str(steps[-1].result) == p.answer and all(s.result > 0 for s in steps)
        assert len(steps) == {1: 1, 2: 1, 3: 1, 4: 2, 5: 1, 6: 3}[p.meta["level"]]


@pytest.mark.parametrize("op", sorted(CASES))
def test_teacher_dialogue_of_each_operation_and_method_by_hand(op):
    p, value = _problem(op), CASES[op][2]
    multi = teacher_dialogue(p, "rema", "multi_turn", FirstChoice(), max_turns=4)
    expected = [t for mta, ra in MULTI_TURN[op] for t in (("mta", mta), ("ra", ra))]
    assert multi.turns == expected + [
        ("mta", f"That is the answer. {FINISH_MARKER}"),
        ("ra", f"The answer is \\boxed{{{value}}}."),
    ]
    single = teacher_dialogue(p, "rema", "single_turn", FirstChoice())
    assert single.turns == [("mta", PLAN[op]), ("ra", SOLUTION[op])]
    assert teacher_dialogue(p, "vrp", "single_turn", FirstChoice()).turns == [("ra", SOLUTION[op])]
    assert teacher_dialogue(p, "mrp", "multi_turn", FirstChoice()).turns == [  # the mode does not matter for mrp
        ("ra", f"Plan:\n{PLAN[op]}\n\nSolution:\n{SOLUTION[op]}")
    ]
    for d in (multi, single):
        assert (d.question, d.answer, d.id) == (p.question, p.answer, p.id)


def test_teacher_plan_style_opens_with_the_numbered_plan_by_hand():
    """``sft.teacher_style=plan``: the plan (no results), "Step i: ...", and [FINISH] once its last step is done."""
    multi = teacher_dialogue(_problem("add_mul"), "rema", "multi_turn", FirstChoice(), max_turns=3, style="plan")
    assert multi.turns == [
        ("mta", "Plan:\n1. Add 3 and 4.\n2. Multiply the result by 5.\nStep 1: add 3 and 4."),
        ("ra", "3 + 4 = 7."),
        ("mta", "Step 2: multiply 7 by 5."),
        ("ra", "7 × 5 = 35."),
        ("mta", f"That was the last step of the plan. {FINISH_MARKER}"),
        ("ra", "The answer is \\boxed{35}."),
    ]
    one = teacher_dialogue(_problem("add"), "rema", "multi_turn", FirstChoice(), max_turns=2, style="plan")
    assert one.turns[0] == ("mta", "Plan:\n1. Add 7 and 5.\nStep 1: add 7 and 5.")
    # the style is the multi-turn MTA's: every other format is unchanged
    p = _problem("mul_add")
    assert teacher_dialogue(p, "vrp", "single_turn", FirstChoice(), style="plan").turns == [("ra", SOLUTION["mul_add"])]


def test_teacher_reduce_style_restates_what_is_left_by_hand():
    """``sft.teacher_style=reduce``: the expression, then each round what is left with the RA's result in place
    (brackets only where they matter), and [FINISH] when a single number is left."""
    multi = teacher_dialogue(_problem("sub_mul_add"), "rema", "multi_turn", FirstChoice(), max_turns=4, style="reduce")
    assert multi.turns == [
        ("mta", "In numbers: (9 - 4) × 6 + 2.\nFirst, subtract 4 from 9."),
        ("ra", "9 - 4 = 5."),
        ("mta", "Now it is 5 × 6 + 2.\nNext, multiply 5 by 6."),
        ("ra", "5 × 6 = 30."),
        ("mta", "Now it is 30 + 2.\nNext, add 30 and 2."),
        ("ra", "30 + 2 = 32."),
        ("mta", f"Now it is 32.\nA single number is left, so that is the answer. {FINISH_MARKER}"),
        ("ra", "The answer is \\boxed{32}."),
    ]
    for op in ("add_mul", "mul_add", "mul_add_sub", "add_mul_sub"):  # the first message restates the expression
        first = teacher_dialogue(_problem(op), "rema", "multi_turn", FirstChoice(), max_turns=4, style="reduce")
        assert first.turns[0][1].startswith(f"In numbers: {CASES[op][1].replace('*', '×')}.\n")
    one = teacher_dialogue(_problem("add"), "rema", "multi_turn", FirstChoice(), max_turns=2, style="reduce")
    assert [t for _, t in one.turns[::2]] == [
        "In numbers: 7 + 5.\nFirst, add 7 and 5.",
        f"Now it is 12.\nA single number is left, so that is the answer. {FINISH_MARKER}",
    ]
    # reduce_solver: the RA reads the question, the MTA's later moves are reduce's
    solver = teacher_dialogue(
        _problem("sub_mul_add"), "rema", "multi_turn", FirstChoice(), max_turns=4, style="reduce_solver"
    )
    assert solver.turns[:2] == [
        ("mta", "Write the question as an expression, then work out its first operation."),
        ("ra", "In numbers: (9 - 4) × 6 + 2.\n9 - 4 = 5."),
    ]
    assert solver.turns[2:] == multi.turns[2:]
    # the single agent's control: the same moves and steps in one message
    vrp = teacher_dialogue(_problem("sub_mul_add"), "vrp", "single_turn", FirstChoice(), style="reduce")
    assert vrp.turns == [
        (
            "ra",
            "In numbers: (9 - 4) × 6 + 2.\n9 - 4 = 5, so it is 5 × 6 + 2.\n5 × 6 = 30, so it is 30 + 2.\n"
            "30 + 2 = 32.\nThe answer is \\boxed{32}.",
        )
    ]
    assert not no_effect(load_config(None, ["sft.data=teacher", "rollout.method=vrp", "sft.teacher_style=reduce"]))
    assert not no_effect(
        load_config(None, ["sft.data=teacher", "rollout.method=vrp", "sft.teacher_style=reduce_givens"])
    )
    for refused in (
        ["rollout.method=vrp", "sft.teacher_style=steps"],
        ["rollout.method=mrp", "sft.teacher_style=reduce"],
        ["rollout.method=vrp", "sft.teacher_style=reduce_solver"],
        ["rollout.method=rema", "rollout.mode=single_turn", "sft.teacher_style=reduce"],
    ):
        warned = no_effect(load_config(None, ["sft.data=teacher", *refused]))
        assert any("sft.teacher_style shapes" in m for m in warned)


def _all_methods():
    return [
        ("rema", "multi_turn", "rema-multi"),
        ("rema", "single_turn", "rema-single"),
        ("vrp", "single_turn", "vrp"),
        ("mrp", "single_turn", "mrp"),
    ]


def test_teacher_dialogues_fit_every_method_vary_and_never_leak_a_plan(tiny):
    _, tok = tiny
    problems = synthetic_problems(240, levels=tuple(LEVELS), seed=2, word_problems=0.5)
    plan_style = [("rema", "multi_turn", "rema-multi", s) for s in ("plan", "reduce", "reduce_solver", "reduce_givens")]
    plan_style += [("vrp", "single_turn", "vrp", s) for s in ("reduce", "reduce_givens")]
    for method, mode, name, style in [(*m, "steps") for m in _all_methods()] + plan_style:
        cfg = load_config(
            None,
            [f"rollout.method={method}", f"rollout.mode={mode}", "rollout.max_turns=4", f"sft.teacher_style={style}"],
        )
        dialogues, stats = teacher_dialogues(problems, cfg)
        assert stats["dialogues"] == 240 and [d.id for d in dialogues] == [p.id for p in problems]
        again, _ = teacher_dialogues(problems, cfg)
        assert [d.turns for d in again] == [d.turns for d in dialogues]  # seeded
        two_agents = method == "rema"
        for d, p in zip(dialogues, problems):
            assert check_dialogue(d, two_agents=two_agents, multi_turn=mode == "multi_turn", max_turns=4) is None
            assert re.search(r"\\boxed\{(\d+)\}", d.turns[-1][1]).group(1) == p.answer
            if two_agents:  # the MTA's first message never gives the answer away, nor any result
                first = d.turns[0][1]
                allowed = set(re.findall(r"\d+", p.question)) | {"1", "2", "3"}  # + the plan's step numbers
                assert mta_format(first, gold=p.answer)[1]["leak"] == 0 and "=" not in first
                assert set(re.findall(r"\d+", first)) <= allowed
        for d in dialogues[:8]:  # each replays through the real protocol, as the cold start does
            replay(d, cfg.rollout, get_prompt_set(name), tok)
        for k in range(len(dialogues[0].turns)):  # every message kind comes in several phrasings, not one template
            one_step = [d for d in dialogues if d.meta["level"] == 1]  # all sums: only the wording differs
            assert len({re.sub(r"\d+", "N", d.turns[k][1]) for d in one_step}) >= 4


def test_teacher_refuses_what_it_cannot_write():
    deep = _problem("mul_add_sub")
    with pytest.raises(ConfigError, match=r"4 rounds .* rollout.max_turns=3"):
        teacher_dialogue(deep, "rema", "multi_turn", random.Random(0), max_turns=3)
    assert teacher_dialogue(_problem("add"), "rema", "multi_turn", random.Random(0), max_turns=2).rounds == 2
    gsm = Problem(id="g1", question="Tom has 3 apples...", answer="5", meta={"source": "gsm8k"})
    with pytest.raises(ConfigError, match="sft.data=self or a dialogue file"):
        teacher_dialogue(gsm, "rema", "multi_turn", random.Random(0))
    with pytest.raises(ConfigError, match="sft.data=teacher writes arithmetic dialogues"):
        load_config(None, ["sft.data=teacher", "rollout.task=judge"])


def test_teacher_action_set_dialogues_are_valid_actions_of_every_kind(tiny):
    """rollout.action_set: the MTA's message is a valid JSON action (each of the three, drawn uniformly), a
    DECOMPOSE lists steps without results, a REWRITE is the bare expression; the dialogues replay through the
    protocol, which parses the action."""
    from rema.rollout.protocol import parse_action

    _, tok = tiny
    problems = synthetic_problems(90, levels=(1, 4, 6), seed=3, word_problems=0.5)
    cfg = load_config(None, ["rollout.action_set=true", "rollout.mode=single_turn", "sft.data=teacher"])
    dialogues, _ = teacher_dialogues(problems, cfg)
    actions = []
    for d, p in zip(dialogues, problems):
        action, content, ok = parse_action(d.turns[0][1])
        assert ok and d.turns[0][0] == "mta", d.turns[0]
        actions.append(action)
        if action == "DECOMPOSE":
            assert "=" not in content and content.strip()
        elif action == "REWRITE":
            assert content == f"Compute {p.meta['expression']}."
        else:
            assert content == ""
        assert re.search(r"\\boxed\{(\d+)\}", d.turns[-1][1]).group(1) == p.answer
    assert {a: actions.count(a) for a in set(actions)}.keys() == {"DECOMPOSE", "REWRITE", "EMPTY"}
    assert min(actions.count(a) for a in set(actions)) >= 15  # ~30 each of 90
    for d in dialogues[:6]:
        replay(d, cfg.rollout, get_prompt_set(cfg.method_name), tok)


def test_teacher_cold_start_then_one_rl_step(tmp_path):
    run = tmp_path / "run"
    cfg = load_config(
        None,
        [
            "model.name=tiny-random",
            "rollout.mode=multi_turn",
            "rollout.max_tokens_per_turn=12",
            "rollout.max_turns=3",
            "rollout.samples_per_question=2",
            "train.questions_per_step=2",
            "train.steps=1",
            "train.lr=1e-3",
            "data.train=synthetic:levels=1,4:n=20:seed=0:word=0",
            "data.eval=null",
            f"log.run_dir={run}",
            "log.progress=false",
            "log.tensorboard=false",
            "sft.cold_start=true",
            "sft.data=teacher",
            "sft.questions=6",
            "sft.epochs=1",
            "sft.batch_dialogues=3",
        ],
    )
    tr = Trainer(cfg)
    try:
        assert tr.start()
        tr.fit()
    finally:
        tr.close()
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1]
    assert records[0]["sft/data/dialogues"] == 6 and records[0]["sft/steps"] == 2
    saved = [json.loads(x) for x in (run / "cold_start_dialogues.jsonl").read_text().splitlines()]
    assert len(saved) == 6 and {len(d["turns"]) for d in saved} == {4, 6}  # one- and two-step problems
    assert all(d["meta"]["teacher"].startswith("synthetic-program@") for d in saved)


@pytest.mark.parametrize("shared", [True, False])
def test_cold_start_cache_is_reused_by_another_seed_and_missed_by_other_settings(tmp_path, shared):
    """sft.cache: a second run with another train.seed but the same sft.seed loads the first run's cold start
    (same weights, same dialogues, sft/cached=1); another sft setting trains and stores its own."""

    def start(name: str, *extra: str) -> tuple[dict, dict]:
        run = tmp_path / name
        cfg = load_config(
            None,
            [
                "model.name=tiny-random",
                "rollout.mode=multi_turn",
                "rollout.max_tokens_per_turn=12",
                "rollout.max_turns=3",
                f"train.shared_weights={str(shared).lower()}",
                "train.steps=0",
                "data.train=synthetic:levels=1,4:n=20:seed=0:word=0",
                "data.eval=null",
                f"log.run_dir={run}",
                "log.progress=false",
                "log.tensorboard=false",
                "sft.cold_start=true",
                "sft.data=teacher",
                "sft.questions=4",
                "sft.epochs=1",
                "sft.seed=0",
                f"sft.cache={tmp_path / 'cache'}",
                *extra,
            ],
        )
        tr = Trainer(cfg)
        try:
            assert tr.start()
            weights = {
                f"{pol.name}:{n}": p.detach().clone()
                for pol in tr.policies
                for n, p in pol.model.named_parameters()
                if p.requires_grad
            }
        finally:
            tr.close()
        record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        return record, weights | {"dialogues": (run / "cold_start_dialogues.jsonl").read_text()}

    first, trained = start("a", "train.seed=0")
    second, loaded = start("b", "train.seed=1")
    assert "sft/cached" not in first and second["sft/cached"] == 1.0
    losses = [k for k in first if k.startswith("sft/") and k.endswith("loss_first")]
    assert losses and all(second[k] == first[k] for k in losses)
    assert loaded.keys() == trained.keys() and loaded.pop("dialogues") == trained.pop("dialogues")
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    other, _ = start("c", "train.seed=1", "sft.epochs=2")
    assert "sft/cached" not in other and sum(p.is_dir() for p in (tmp_path / "cache").iterdir()) == 2


def test_cold_start_key_follows_the_teacher_style_and_version(monkeypatch):
    """A cached teacher cold start is found again only under the same teacher: style and version are part of its
    key (a new phrasing must not load weights trained on the old one); a self cold start ignores the version."""
    from rema.runtime import cold_starts

    steps = load_config(
        None, ["sft.data=teacher", "rollout.mode=multi_turn", "rollout.max_turns=3", "sft.teacher_style=steps"]
    )
    plan = load_config(
        None, ["sft.data=teacher", "rollout.mode=multi_turn", "rollout.max_turns=3", "sft.teacher_style=plan"]
    )
    own = load_config(None, ["sft.data=self"])
    before = [cold_starts.cold_start_key(c) for c in (steps, plan, own)]
    assert before[0] != before[1]
    monkeypatch.setattr(cold_starts, "TEACHER_NAME", "synthetic-program@test")
    after = [cold_starts.cold_start_key(c) for c in (steps, plan, own)]
    assert after[0] != before[0] and after[1] != before[1] and after[2] == before[2]


def test_teacher_reduce_givens_lists_the_numbers_in_the_order_of_the_question():
    """``sft.teacher_style=reduce_givens``: reduce's dialogue (its phrasings unchanged), the first message opened by
    the question's numbers as the text gives them, which need not be the expression's order."""
    story = Problem(
        id="t-story",
        question="Ava earns 3 coins each day for 2 days and gets 8 coins as a gift. How many coins does Ava have?",
        answer="14",
        meta={"op": "mul_add", "operands": {"a": 2, "b": 3, "c": 8}, "expression": "2*3+8"},
    )
    reduce = teacher_dialogue(story, "rema", "multi_turn", FirstChoice(), max_turns=4, style="reduce")
    givens = teacher_dialogue(story, "rema", "multi_turn", FirstChoice(), max_turns=4, style="reduce_givens")
    assert givens.turns[0] == ("mta", "The question gives 3, 2 and 8.\nIn numbers: 2 × 3 + 8.\nFirst, multiply 2 by 3.")
    assert givens.turns[1:] == reduce.turns[1:]
    two = teacher_dialogue(_problem("add"), "rema", "multi_turn", FirstChoice(), max_turns=2, style="reduce_givens")
    assert two.turns[0][1].startswith("The question gives 7 and 5.\nIn numbers: 7 + 5.\n")
    # the single agent's control gets the same line in front of the same solution
    vrp = teacher_dialogue(story, "vrp", "single_turn", FirstChoice(), style="reduce_givens")
    same = teacher_dialogue(story, "vrp", "single_turn", FirstChoice(), style="reduce")
    assert vrp.turns == [("ra", f"The question gives 3, 2 and 8.\n{same.turns[0][1]}")]
    # the restatement reader still finds the expression behind the list
    assert restates_answer(givens.turns[0][1], "14") and restates_answer(vrp.turns[0][1], "14")
