"""`rema eval` / `rema compare`: pass@k and maj@k math, records, resume, judge swap consistency, tables."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ScriptedEngine

from rema.cli import parse_args
from rema.config import Config, ConfigError, RolloutConfig, load_config, save_config
from rema.eval.bench_runner import EvalError, bench_name, run_benchmarks
from rema.eval.commands import eval_config_from_args
from rema.eval.metrics import (
    default_ks,
    episode_from_dict,
    judge_summary,
    majority_vote,
    normalize_for_vote,
    pass_at_k,
    question_stats,
    swap_consistent,
)
from rema.eval.records import read_records
from rema.eval.tables import (
    compare_markdown,
    compare_table,
    results_table,
    to_csv,
    to_markdown,
)
from rema.prompts import JUDGE_RA
from rema.runtime import SetupError
from rema.scoring import episode_metrics

# --- pure metrics --------------------------------------------------------------------------------------


def _pass_at_k_brute(n: int, c: int, k: int) -> float:
    """Share of the k-subsets of n samples (c correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_equals_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_pass_at_k_brute(n, c, k))
    assert pass_at_k(4, 1, 1) == 0.25  # pass@1 is the plain accuracy
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_vote_normalisation_groups_equivalent_strings():
    assert normalize_for_vote("$5.0$") == normalize_for_vote("5") == normalize_for_vote(" 5. ") == "5"
    assert normalize_for_vote("x = 3") == "3" and normalize_for_vote("1,080") == "1080"
    assert normalize_for_vote("\\dfrac{1}{2}") == normalize_for_vote("\\frac{1}{2}")
    assert normalize_for_vote("\\text{(B)}") == "(B)" and normalize_for_vote(None) is None
    assert normalize_for_vote("0.5") != normalize_for_vote("\\frac12")  # string grouping, by design


def test_majority_vote_counts_groups_and_breaks_ties_by_first_seen():
    answers = ["7", "5.0", None, "$5$", "7", "5"]
    correct = [False, True, False, True, False, True]
    assert majority_vote(answers, correct) == ("5.0", True, 3)
    assert majority_vote(["7", "5"], [False, True]) == ("7", False, 1)  # tie: the earlier answer wins
    assert majority_vote([None, None], [False, False]) == (None, False, 0)


def test_question_stats_on_hand_made_records():
    # 4 samples, one correct (the last): pass@1 = 1/4, pass@2 = 1 - C(3,2)/C(4,2) = 1/2, pass@4 = 1;
    # maj@2 over ["3", "3"] is wrong, maj@4 over ["3", "3", "4", "4"] ties -> "3" (first) is wrong.
    stats = question_stats(["3", "3", "4", "4"], [False, False, False, True], default_ks(4))
    assert stats == pytest.approx({"pass@1": 0.25, "pass@2": 0.5, "pass@4": 1.0, "maj@2": 0.0, "maj@4": 0.0})
    stats = question_stats(["4", "3", "4", "4"], [True, False, True, True], [1, 4])
    assert stats["maj@4"] == 1.0 and stats["pass@1"] == 0.75
    assert default_ks(8) == [1, 2, 4, 8] and default_ks(6) == [1, 2, 4, 6] and default_ks(1) == [1]


def test_judge_swap_consistency():
    assert swap_consistent("A", "B") and swap_consistent("B", "A")
    assert not swap_consistent("A", "A") and not swap_consistent(None, "B")
    pairs = [
        {"verdict_original": "A", "verdict_swapped": "B", "correct_original": True, "correct_swapped": True},
        {"verdict_original": "A", "verdict_swapped": "A", "correct_original": True, "correct_swapped": False},
        {"verdict_original": "B", "verdict_swapped": None, "correct_original": False, "correct_swapped": False},
        {"verdict_original": "B", "verdict_swapped": "A", "correct_original": False, "correct_swapped": False},
    ]
    m = judge_summary(pairs)
    assert m["acc/original"] == 0.5 and m["acc/swapped"] == 0.25 and m["acc"] == 0.375
    assert m["consistency"] == 0.5 and m["acc/both"] == 0.25 and m["verdict_found"] == 7 / 8


