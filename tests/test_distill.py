"""``rema distill``: parsing and checking teacher replies, retries, resume, and the whole command against a real
OpenAI-compatible HTTP server (tests/helpers/teacher_server.py) whose replies are scripted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from helpers.teacher_server import CASES, GOOD, TeacherServer  # noqa: E402

from rema.cli import main  # noqa: E402
from rema.data.dialogues import load_dialogues  # noqa: E402
from rema.distill.replies import Format, ReplyError, check_reply, parse_reply  # noqa: E402
from rema.distill.store import DistillError, read_rows  # noqa: E402
from rema.distill.teacher import backoff_s, retry_after_s  # noqa: E402
from rema.prompts import TEACHER_PROMPTS, get_prompt_set  # noqa: E402
from rema.rewards.math_grader import MathGrade, grade_math  # noqa: E402

MULTI = Format(two_agents=True, multi_turn=True, max_turns=4)


def _grade(response: str, gold: str) -> MathGrade:
    return grade_math(response, gold, timeout_s=10.0)


def _check(text: str, fmt: Format = MULTI, finish: str = "stop", answer: str = "7"):
    return check_reply(text, finish, question="What is 3 + 4?", answer=answer, fmt=fmt, grade=_grade, id="q")


# ------------------------------------------------------------------------------------------------ replies


def test_parse_reply_reads_tagged_messages_and_nothing_else():
    assert parse_reply(" <mta> Plan. </mta>\n\n<ra>Use <b>bold</b> and $a<b>c$.</ra>\n") == [
        ("mta", "Plan."), ("ra", "Use <b>bold</b> and $a<b>c$.")]
    for bad, where in [("", "empty reply"), ("Sure!\n<mta>x</mta><ra>y</ra>", "text outside the tags at char 0"),
                       ("<mta>x</mta><ra>y</ra> Hope this helps", "text outside the tags at char 22"),
                       ("<mta>x<ra>y</ra></mta>", "<ra> at char 6 inside a <mta> message"),
                       ("<mta>x</mta><ra>y", "<ra> opened at char 16 is never closed"),
                       ("</ra><mta>x</mta>", "</ra> at char 0 closes no message"), ("just text", "outside")]:
        with pytest.raises(ReplyError, match=where):
            parse_reply(bad)


@pytest.mark.parametrize("case, reason, detail", [
    ("leak", "leak", "statement"),
    ("wrong", "wrong_answer", "boxed '8', reference '7'"),
    ("malformed", "malformed", "text outside the tags"),
    ("truncated", "truncated", "token limit"),
])
def test_check_reply_names_the_first_check_a_reply_fails(case, reason, detail):
    text, finish = CASES[case]
    v = _check(text, finish=finish)
    assert not v.kept and v.reason == reason and detail in v.detail


def test_check_reply_keeps_a_good_dialogue_in_the_sft_format():
    v = _check(GOOD)
    assert v.kept and v.reason is None
    assert [a for a, _ in v.dialogue.turns] == ["mta", "ra", "mta", "ra"]
    assert v.dialogue.to_dict()["turns"][-1] == {"agent": "ra", "text": "The final answer is $\\boxed{7}$."}


@pytest.mark.parametrize("text, fmt, problem", [
    # multi turn: the validator sft.data uses (roles, rounds), and a closing [FINISH]
    ("<ra>7</ra><mta>x</mta>", MULTI, "alternate"),
    ("<mta>a</mta><ra>b</ra><mta>c</mta><ra>d</ra><mta>e</mta><ra>f</ra><mta>g</mta><ra>h</ra>"
     "<mta>i [FINISH]</mta>"
     "<ra>\\boxed{7}</ra>", MULTI, "5 rounds exceed rollout.max_turns=4"),
    ("<mta>Add.</mta><ra>3 + 4 = 7</ra><mta>Good.</mta><ra>\\boxed{7}</ra>", MULTI, "does not end the dialogue with [FINISH]"),
    ("<mta>Add. [FINISH]</mta><ra>7</ra><mta>Ok [FINISH]</mta><ra>\\boxed{7}</ra>", MULTI, "before the last MTA"),
    # single turn: one round, no [FINISH]; single agent: one RA message; MRP: its two parts
    ("<mta>Add.</mta><ra>7</ra><mta>x</mta><ra>\\boxed{7}</ra>", Format(True, False, 4), "take one round"),
    ("<mta>Add. [FINISH]</mta><ra>\\boxed{7}</ra>", Format(True, False, 4), "[FINISH] in a single-turn"),
    ("<mta>Add.</mta><ra>\\boxed{7}</ra>", Format(False, False, 4), "exactly one 'ra' turn"),
    ("<ra>3 + 4 = 7, so \\boxed{7}</ra>", Format(False, False, 4, plan_then_solution=True), "'Plan:' and then"),
])
def test_check_reply_rejects_what_breaks_the_methods_format(text, fmt, problem):
    v = _check(text, fmt)
    assert v.reason == "format" and problem in v.detail


def test_check_reply_single_agent_and_mrp_and_unboxed():
    assert _check("<ra>Plan: add.\nSolution: 3 + 4 = 7, so \\boxed{7}.</ra>",
                  Format(False, False, 1, plan_then_solution=True)).kept
    assert _check("<ra>3 + 4 = 7</ra>", Format(False, False, 1)).reason == "unboxed"  # the right value, but no box
    v = _check("<mta>Plan: add.</mta><ra>\\boxed{7}</ra>", Format(True, False, 1), answer="\\frac{14}{2}")
    assert v.kept  # graded, not compared as text
    boxed_plan = _check("<mta>Compute \\boxed{3+4}.</mta><ra>\\boxed{7}</ra>", Format(True, False, 1))
    assert boxed_plan.reason == "leak" and "boxed" in boxed_plan.detail


def test_teacher_prompts_render_without_stray_braces_and_carry_the_students_system_prompts():
    for name, tp in TEACHER_PROMPTS.items():
        prompts = get_prompt_set(name)
        system, user = tp.messages(prompts, question="Find {x}.", solution="x = 2", answer="2", max_rounds=6,
                                   max_words=256)
        assert prompts.ra in system["content"] and (prompts.mta or "") in system["content"]
        assert "{{" not in system["content"] and "\\boxed{}" in system["content"] and "256 words" in system["content"]
        assert user["content"] == "Problem:\nFind {x}.\n\nReference solution:\nx = 2\n\nReference answer: 2"
        assert tp.tag.startswith(f"{name}@")
    assert "between 2 and 6 rounds" in TEACHER_PROMPTS["rema-multi"].messages(
        get_prompt_set("rema-multi"), question="q", solution="s", answer="a", max_rounds=6, max_words=9)[0]["content"]


# ------------------------------------------------------------------------------------------ retries, files


def test_backoff_doubles_honours_retry_after_and_is_capped():
    assert [backoff_s(a, base_s=1.0, retry_after=None, jitter=0.0) for a in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_s(3, base_s=1.0, retry_after=0.01, jitter=0.0) == 0.01
    assert backoff_s(1, base_s=1.0, retry_after=None, jitter=0.25) == 1.5
    assert backoff_s(20, base_s=1.0, retry_after=None, jitter=0.0) == 60.0
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25 and retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None and retry_after_s({}) is None


def test_read_rows_cuts_a_torn_last_line_and_names_a_bad_one(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "quest')
    rows, torn = read_rows(path)
    assert [r["id"] for r in rows] == ["a", "b"] and torn == len('{"id": "c", "quest')
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'  # the next append starts on a line of its own
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(DistillError, match="d.jsonl:2: not valid JSON"):
        read_rows(path)


# ----------------------------------------------------------------------------- the command, real HTTP server


def _problems(path: Path, cases: list[str]) -> Path:
    rows = [{"question": f"(case: {c}) Row {i}: what is 3 + 4?", "solution": "Add: 3 + 4 = 7.", "answer": "7"}
            for i, c in enumerate(cases)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _distill_args(inp: Path, out: Path, url: str, *extra: str) -> list[str]:
    return ["distill", "--input", str(inp), "--out", str(out), "--base-url", url, "--model", "teacher",
            "--max-turns", "4", "--no-progress", "distill.backoff_s=0.01", *extra]


def _ids(path: Path) -> list[str]:
    return [json.loads(x)["id"] for x in path.read_text().splitlines()] if path.exists() else []


CASE_ORDER = ["good", "leak", "wrong", "malformed", "rate", "flaky", "truncated"]


def test_distill_keeps_checked_dialogues_records_rejects_retries_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REMA_TEST_TEACHER_KEY", "sk-test")
    inp, out = _problems(tmp_path / "solved.jsonl", CASE_ORDER), tmp_path / "out" / "dialogues.jsonl"
    with TeacherServer() as server:
        code = main(_distill_args(inp, out, server.url, "--concurrency", "3", "--api-key-env", "REMA_TEST_TEACHER_KEY"))
        printed = capsys.readouterr().out
        assert code == 0
        assert sorted(_ids(out)) == ["solved/0", "solved/4", "solved/5"]  # good, rate and flaky after a retry
        rejected = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "dialogues.rejected.jsonl").read_text().splitlines())}
        assert {k: r["reason"] for k, r in rejected.items()} == {
            "solved/1": "leak", "solved/2": "wrong_answer", "solved/3": "malformed", "solved/6": "truncated"}
        assert rejected["solved/3"]["reply"] == CASES["malformed"][0]  # kept for inspection
        # 7 rows, one 429 and one 500 retried: 9 requests, each with the key from the environment variable
        assert sum(server.calls.values()) == 9 and set(server.auth) == {"Bearer sk-test"}
        assert server.bodies[0]["max_completion_tokens"] == 8192 and server.bodies[0]["temperature"] == 0.7
        assert ("this run kept 3, rejected 4 (truncated 1, malformed 1, leak 1, wrong_answer 1), failed 0" in printed
                and "Requests 9 (retries 2: 429 x1, 5xx x1, timeouts x0), tokens 700 prompt + 350 completion" in printed)
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert rows[0]["meta"]["teacher"] == "teacher" and rows[0]["meta"]["prompt_set"] == "rema-multi"

        # a re-run asks nothing: every row is in one file or the other
        assert main(_distill_args(inp, out, server.url)) == 0
        assert sum(server.calls.values()) == 9 and "7 of 7 rows were done before" in capsys.readouterr().out
        # --retry-rejected asks the 4 rejected rows again (the server still gives the same replies): no duplicates
        assert main(_distill_args(inp, out, server.url, "--retry-rejected")) == 0
        assert sum(server.calls.values()) == 13
        assert sorted(_ids(tmp_path / "out" / "dialogues.rejected.jsonl")) == ["solved/1", "solved/2", "solved/3", "solved/6"]
        assert len(_ids(out)) == 3

    # the output is an sft.data file as it is: the loader, and `rema sft` on the tiny model
    dialogues = load_dialogues(out, two_agents=True, multi_turn=True, max_turns=4)
    assert [d.turns for d in dialogues] == [parse_reply(GOOD)] * 3
    code = main(["sft", "model.name=tiny-random", f"sft.data={out}", "rollout.max_turns=4", "sft.epochs=1",
                 "rollout.max_context_tokens=8192",  # 4 rounds of 512-token messages
                 "data.eval=null", "data.train=synthetic:levels=1:n=5:seed=0:word=0", f"log.run_dir={tmp_path / 'run'}",
                 "log.tensorboard=false", "log.progress=false"])
    assert code == 0 and len((tmp_path / "run" / "cold_start_dialogues.jsonl").read_text().splitlines()) == 3


def test_resume_refuses_rows_longer_than_the_runs_max_turns(tmp_path):
    """Dialogues written under a larger --max-turns would make `rema sft` refuse the whole file: fail first."""
    from types import SimpleNamespace

    from rema.distill.run import DistillError, _check_resume

    turns = [{"agent": a, "text": "x"} for a in ("mta", "ra") * 3]  # 3 rounds
    row = {"id": "p0", "question": "q", "turns": turns, "meta": {"prompt_set": "rema-multi"}}
    by_id = {"p0": SimpleNamespace(question="q")}
    _check_resume([row], by_id, tmp_path / "d.jsonl", "rema-multi", max_turns=3)
    with pytest.raises(DistillError, match="3 rounds, more than rollout.max_turns=2"):
        _check_resume([row], by_id, tmp_path / "d.jsonl", "rema-multi", max_turns=2)


def test_distill_stops_on_an_unknown_model_and_fails_fast_on_bad_input(tmp_path, capsys):
    inp = _problems(tmp_path / "solved.jsonl", ["good", "good"])
    with TeacherServer(model="other") as server:
        assert main(_distill_args(inp, tmp_path / "d.jsonl", server.url)) == 2
        assert "HTTP 404" in capsys.readouterr().err and sum(server.calls.values()) == 0
    assert not _ids(tmp_path / "d.jsonl")
    # nothing listens on port 9: connection refused, retried, then the run stops (every row would fail alike)
    assert main(_distill_args(inp, tmp_path / "d.jsonl", "http://127.0.0.1:9/v1", "--max-retries", "1")) == 2
    assert "gave up after 1 retries; last: APIConnectionError" in capsys.readouterr().err
    (tmp_path / "nosol.jsonl").write_text(json.dumps({"question": "q", "answer": "1"}) + "\n")
    assert main(_distill_args(tmp_path / "nosol.jsonl", tmp_path / "d.jsonl", "http://127.0.0.1:9/v1")) == 2
    assert "no worked solution in field 'solution'" in capsys.readouterr().err
    assert main(_distill_args(inp, tmp_path / "d.jsonl", "http://127.0.0.1:9/v1", "--method", "rema-single",
                              "rollout.action_set=true")) == 2
    assert "not 'rema-actions'" in capsys.readouterr().err


def test_distill_resumes_after_kill_9_without_asking_a_written_row_again(tmp_path):
    n = 8
    inp, out = _problems(tmp_path / "solved.jsonl", ["good"] * n), tmp_path / "d.jsonl"
    with TeacherServer(delay_s=0.3) as server:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
        proc = subprocess.Popen([sys.executable, "-m", "rema.cli", *_distill_args(inp, out, server.url, "--concurrency", "1")],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(_ids(out)) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the subprocess wrote no rows in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = _ids(out)
        assert 3 <= len(before) < n
        with open(out, "a") as f:  # what a kill in the middle of a write leaves
            f.write('{"id": "solved/7", "question": "(case: go')
        calls_before = sum(server.calls.values())
        assert main(_distill_args(inp, out, server.url, "--concurrency", "4")) == 0
    after = _ids(out)
    assert len(after) == len(set(after)) == n and after[:len(before)] == before
    # rows written before the kill were asked once; the rest once more at most (the one in flight at the kill)
    asked = {q: c for q, c in server.calls.items()}
    assert all(asked[f"(case: good) Row {int(i.split('/')[1])}: what is 3 + 4?"] == 1 for i in before)
    assert sum(server.calls.values()) - calls_before == n - len(before)
