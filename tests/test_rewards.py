"""Tests for rema.rewards and their composition in rema.scoring: math grading (equivalences, extraction,
timeouts), format terms, judge, masking, the episode terms and the reward each agent gets.

Math cases are graded in one batch through the real worker pool (module fixture), so the file costs one
pool start-up plus a few seconds of grading.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rema.config import RewardConfig
from rema.rewards import (
    MathGrade,
    close,
    grade_math,
    grade_math_batch,
    judge_verdict,
    math_grader,
    mta_format,
    pool_respawns,
    ra_format,
    summarize,
)
from rema.rewards.math_worker import clean_candidate, extract_candidate, find_boxes, last_boxed
from rema.rewards.restatement import expression_value, restated_expression, restates_answer
from rema.rewards.terms import (
    TERMS,
    action_format,
    get_term,
    judge_single_turn_format,
    math_correctness,
    plan_leak,
    restatement,
    single_turn_format,
    unfinished_mask,
)
from rema.rollout.episode import END_CODES, AgentView, Episode, Turn
from rema.scoring import score_episodes, selected_terms

DATA = Path(__file__).parents[1].parent / "shared" / "data"

# (response, gold, expected correct)
EQUIVALENT = [
    (r"so $\boxed{\frac12}$", "0.5"),
    (r"\boxed{0.5}", r"\frac{1}{2}"),
    (r"\boxed{1/2}", r"\frac12"),
    (r"\boxed{\dfrac{1}{2}}", "1/2"),
    (r"\boxed{[2, 5)}", "[2,5)"),
    (r"\boxed{(1, 2)}", "(1,2)"),
    (r"\boxed{\{3,1,2\}}", r"\{1,2,3\}"),
    (r"\boxed{5\text{ cm}}", "5"),
    (r"\boxed{30^\circ}", "30"),
    (r"\boxed{18 dollars}", "18"),
    (r"\boxed{\$1,080}", "1080"),
    ("She earns 9 * 120 = <<9*120=1080>>1080 dollars.\n#### 1,080", "1080"),
    ("#### 72", "72"),
    ("The answer is (B).", "B"),
    (r"\boxed{(B)}", "B"),
    (r"\boxed{\text{Monday}}", r"\text{Monday}"),
    ("Answer: $x=3$", "3"),
    (r"Final Answer: The final answer is $\frac{\sqrt{3}}{2}$. I hope it is correct.", r"\frac{\sqrt3}{2}"),
    (r"Therefore \fbox{7}.", "7"),
    (r"$= \boxed{\textbf{(073)}}$", "73"),
    (r"is $\boxed 5$.", "5"),
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}"),
    (r"\boxed{x^2+2x+1}", "(x+1)^2"),
    (r"first \boxed{3}, but correcting the sign: \boxed{4}", "4"),
    ("#### Step 1: add\n3 + 4 = 7, so the total is 7.", "7"),  # heading skipped, last expression read
    ("#### y = 2x + 3", "y=2x+3"),
    ("The answer is: **42**", "42"),  # Markdown bold
    (r"\boxed{\textbf{(C)}\ 12}", "C"),  # AMC style, letter gold
    (r"\boxed{\textbf{(C)}\ 12}", "12"),  # AMC style, value gold
    (r"\boxed{(-\infty, 3]}", r"(-\infty,3]"),
    (r"\boxed{x \in [2, 5)}", "[2,5)"),
    (r"\boxed{50\%}", "50"),
    ("6 + 8 = 14", "14"),  # computed: the right-hand side is read
    ("So 3 + 4 is 7.", "7"),
    ("-3", "-3"),
    ("1/2", "0.5"),  # a fraction is an answer, not an uncomputed sum
]
NOT_EQUIVALENT = [
    (r"first \boxed{4}, but correcting the sign: \boxed{3}", "4"),  # the LAST box counts
    (r"\boxed{5} and then #### 7", "7"),  # a box wins over ####
    (r"\boxed{3}", "4"),
    (r"\boxed{(2,5]}", "[2,5)"),
    (r"\boxed{\{1,2\}}", r"\{1,2,3\}"),
    (r"\boxed{\text{Tuesday}}", r"\text{Monday}"),
    (r"\boxed{C}", "B"),
    ("The answer is (C).", "B"),
    (r"\boxed{0.51}", r"\frac12"),
    (r"\boxed{1080}", "108"),
    (r"\boxed{C (x+1)}", "C"),  # not a choice letter
    (r"\boxed{\textbf{(C)}\ 12}", "B"),
    ("1 + 2 is simply two.", "3"),  # the question restated, uncomputed: math-verify alone would say 3
    (r"\boxed{1 + 2}", "3"),
    ("The result is 7 - 4.", "3"),
    (r"so $3 \times 4$", "12"),
]
CASES = [(r, g, True) for r, g in EQUIVALENT] + [(r, g, False) for r, g in NOT_EQUIVALENT]


@pytest.fixture(scope="module")
def graded() -> list[MathGrade]:
    grades = grade_math_batch([c[0] for c in CASES], [c[1] for c in CASES], workers=2)
    yield grades
    close()


@pytest.mark.parametrize("idx", range(len(CASES)), ids=[f"{c[2]}:{c[0][:30]}" for c in CASES])
def test_math_equivalence(graded: list[MathGrade], idx: int) -> None:
    response, gold, expected = CASES[idx]
    g = graded[idx]
    assert g.correct is expected, (response, gold, g)
    assert not g.timed_out and g.error is None


def test_no_answer_is_not_an_error(graded: list[MathGrade]) -> None:
    g = grade_math("I could not solve this.", "5")
    assert (g.correct, g.extracted, g.error, g.timed_out) == (False, None, None, False)
    assert summarize([g])["grader/no_answer_rate"] == 1.0


# ------------------------------------------------------------------------------------- extraction


def test_find_boxes_nested_escaped_braceless_and_unclosed() -> None:
    text = r"a \boxed{1} b \boxed{\frac{1}{2}} c \boxed{\{1,2\}} d \boxed 7$ \fbox{x} \boxedx \boxed{open"
    assert [b for b, _ in find_boxes(text)] == ["1", r"\frac{1}{2}", r"\{1,2\}", "7", "x"]
    assert last_boxed(text) == "x"
    assert last_boxed("no box") is None


def test_extraction_order_and_cleaning() -> None:
    assert extract_candidate("#### 3\n\\boxed{4}") == ("4", "boxed")
    assert extract_candidate("x\n#### 3\nmore\n#### 1,080 ") == ("1,080", "hash")
    assert extract_candidate("The answer is 5") == (None, None)  # left to math-verify's anchors
    assert extract_candidate("#### Step 2: expand\nso x = 5") == (None, None)  # a Markdown heading
    assert clean_candidate("3 or 4") == "3 or 4"  # only unit words are dropped
    assert clean_candidate("$5$.") == "5"
    assert clean_candidate("1{,}080") == "1,080"
    assert clean_candidate(r"\textbf{(073)} ") == "073"
    assert clean_candidate(r"\text{Monday}") == r"\text{Monday}"


def test_hostile_extraction_is_linear() -> None:
    assert last_boxed("{" * 200_000) is None
    assert last_boxed("\\boxed{" * 30_000) is None


# ------------------------------------------------------------------------------------- timeouts

HOSTILE = [
    r"\boxed{9^{9^{9^{9}}}}",
    "\\boxed{" + "{" * 1_000_000,
    "{" * 1_000_000,
    "\\boxed{" + "\\frac{1}{" * 150 + "2" + "}" * 150 + "}",
]


@pytest.mark.parametrize("response", HOSTILE, ids=["power_tower", "open_box_1MB", "braces_1MB", "deep_frac"])
def test_hostile_input_times_out_and_pool_survives(graded: list[MathGrade], response: str) -> None:
    """Hostile input scores 0 within its timeout (soft deadline, size cap, or plain no-answer)."""
    timeout_s = 1.0
    t0 = time.monotonic()
    g = grade_math(response, "3", timeout_s=timeout_s)
    elapsed = time.monotonic() - t0
    assert not g.correct, g
    # A hang guard, not a speed claim: a CAS that hangs would block forever; the pool's hard kill
    # bounds it near timeout_s even on a loaded machine (30 s of slack keeps this from being flaky).
    assert elapsed < timeout_s + 30
    assert grade_math(r"\boxed{3}", "3").correct


def test_hard_kill_when_worker_ignores_its_soft_deadline(graded: list[MathGrade], monkeypatch) -> None:
    """Soft deadline pushed past the hard one: the parent must kill the worker and respawn it."""
    monkeypatch.setattr(math_grader, "SOFT_FRACTION", 20.0)
    before = pool_respawns()
    t0 = time.monotonic()
    grades = grade_math_batch([r"\boxed{9^{9^{9^{9}}}}", r"\boxed{2}"], ["3", "2"], timeout_s=1.0, workers=2)
    assert time.monotonic() - t0 < 1.0 + 30  # hang guard (see above), not a speed claim
    assert grades[0] == MathGrade(False, timed_out=True, error="timeout", seconds=1.0)
    assert grades[1].correct
    assert pool_respawns() == before + 1
    assert grade_math(r"\boxed{\frac{1}{2}}", "0.5").correct  # the respawned worker grades


_DYING_WORKER = """
import os
from multiprocessing.connection import Connection
conn_in, conn_out = Connection(os.dup(0), writable=False), Connection(os.dup(1), readable=False)
conn_out.send(("ready", os.getpid()))
try:
    conn_in.recv()