# --- eval runs with a scripted engine -----------------------------------------------------------------

QUESTION = re.compile(r"What is (\d+) \+ (\d+)\?")


def _math_file(tmp_path: Path, n: int = 5) -> Path:
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"What is {i} + {10 * i}?", "answer": str(11 * i)})
                            + "\n" for i in range(n)))
    return path


class Solver:
    """Scripted single agent: right on even ids, off by one on odd ids; records the questions it saw."""

    def __init__(self, tok, fail_after_calls: int | None = None):
        self.tok, self.fail_after, self.seen = tok, fail_after_calls, []

    def __call__(self, call: int, prompt) -> tuple[str, str]:
        if self.fail_after is not None and call >= self.fail_after:
            raise KeyboardInterrupt("simulated Ctrl-C")
        a, b = map(int, QUESTION.findall(self.tok.decode(prompt))[-1])
        self.seen.append(a)
        return f"{a} + {b} = \\boxed{{{a + b + (a % 2)}}}", "stop"


def _flags(*argv: str) -> Config:
    """The Config of ``rema eval ARGV`` (flags, CONFIG and overrides), as the command builds it."""
    return eval_config_from_args(parse_args(["eval", *argv]))


def _settings(tmp_path: Path, bench: Path, *flags: str) -> Config:
    return _flags("--bench", str(bench), "--model", "tiny-random", "--method", "vrp", "--batch-size", "2",
                  "--out", str(tmp_path / "out"), "--max-tokens", "64", *flags)


def _engines(tok, script):
    eng = ScriptedEngine(tok, script)
    return {"mta": eng, "ra": eng}


def test_eval_writes_records_tables_and_summary(tiny, tmp_path):
    _, tok = tiny
    bench = _math_file(tmp_path)
    out, summary = run_benchmarks(_settings(tmp_path, bench), engines=_engines(tok, Solver(tok)))
    b = summary["benchmarks"]["sums"]
    assert b["questions"] == 5 and b["acc"] == pytest.approx(3 / 5) and b["end/finished"] == 1.0
    assert b["acc/strict"] == b["acc"]  # every episode finished
    records = read_records(out / "records" / "sums.jsonl")
    assert [r["id"] for r in records] == [f"sums/q{i}" for i in range(5)]
    r1 = records[1]
    assert r1["extracted"] == "12" and r1["answer"] == "11" and r1["correct"] is False
    assert r1["end_code"] == "finished" and r1["tokens"]["ra"] > 0 and r1["tokens"]["total"] == r1["tokens"]["ra"]
    ep = r1["samples"][0]["episode"]
    assert ep["turns"][0]["text"].startswith("1 + 10 =") and ep["reward"]["ra"] == 0.0
    md = (out / "results.md").read_text()
    assert "| sums | 5 | 60.0 |" in md and "vrp" in md
    csv_rows = (out / "results.csv").read_text().splitlines()
    assert csv_rows[0].startswith("benchmark,questions,acc %") and csv_rows[1].startswith("sums,5,60.0")
    assert json.loads((out / "summary.json").read_text())["average"]["score"] == pytest.approx(0.6)


def test_resume_after_interruption_runs_only_the_remaining_questions(tiny, tmp_path):
    _, tok = tiny
    bench = _math_file(tmp_path, n=5)
    s = _settings(tmp_path, bench)
    with pytest.raises(KeyboardInterrupt):  # dies in the second chunk (one engine call per chunk)
        run_benchmarks(s, engines=_engines(tok, Solver(tok, fail_after_calls=1)))
    path = Path(s.eval.out) / "records" / "sums.jsonl"
    assert len(read_records(path)) == 2
    with open(path, "a") as fh:  # and a half-written line from the crash
        fh.write('{"id": "sums/q2", "bench"')
    solver = Solver(tok)
    _, summary = run_benchmarks(s, engines=_engines(tok, solver))
    assert sorted(solver.seen) == [2, 3, 4]  # the first two questions were not asked again
    ids = [r["id"] for r in read_records(path)]
    assert ids == [f"sums/q{i}" for i in range(5)]
    assert summary["benchmarks"]["sums"]["acc"] == pytest.approx(3 / 5)
    # a larger --limit continues, a smaller one reports on its subset only
    _, small = run_benchmarks(_settings(tmp_path, bench, "--limit", "2"), engines=_engines(tok, Solver(tok)))
    assert small["benchmarks"]["sums"]["questions"] == 2 and small["benchmarks"]["sums"]["acc"] == 0.5


def test_resume_refuses_other_settings(tiny, tmp_path):
    _, tok = tiny
    bench = _math_file(tmp_path, n=2)
    run_benchmarks(_settings(tmp_path, bench), engines=_engines(tok, Solver(tok)))
    with pytest.raises(EvalError, match="method: was 'vrp', now 'mrp'"):
        run_benchmarks(_settings(tmp_path, bench, "--method", "mrp"), engines=_engines(tok, Solver(tok)))


def test_sampling_reports_pass_and_majority_at_k(tiny, tmp_path):
    _, tok = tiny
    bench = _math_file(tmp_path, n=2)
    # one engine call serves all n samples of the chunk, in order: q0 (gold 0) then q1 (gold 11)
    answers = iter(["7", "0", "7", "0", "11", "5", "11", "11"])
    eng = ScriptedEngine(tok, lambda call, prompt: (f"so \\boxed{{{next(answers)}}}", "stop"))
    _, summary = run_benchmarks(_settings(tmp_path, bench, "--n", "4", "--temperature", "1.0"), engines={"mta": eng, "ra": eng})
    b = summary["benchmarks"]["sums"]
    # q0: 2/4 right, maj@2 and maj@4 tie -> "7" (first seen), wrong; q1: 3/4 right, majority "11" right
    assert b["pass@1"] == pytest.approx((0.5 + 0.75) / 2) and b["acc"] == b["pass@1"]
    assert b["pass@2"] == pytest.approx((1 - 1 / 6 + 1) / 2) and b["pass@4"] == 1.0
    assert b["maj@2"] == 0.5 and b["maj@4"] == 0.5
    assert summary["settings"]["n"] == 4 and summary["settings"]["temperature"] == 1.0
    assert len(eng.calls) == 1 and len(eng.calls[0]) == 8