except EOFError:
    raise SystemExit(0)
os._exit(7)  # dies mid-item, like a segfault in the CAS
"""


def test_worker_death_is_reported_and_replaced(tmp_path: Path, monkeypatch) -> None:
    script = tmp_path / "dying_worker.py"
    script.write_text(_DYING_WORKER)
    monkeypatch.setattr(math_grader, "_WORKER_SCRIPT", script)
    pool = math_grader.GraderPool()
    try:
        grades = pool.grade(["a", "b", "c"], ["1", "2", "3"], timeout_s=5.0, workers=1)
    finally:
        pool.close()
    assert [g.error for g in grades] == ["worker_died (rc=7)"] * 3
    assert pool.respawns == 3


def test_worker_startup_failure_raises(tmp_path: Path, monkeypatch) -> None:
    script = tmp_path / "broken_worker.py"
    script.write_text("raise SystemExit(3)\n")
    monkeypatch.setattr(math_grader, "_WORKER_SCRIPT", script)
    pool = math_grader.GraderPool()
    with pytest.raises(RuntimeError, match="start-up"):
        pool.grade(["a"], ["1"], timeout_s=5.0, workers=1)
    pool.close()


def test_batch_validates_arguments() -> None:
    with pytest.raises(ValueError, match="2 responses but 1 golds"):
        grade_math_batch(["a", "b"], ["1"])
    with pytest.raises(ValueError, match="timeout_s"):
        grade_math_batch(["a"], ["1"], timeout_s=0)


# ------------------------------------------------------------------------------------- reward fns


def test_mta_format() -> None:
    assert mta_format("First factor the quadratic, then check both roots against the domain.") == (
        0.0,
        {"leak": 0.0, "leak_boxed": 0.0, "leak_statement": 0.0, "leak_gold": 0.0},
    )
    assert mta_format(r"Plan: compute, giving \boxed{5}.")[1]["leak_boxed"] == 1.0
    assert mta_format("Solve for x. The final answer is 12.")[0] == -1.0
    assert mta_format("Answer: (B)")[1]["leak_statement"] == 1.0
    assert mta_format("The answer is the sum of the roots, so use Vieta.")[0] == 0.0  # planning language
    assert mta_format("Then verify the final answer.")[0] == 0.0
    assert mta_format("Add the two counts.\nSo the total is 12.", gold="12")[1]["leak_gold"] == 1.0
    assert mta_format("Add the two counts.\n$x = \\dfrac{1}{2}$", gold="\\frac12")[1]["leak_gold"] == 0.0
    assert mta_format("Add the two counts.\n$x = \\dfrac{1}{2}$", gold="\\frac{1}{2}")[1]["leak_gold"] == 1.0
    assert mta_format("There are 12 eggs; subtract the 3 eaten.", gold="12")[0] == 0.0  # mid-text mention
    assert mta_format(r"\boxed{1}", penalty=-0.5)[0] == -0.5


def test_ra_format() -> None:
    assert ra_format(r"Step 1 ... so the answer is $\boxed{5}$. I hope it is correct.") == (
        0.0,
        {"n_boxed": 1.0, "boxed_last": 1.0},
    )
    assert ra_format(r"\boxed{4} then \boxed{5}") == (-1.0, {"n_boxed": 2.0, "boxed_last": 1.0})
    assert ra_format(r"\boxed{5} " + "and more reasoning " * 20) == (-1.0, {"n_boxed": 1.0, "boxed_last": 0.0})
    assert ra_format("no box") == (-1.0, {"n_boxed": 0.0, "boxed_last": 0.0})
    assert ra_format("no box", penalty=-0.2)[0] == -0.2


def test_judge_verdict() -> None:
    assert judge_verdict("A is verbose. [[B]] hmm, on reflection [[A]]", "A") == (
        1.0,
        {"correct": 1.0, "verdict_found": 1.0},
    )
    assert list(judge_verdict("[[A]]", "A")[1]) == ["correct", "verdict_found"]  # logged in this order
    assert judge_verdict("Final verdict: [[B]]", "A") == (0.0, {"correct": 0.0, "verdict_found": 1.0})
    assert judge_verdict("Both are fine [A]", "A") == (0.0, {"correct": 0.0, "verdict_found": 0.0})
    assert judge_verdict("[[B]]", "[[b]]")[0] == 1.0
    with pytest.raises(ValueError, match="'A' or 'B'"):
        judge_verdict("[[A]]", "C")


@pytest.mark.parametrize("end_code", END_CODES)
def test_unfinished_mask(end_code: str) -> None:
    r, parts = unfinished_mask(1.0, end_code)
    assert r == (1.0 if end_code == "finished" else 0.0)
    assert parts["unfinished"] == float(end_code != "finished") == parts["masked"]
    assert unfinished_mask(1.0, end_code, enabled=False) == (1.0, {"unfinished": parts["unfinished"], "masked": 0.0})


def test_unfinished_mask_rejects_unknown_code() -> None:
    with pytest.raises(ValueError, match="finished, max_turns"):
        unfinished_mask(1.0, "done")


def test_math_correctness_pays_unboxed_answers_their_credit() -> None:
    boxed, hashed = MathGrade(True, source="boxed"), MathGrade(True, source="hash")
    assert math_correctness(boxed, unboxed_credit=0.25) == (1.0, {"correct": 1.0, "boxed": 1.0, "timed_out": 0.0})
    assert math_correctness(hashed, unboxed_credit=0.25) == (0.25, {"correct": 1.0, "boxed": 0.0, "timed_out": 0.0})
    assert math_correctness(hashed, unboxed_credit=1.0)[0] == 1.0
    assert math_correctness(MathGrade(False, source="boxed"), unboxed_credit=0.25) == (
        0.0,
        {"correct": 0.0, "boxed": 1.0, "timed_out": 0.0},
    )
    assert math_correctness(MathGrade(False, timed_out=True, error="timeout"), unboxed_credit=1.0) == (
        0.0,
        {"correct": 0.0, "boxed": 0.0, "timed_out": 1.0},
    )
    assert list(math_correctness(boxed, unboxed_credit=1.0)[1]) == ["correct", "boxed", "timed_out"]


def _turn(agent: str, index: int, text: str) -> Turn:
    return Turn(
        agent=agent, index=index, text=text, token_ids=[1, 2], logprobs=[0.0, 0.0], finish_reason="stop", context_len=0
    )


def _episode(texts: list[tuple[str, str]], *, answer: str = "7", end_code: str = "finished") -> Episode:
    """An episode from (agent, text) turns, built by hand (no tokenizer): views only name the agents."""
    counts: dict[str, int] = {}
    turns = []
    for agent, text in texts:
        turns.append(_turn(agent, counts.get(agent, 0), text))
        counts[agent] = counts.get(agent, 0) + 1
    return Episode(
        episode_id=0,
        problem_id="p",
        question="What is 3 + 4?",
        answer=answer,
        sample_index=0,
        method="rema-multi",
        turns=turns,
        views={a: AgentView(a) for a in ("mta", "ra")},
        end_code=end_code,
    )


def test_single_turn_format_term_hand_values() -> None:
    ep = _episode([("mta", "Add them."), ("ra", r"3 + 4 = \boxed{7}.")])
    assert single_turn_format(ep, "mta", penalty=-0.3) == (
        0.0,
        {
            "format/leak": 0.0,
            "format/leak_boxed": 0.0,
            "format/leak_statement": 0.0,
            "format/leak_gold": 0.0,
            "format": 0.0,
        },
    )
    assert single_turn_format(ep, "ra", penalty=-0.3) == (
        0.0,
        {"format/n_boxed": 1.0, "format/boxed_last": 1.0, "format": 0.0},
    )
    # the MTA's messages are read together: a leak in any of them counts; the RA's term reads its final message
    bad = _episode([("mta", "Add them."), ("ra", r"\boxed{3} \boxed{7}"), ("mta", "So it is 7"), ("ra", "7")])
    value, parts = single_turn_format(bad, "mta", penalty=-0.3)
    assert value == -0.3 and parts["format/leak_gold"] == 1.0 and parts["format"] == -0.3
    assert single_turn_format(bad, "ra", penalty=-0.3) == (
        -0.3,
        {"format/n_boxed": 0.0, "format/boxed_last": 0.0, "format": -0.3},
    )
    assert list(parts) == ["format/leak", "format/leak_boxed", "format/leak_statement", "format/leak_gold", "format"]


def test_plan_leak_term_hand_values() -> None:
    ep = _episode([("mta", "Add 3 and 4: 3 + 4 = 7."), ("ra", "7"), ("mta", "Fine."), ("ra", r"\boxed{7}")])
    assert plan_leak(ep, "mta", penalty=-0.5) == (-0.5, {"plan_leak": 1.0, "plan_leak_term": -0.5})
    assert plan_leak(ep, "ra", penalty=-0.5) == (0.0, {})  # the MTA's term only
    late = _episode([("mta", "Add them."), ("ra", "7"), ("mta", "The answer is 7."), ("ra", r"\boxed{7}")])
    assert plan_leak(late, "mta", penalty=-0.5) == (0.0, {"plan_leak": 0.0, "plan_leak_term": 0.0})
    assert plan_leak(_episode([("ra", "7")]), "mta", penalty=-0.5) == (0.0, {})  # an MTA that never spoke


def test_restatement_term_hand_values() -> None:
    """The first message's expression is worth the answer (12), or the term fires; only on its writer's reward."""
    read = _episode([("mta", "In numbers: (6 + 9) × 2 - 18.\nFirst, add 6 and 9."), ("ra", "6 + 9 = 15.")], answer="12")
    assert restatement(read, "mta", penalty=-0.5) == (0.0, {"restated_right": 1.0, "restatement_term": 0.0})
    assert restatement(read, "ra", penalty=-0.5) == (0.0, {})  # the reasoner did not write the first message
    dropped = _episode([("mta", "We need 6 + 9.\nAdd them."), ("ra", "15")], answer="12")
    assert restatement(dropped, "mta", penalty=-0.5) == (-0.5, {"restated_right": 0.0, "restatement_term": -0.5})
    silent = _episode([("mta", "Add 6 and 9 first."), ("ra", "15")], answer="12")  # no restatement: not a way out
    assert restatement(silent, "mta", penalty=-0.5)[0] == -0.5
    solo = _episode([("ra", "As an expression: 3 × 4.\n3 × 4 = 12.")], answer="12")  # VRP: the single agent's
    assert restatement(solo, "ra", penalty=-0.5) == (0.0, {"restated_right": 1.0, "restatement_term": 0.0})
    assert restatement(_episode([("mta", "In numbers: 1 + 1.")], answer="\\frac{1}{2}"), "mta", penalty=-1.0) == (
        0.0,
        {},
    )  # not a number: the check does not apply
    assert restatement(_episode([]), "mta", penalty=-1.0) == (0.0, {})


def test_expression_value_reads_the_arithmetic_and_nothing_else() -> None:
    assert expression_value("(6 + 9) × 2 - 18") == 12
    assert expression_value("8 ÷ 2 + 1") == 5
    assert expression_value("-3 + 5") == 2
    assert expression_value("2 ** 3") is None  # powers are refused, never evaluated
    assert expression_value("__import__('os')") is None
    assert expression_value("True + 1") is None
    assert expression_value("3 +") is None and expression_value("1 / 0") is None
    assert restated_expression("The question asks for 3 × 2 + 8.\nBegin.") == "3 × 2 + 8"
    assert restated_expression("Add 2 and 4 first.") is None
    assert restates_answer("In numbers: 1,000 + 80.", "1,080") is False  # "1,000 + 80" is not one expression
    assert restates_answer("In numbers: 1000 + 80.", "1,080") is True


def test_term_registry_is_uniform_and_names_the_valid_terms() -> None:
    ep = _episode([("mta", r"\boxed{7}"), ("ra", r"\boxed{7}")])
    assert TERMS == {
        "format": single_turn_format,
        "judge_format": judge_single_turn_format,
        "plan_leak": plan_leak,
        "action_format": action_format,
        "restatement": restatement,
    }
    for name in TERMS:
        for agent in ("mta", "ra"):
            value, parts = get_term(name)(ep, agent, penalty=-1.0)
            assert isinstance(value, float) and all(isinstance(v, float) for v in parts.values())
    with pytest.raises(KeyError, match="valid: action_format, format, judge_format, plan_leak, restatement"):
        get_term("nope")


def test_judge_format_terms_ask_for_a_verdict_not_a_box() -> None:
    """With reward.format_terms on the judge task, a right ``[[A]]`` scores 1: the reasoner's format term asks for
    one verdict at the end (it asked for a \\boxed{} and scored a correct verdict 0)."""
    right = _episode([("mta", "Compare the two answers."), ("ra", "A is right, B is off by one. [[A]]")], answer="A")
    cfg = RewardConfig(format_terms=True)
    assert selected_terms(cfg, "single_turn", "judge") == [("judge_format", {"penalty": -1.0})]
    score_episodes([right], cfg, task="judge", mode="single_turn")
    assert right.reward == {"mta": 1.0, "ra": 1.0}
    assert right.reward_parts["ra"]["format/n_verdicts"] == 1.0
    assert judge_single_turn_format(_episode([("mta", "x"), ("ra", "[[A]] or [[B]]")]), "ra", penalty=-0.5)[0] == -0.5
    assert judge_single_turn_format(_episode([("mta", "x"), ("ra", "no verdict")]), "ra", penalty=-0.5)[0] == -0.5


def test_selected_terms_follow_the_config_and_the_rollout_mode() -> None:
    both = RewardConfig(format_terms=True, format_penalty=0.3, plan_leak_penalty=0.5)
    assert selected_terms(both, "single_turn") == [("format", {"penalty": -0.3})]
    assert selected_terms(both, "multi_turn") == [("plan_leak", {"penalty": -0.5})]  # format terms: single turn only
    assert selected_terms(RewardConfig(format_terms=True), "multi_turn") == []
    assert selected_terms(RewardConfig(), "single_turn") == []


def test_score_episodes_composes_the_terms_hand_values() -> None:
    """reward = unfinished_mask(correctness) + the selected terms, every part kept under its logged name."""
    right = _episode([("mta", "Add them."), ("ra", "3 + 4 = 7, so \\boxed{7}.")])
    stopped = _episode([("mta", "The answer is 7."), ("ra", "7")], end_code="max_turns")
    cfg = RewardConfig(format_terms=True, format_penalty=0.3, plan_leak_penalty=0.5)
    counters = score_episodes(
        [right, stopped], cfg, mode="single_turn", correctness_fn=lambda ep: 1.0 if "7" in ep.final_response else 0.0
    )
    assert counters == {"grader/timeouts": 0.0, "grader/items": 2.0}
    assert right.reward == {"mta": 1.0, "ra": 1.0} and right.meta["correct"]
    # masked to 0 (unfinished), then each agent's format penalty: the MTA leaked, the RA did not box
    assert stopped.reward == {"mta": -0.3, "ra": -0.3} and stopped.meta["correct"]
    assert list(stopped.reward_parts["ra"].items()) == [
        ("correct", 1.0),
        ("unfinished", 1.0),
        ("masked", 1.0),
        ("format/n_boxed", 0.0),
        ("format/boxed_last", 0.0),
        ("format", -0.3),
    ]
    assert stopped.reward_parts["mta"]["format/leak_statement"] == 1.0
    score_episodes(
        [right, stopped], RewardConfig(mask_unfinished=False, plan_leak_penalty=0.5), correctness_fn=lambda ep: 0.5
    )  # multi-turn: the plan-leak term, no mask
    assert stopped.reward == {"mta": 0.0, "ra": 0.5} and right.reward == {"mta": 0.5, "ra": 0.5}
    assert list(stopped.reward_parts["mta"].items()) == [
        ("correct", 0.5),
        ("unfinished", 1.0),
        ("masked", 0.0),
        ("plan_leak", 1.0),
        ("plan_leak_term", -0.5),
    ]
    assert not stopped.meta["correct"]


# ------------------------------------------------------------------------------------- benchmark data


def _rows(name: str, every: int) -> list[dict]:
    if not DATA.is_dir():
        pytest.skip(f"benchmark data folder {DATA} not present")
    lines = (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[::every]][:100]


@pytest.mark.parametrize("name,every", [("math500_test", 5), ("gsm8k_test", 13)])
def test_reference_solutions_accepted_mismatches_rejected(graded: list[MathGrade], name: str, every: int) -> None:
    rows = _rows(name, every)
    sols, golds = [r["solution"] for r in rows], [r["answer"] for r in rows]
    pairs = [
        (i, (i + 1) % len(rows))
        for i in range(len(rows))
        if golds[i].replace(" ", "") != golds[(i + 1) % len(rows)].replace(" ", "")
    ]
    grades = grade_math_batch(sols + [sols[i] for i, _ in pairs], golds + [golds[j] for _, j in pairs], workers=2)
    matched, mismatched = grades[: len(rows)], grades[len(rows) :]
    assert sum(g.correct for g in matched) / len(rows) >= 0.99
    assert sum(g.correct for g in mismatched) / len(pairs) < 0.01


def test_plan_leak_penalty_charges_only_the_mtas_first_message(tiny):
    """Multi-turn: a first plan that gives the answer away costs the MTA (not the RA) the penalty; a leak in a
    later MTA message, or in the RA's messages, costs nothing; off by default and under single-turn terms."""
    from rema.config import RewardConfig, RolloutConfig
    from rema.data.dialogues import Dialogue
    from rema.prompts import get_prompt_set
    from rema.rollout.scripted import replay
    from rema.scoring import score_episodes

    _, tok = tiny
    cfg = RolloutConfig(mode="multi_turn", max_turns=2, samples_per_question=1, max_tokens_per_turn=64)
    ps = get_prompt_set("rema-multi")

    def episode(plan: str, check: str = "Your result is correct. [FINISH]"):
        turns = [("mta", plan), ("ra", "3 + 4 = 7."), ("mta", check), ("ra", "The final answer is $\\boxed{7}$.")]
        return replay(Dialogue("What is 3 + 4?", "7", turns), cfg, ps, tok)

    leaky, clean = episode("Add 3 and 4: 3 + 4 = 7."), episode("Add the two numbers.")
    late = episode("Add the two numbers.", "Correct, the answer is 7. [FINISH]")
    score_episodes([leaky, clean, late], RewardConfig(plan_leak_penalty=0.5), correctness_fn=lambda ep: 1.0)
    assert [ep.reward["mta"] for ep in (leaky, clean, late)] == [0.5, 1.0, 1.0]
    assert [ep.reward["ra"] for ep in (leaky, clean, late)] == [1.0, 1.0, 1.0]
    assert leaky.reward_parts["mta"]["plan_leak"] == 1.0 and clean.reward_parts["mta"]["plan_leak"] == 0.0
    assert "plan_leak" not in leaky.reward_parts["ra"]
    score_episodes([leaky], RewardConfig(), correctness_fn=lambda ep: 1.0)  # default: the authors' shared reward
    assert leaky.reward == {"mta": 1.0, "ra": 1.0}
    score_episodes(
        [leaky],
        RewardConfig(plan_leak_penalty=0.5, format_penalty=1.0, format_terms=True),
        mode="single_turn",
        correctness_fn=lambda ep: 1.0,
    )  # the single-turn terms already include the check: not twice
    assert "plan_leak" not in leaky.reward_parts["mta"] and "format" in leaky.reward_parts["mta"]