def _judge_file(tmp_path: Path) -> Path:
    rows = [{"id": f"p{i}", "prompt": f"Say hi #{i}", "response_a": f"GOOD {i}" if i % 2 == 0 else f"bad {i}",
             "response_b": f"bad {i}" if i % 2 == 0 else f"GOOD {i}", "label": "A" if i % 2 == 0 else "B"}
            for i in range(4)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _judge_script(tok, *, biased: bool):
    def script(call, prompt):
        text = tok.decode(prompt)
        if JUDGE_RA[:40] not in text:  # the meta-thinker: plan only
            return "Check which response follows the prompt.", "stop"
        if biased:
            return "Both are fine. [[A]]", "stop"
        a = text.rsplit("[Response A]", 1)[1].split("[Response B]")[0]
        return ("A is better. [[A]]" if "GOOD" in a else "B is better. [[B]]"), "stop"

    return script


def test_judge_eval_both_orders(tiny, tmp_path):
    _, tok = tiny
    bench = _judge_file(tmp_path)
    s = _settings(tmp_path, bench, "--method", "rema-single", "--out", str(tmp_path / "fair"))
    out, summary = run_benchmarks(s, engines=_engines(tok, _judge_script(tok, biased=False)))
    b = summary["benchmarks"]["pairs"]
    assert b["acc"] == 1.0 and b["consistency"] == 1.0 and b["questions"] == 4
    rec = read_records(out / "records" / "pairs.jsonl")[1]
    assert rec["label"] == "B" and rec["verdict_original"] == "B" and rec["verdict_swapped"] == "A"
    swapped_q = rec["swapped"][0]["episode"]["question"]
    assert swapped_q.index("GOOD 1") < swapped_q.index("bad 1")  # responses really were exchanged
    assert "consistent %" in (out / "results.md").read_text()

    s = _settings(tmp_path, bench, "--method", "rema-single", "--out", str(tmp_path / "biased"))
    _, summary = run_benchmarks(s, engines=_engines(tok, _judge_script(tok, biased=True)))
    b = summary["benchmarks"]["pairs"]  # always "A": right on the A-labelled half in each order, never consistent
    assert b["acc/original"] == 0.5 and b["acc/swapped"] == 0.5 and b["consistency"] == 0.0


def test_records_rebuild_episodes_for_episode_metrics(tiny, tmp_path):
    from conftest import problem

    from rema.scoring import run_eval

    _, tok = tiny
    turns = iter(["Plan: add.", "2 + 3 = 5", "Good. [FINISH]", "\\boxed{5}"])
    eng = ScriptedEngine(tok, lambda call, prompt: (next(turns), "stop"))
    cfg = _flags("--method", "rema-multi", "--max-turns", "3", "--max-tokens", "32")
    metrics, [ep] = run_eval([problem()], {"mta": eng, "ra": eng}, cfg)
    rebuilt = episode_from_dict(json.loads(json.dumps(ep.to_dict())))
    assert episode_metrics([rebuilt]) == {k: v for k, v in episode_metrics([ep]).items()}
    assert metrics["acc"] == 1.0


# --- tables and compare ------------------------------------------------------------------------------------


def _summary(model: str, method: str, scores: dict[str, float]) -> dict:
    return {"model": model, "method": method, "settings": {"temperature": 0.0, "n": 1},
            "benchmarks": {b: {"questions": 10, "score": v, "acc": v, "end/finished": 1.0, "turns/mean": 1.0,
                               "wall_s": 3.0} for b, v in scores.items()}}


def test_markdown_and_csv_tables():
    headers, rows = results_table({**_summary("m", "vrp", {"gsm8k": 0.123, "math500": 0.5}),
                                   "average": {"questions": 20, "score": 0.3115, "wall_s": 6.0}})
    assert headers[:3] == ["benchmark", "questions", "acc %"]
    assert rows[0][:3] == ["gsm8k", "10", "12.3"] and rows[-1][:3] == ["average", "20", "31.1"]
    md = to_markdown(["a", "b"], [["x", "1"]], bold={(0, 1)})
    assert md.splitlines() == ["| a | b |", "|---|---:|", "| x | **1** |"]
    assert to_csv(["a", "b"], [["x, y", "1"]]) == 'a,b\n"x, y",1\n'


def test_compare_marks_the_best_per_column():
    rows_in = [_summary("llama", "vrp", {"gsm8k": 0.50, "math500": 0.30, "amc23": 0.10}),
               _summary("llama", "rema-multi", {"gsm8k": 0.60, "math500": 0.30, "amc23": 0.20}),
               _summary("qwen", "vrp", {"gsm8k": 0.40, "math500": 0.25})]
    headers, rows, bold = compare_table(rows_in)
    assert headers == ["model", "method", "math500", "gsm8k", "amc23", "average"]  # paper column order
    assert rows[1] == ["llama", "rema-multi", "30.0", "60.0", "20.0", "36.7"]
    assert rows[2][4] == "–" and rows[2][5] == "32.5*"  # missing benchmark; partial average flagged
    assert bold == {(0, 2), (1, 2), (1, 3), (1, 4), (1, 5)}  # math500 tie: both bold
    md = compare_markdown(rows_in)
    assert "| llama | rema-multi | **30.0** | **60.0** | **20.0** | **36.7** |" in md
    assert "| qwen | vrp | 25.0 | 40.0 | – | 32.5* |" in md and "\\* average over" in md
    assert md.splitlines()[1] == "|---|---|---:|---:|---:|---:|"


def test_compare_cli_and_config(tiny, tmp_path, capsys):
    from rema.cli import main

    _, tok = tiny
    for name, s in (("a", _summary("m1", "vrp", {"gsm8k": 0.1})), ("b", _summary("m1", "rema-multi", {"gsm8k": 0.2}))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(s))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "t.md")]) == 0
    assert "| m1 | rema-multi | **20.0** | **20.0** |" in (tmp_path / "t.md").read_text()
    assert main(["compare", str(tmp_path / "missing")]) == 2

    from rema.eval.commands import run_compare_config

    bench = _math_file(tmp_path, n=2)
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(f"models: [tiny-random]\nmethods: [vrp, mrp]\nbenchmarks: ['{bench}']\nout: {tmp_path / 'cmp'}\n"
                   "eval: {max_tokens: 32}\n")
    summaries = run_compare_config(cfg, engines_factory=lambda c: _engines(tok, Solver(tok)))
    assert [(s["model"], s["method"]) for s in summaries] == [("tiny-random", "vrp"), ("tiny-random", "mrp")]
    assert (tmp_path / "cmp" / "tiny-random-mrp" / "records" / "sums.jsonl").is_file()