def test_plan_leak_penalty_must_not_be_negative():
    from rema.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="reward.plan_leak_penalty"):
        load_config(None, ["reward.plan_leak_penalty=-1"])


def test_unboxed_credit_pays_a_right_unboxed_answer_only_its_share(tiny):
    """The real grader: a right boxed answer earns 1, a right answer stated without a box earns
    ``unboxed_credit`` (1 by default, as in the authors' code), a wrong one 0; accuracy (``meta['correct']``) is
    unchanged."""
    from rema.config import RewardConfig, RolloutConfig
    from rema.data.dialogues import Dialogue
    from rema.prompts import get_prompt_set
    from rema.rollout.scripted import replay
    from rema.scoring import score_episodes

    _, tok = tiny
    cfg = RolloutConfig(mode="multi_turn", max_turns=1, samples_per_question=1, max_tokens_per_turn=64)
    ps = get_prompt_set("rema-multi")

    def episodes():
        finals = [
            "So 3 + 4 = 7 and the answer is $\\boxed{7}$.",
            "The final answer is 7.",
            "The answer is $\\boxed{8}$.",
        ]
        return [
            replay(Dialogue("What is 3 + 4?", "7", [("mta", "Add them. [FINISH]"), ("ra", f)]), cfg, ps, tok)
            for f in finals
        ]

    eps = episodes()
    score_episodes(eps, RewardConfig(unboxed_credit=0.25))
    assert [ep.reward["ra"] for ep in eps] == [1.0, 0.25, 0.0]
    assert [ep.reward["mta"] for ep in eps] == [1.0, 0.25, 0.0]
    assert [ep.meta["correct"] for ep in eps] == [True, True, False]
    assert [ep.reward_parts["ra"]["boxed"] for ep in eps] == [1.0, 0.0, 1.0]
    eps = episodes()
    score_episodes(eps, RewardConfig())
    assert [ep.reward["ra"] for ep in eps] == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_unboxed_credit_must_be_a_share(value: str):
    from rema.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="reward.unboxed_credit"):
        load_config(None, [f"reward.unboxed_credit={value}"])