def test_bench_names_and_method_configs():
    assert bench_name("gsm8k") == "gsm8k" and bench_name("data/my file.jsonl") == "my_file"
    assert bench_name("hf:openai/gsm8k:main:test") == "gsm8k" and bench_name("math500:levels=1,2") == "math500_levels1-2"
    cfg = _flags("--method", "rema-actions", "--max-tokens", "100")
    assert cfg.method_name == "rema-actions" and cfg.rollout.max_tokens_per_turn == 100
    assert cfg.rollout.eval_temperature == 0.0  # greedy: the config's one default
    assert _flags("--method", "vrp", "--n", "4", "--temperature", "1").eval.n == 4
    with pytest.raises(ConfigError, match=r"eval.n=4 .*rollout.eval_temperature"):
        _flags("--method", "vrp", "--n", "4")  # four greedy samples would be one sample four times


def test_eval_cli_on_a_run_folder_with_tiny_model(tiny, tmp_path):
    """--run: final/ weights and the run's method; a real (tiny) model generates, end to end through the CLI."""
    import yaml

    from rema.cli import main
    from rema.config import Config
    from rema.models import export_model

    model, tok = tiny
    run = tmp_path / "run"
    export_model(model, tok, run / "final")
    cfg = Config()
    cfg.rollout.mode = "single_turn"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    bench = _math_file(tmp_path, n=2)
    out = tmp_path / "ev"
    assert main(["eval", "--run", str(run), "--bench", str(bench), "--max-tokens", "8", "--out", str(out),
                 "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "rema-single" and summary["model"] == "run"
    rec = read_records(out / "records" / "sums.jsonl")[0]
    assert [t["agent"] for t in rec["samples"][0]["episode"]["turns"]] == ["mta", "ra"]
    assert main(["eval", "--run", str(tmp_path / "nope"), "--bench", str(bench)]) == 2


def test_plan_leak_rate_reads_the_first_mta_message_strictly(tiny):
    """``leak_rate``: a box in any MTA message; ``plan_leak_rate``: the first message gives the answer away."""
    from rema.config import RolloutConfig
    from rema.prompts import get_prompt_set
    from rema.rollout import rollout
    from rema.scoring import episode_metrics

    _, tok = tiny
    mta_first = iter(["Add 7 and 4.", "7 + 4 = 11.", "The answer is 11.", "Add them."])
    mta_second = iter(["ok", "ok", "ok", "so \\boxed{11}"])

    def script(call, prompt):
        text = tok.decode(prompt)
        if text.count("<|im_start|>assistant") >= 2 and "meta-thinker in a team" in text:
            return next(mta_second), "stop"
        return (next(mta_first) if "meta-thinker in a team" in text else "11"), "stop"

    eng = ScriptedEngine(tok, script)
    cfg = RolloutConfig(mode="multi_turn", max_turns=2, samples_per_question=1, max_tokens_per_turn=32)
    problems = [SimpleNamespace(id=f"p{i}", question="What is 7 + 4?", answer="11", meta={}) for i in range(4)]
    episodes = rollout(problems, cfg, {"mta": eng, "ra": eng}, get_prompt_set("rema-multi"))
    m = episode_metrics(episodes)
    assert m["plan_leak_rate"] == 0.5  # "7 + 4 = 11." and "The answer is 11."
    assert m["leak_rate"] == 0.25  # only the box in the last episode's second message


def test_eval_eager_flag_reaches_the_engine_options():
    assert _flags("--model", "tiny-random", "--bench", "gsm8k", "--eager").rollout.vllm_enforce_eager
    assert not _flags().rollout.vllm_enforce_eager  # compiled by default


# --- one way in: flags are config keys -------------------------------------------------------------------


def test_every_eval_flag_is_its_config_key(tmp_path):
    """Each ``rema eval`` flag gives the same Config as the dotted key it stands for."""
    from rema.config import METHODS
    from rema.runtime import command_config

    run = tmp_path / "run"
    run.mkdir()
    save_config(Config(), run / "config.yaml")
    pairs = [  # (flags, the overrides they stand for)
        (["--model", "m1"], ["model.name=m1"]), (["--mta-model", "m1"], ["model.name=m1"]),
        (["--ra-model", "m2"], ["model.ra_name=m2", "train.shared_weights=false"]), (["--label", "L"], ["eval.label=L"]),
        (["--run", str(run), "--checkpoint", "step_1"], [f"eval.run={run}", "eval.checkpoint=step_1"]),
        (["--bench", "gsm8k", "math500:levels=1,2"], ['eval.benches=[gsm8k, "math500:levels=1,2"]']),
        (["--data-dir", "d"], ["data.data_dir=d"]), (["--limit", "3"], ["eval.limit=3"]),
        (["--question-field", "q", "--answer-field", "a"], ["data.question_field=q", "data.answer_field=a"]),
        (["--id-field", "i", "--level-field", "lv", "--split", "test"],
         ["eval.id_field=i", "eval.level_field=lv", "eval.split=test"]),
        (["--task", "judge", "--answer-format", "raw"], ["eval.task=judge", "eval.answer_format=raw"]),
        (["--n", "4", "--temperature", "0.5", "--top-p", "0.9"],
         ["eval.n=4", "rollout.eval_temperature=0.5", "rollout.top_p=0.9"]),
        (["--max-turns", "3", "--max-tokens", "16", "--max-context", "128"],
         ["rollout.max_turns=3", "rollout.max_tokens_per_turn=16", "rollout.max_context_tokens=128"]),
        (["--batch-size", "4", "--seed", "7", "--out", "o"], ["eval.batch_size=4", "eval.seed=7", "eval.out=o"]),
        (["--device", "cpu", "--dtype", "bfloat16", "--engine", "hf", "--eager"],
         ["model.device=cpu", "model.dtype=bfloat16", "rollout.engine=hf", "rollout.vllm_enforce_eager=true"]),
        (["--grader-timeout", "2", "--grader-workers", "3"], ["reward.grader_timeout_s=2", "reward.grader_workers=3"]),
    ] + [(["--method", m], [f"rollout.{k}={str(v).lower()}" for k, v in values.items()]
          + (["train.shared_weights=true"] if values["method"] != "rema" else [])) for m, values in METHODS.items()]
    for flags, keys in pairs:
        assert _flags(*flags) == command_config(None, keys), flags
    shorthands = parse_args(["eval"]).shorthands
    assert {shorthands.flags[f] for flags, _ in pairs for f in flags if f.startswith("--")} == set(shorthands.keys)


def test_eval_has_one_default_per_knob_and_explicit_keys_win(tmp_path):
    """No flag carries a default of its own: ``rema eval`` alone is the config's defaults; a dotted override
    beats the flag for the same key wherever it stands; a trailing CONFIG or override after ``--bench``'s
    list is not taken for a benchmark."""
    from rema.runtime import resolved

    assert _flags() == resolved(load_config(None))
    assert _flags().rollout.max_turns == RolloutConfig.max_turns and _flags().eval.benches == ["gsm8k"]
    assert _flags("rollout.max_turns=5", "--max-turns", "2").rollout.max_turns == 5
    assert _flags("--max-turns", "2", "rollout.max_turns=5").rollout.max_turns == 5
    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  max_turns: 7\n  max_tokens_per_turn: 40\neval:\n  limit: 9\n")
    cfg = _flags("--bench", "gsm8k", "math500", str(path), "eval.n=1", "--max-tokens", "20")
    assert cfg.eval.benches == ["gsm8k", "math500"] and cfg.eval.limit == 9
    assert (cfg.rollout.max_turns, cfg.rollout.max_tokens_per_turn) == (7, 20)  # file, then flag
    cfg = _flags("--max-tokens", "20", str(path), "eval.limit=3", "--limit", "5")  # positionals after flags
    assert (cfg.rollout.max_turns, cfg.rollout.max_tokens_per_turn, cfg.eval.limit) == (7, 20, 3)


def test_eval_run_config_is_the_base(tmp_path):
    """``--run RUN``: the run's config.yaml is the base (its method and limits), flags and keys on top."""
    run = tmp_path / "run"
    run.mkdir()
    base = load_config(None, ["rollout.mode=single_turn", "rollout.max_turns=6", "model.dtype=bfloat16"])
    save_config(base, run / "config.yaml")
    cfg = _flags("--run", str(run))
    assert (cfg.method_name, cfg.rollout.max_turns, cfg.model.dtype) == ("rema-single", 6, "bfloat16")
    cfg = _flags("--run", str(run), "--method", "vrp", "--dtype", "float32")
    assert (cfg.method_name, cfg.model.dtype, cfg.eval.run) == ("vrp", "float32", str(run))
    with pytest.raises(SetupError, match="no config.yaml"):
        _flags("--run", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="eval.checkpoint.*set eval.run"):
        _flags("--checkpoint", "step_000001")


@pytest.mark.parametrize("override,message", [
    ("eval.n=0", "eval.n must be >= 1"),
    ("eval.limit=0", "eval.limit must be >= 1"),
    ("eval.batch_size=0", "eval.batch_size must be >= 1"),
    ("eval.benches=[]", "eval.benches is empty"),
    ("eval.task=poetry", r"eval.task='poetry' is not valid"),
    ("eval.answer_format=latex", r"eval.answer_format='latex' is not valid"),
    ("rollout.eval_temperature=-1", "rollout.eval_temperature must be >= 0"),
])
def test_bad_eval_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_compare_eval_section_takes_config_keys(tiny, tmp_path):
    """A compare file's ``eval:`` mapping takes dotted or nested config keys (and the older flag names)."""
    from rema.eval.commands import run_compare_config

    _, tok = tiny
    bench = _math_file(tmp_path, n=3)
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(f"models: [tiny-random, {{model: tiny-random, label: second, limit: 2}}]\nmethods: [vrp]\n"
                   f"benchmarks: ['{bench}']\nout: {tmp_path / 'cmp'}\n"
                   "eval: {rollout: {max_tokens_per_turn: 32}, eval.limit: 1, batch_size: 2}\n")
    summaries = run_compare_config(cfg, engines_factory=lambda c: _engines(tok, Solver(tok)))
    assert [(s["model"], s["benchmarks"]["sums"]["questions"]) for s in summaries] == [("tiny-random", 1),
                                                                                     ("second", 2)]
    assert summaries[0]["settings"]["max_tokens"] == 32 and summaries[0]["method"] == "vrp"
    cfg.write_text("models: [tiny-random]\neval: {max_tokenz: 32}\n")
    with pytest.raises(EvalError, match="unknown key 'max_tokenz'"):
        run_compare_config(cfg, engines_factory=lambda c: _engines(tok, Solver(tok)))
