"""The LLM-as-a-judge task end to end: JudgeBench and RewardBench rows, the seeded held-out split, the judge
prompts and [FINISH], `rema eval` per family with swap consistency, the cold start, RL on the tiny model,
`rema chat --task judge`.

Fixtures (tests/data): ``rewardbench_sample.jsonl`` (24 rows in RewardBench's schema: prompt, chosen,
chosen_model, rejected, rejected_model, subset, id) and ``judgebench_sample.jsonl`` (9 rows in JudgeBench's:
pair_id, original_id, source, question, response_model, response_A, response_B, label ``A>B``/``B>A``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ScriptedEngine

from rema.config import ConfigError, RolloutConfig, load_config
from rema.data import BENCHMARKS, DataError, load_benchmark, load_problems, resolve_dataset, split_record
from rema.data.dialogues import DialogueError, dialogues_from_episodes, load_dialogues
from rema.eval.bench_runner import load_bench, run_benchmarks
from rema.prompts import (
    COLD_START_JUDGE_FINISH,
    COLD_START_VERDICT,
    FINISH_MARKER,
    JUDGE_FINAL_INSTRUCTION,
    JUDGE_QUESTION,
    MTA_JUDGE_MULTI_TURN,
    get_prompt_set,
)
from rema.rewards import judge_family
from rema.rollout import rollout
from rema.rollout.scripted import replay
from rema.runtime import command_config
from rema.scoring import episode_metrics, score_episodes

DATA = Path(__file__).parent / "data"
REWARDBENCH = DATA / "rewardbench_sample.jsonl"
JUDGEBENCH = DATA / "judgebench_sample.jsonl"


def _decode(tok, ids) -> str:
    return tok.decode(ids)


def _mta_or_ra(text: str) -> str:
    """Which role a prompt belongs to: every judge MTA system prompt names the meta-thinker first."""
    return "mta" if "You are the meta-thinker" in text.split("<|im_end|>", 1)[0] else "ra"


# --- data -------------------------------------------------------------------------------------------------


def test_judgebench_rows_load_with_their_labels_parts_and_families(tmp_path):
    problems = load_problems(JUDGEBENCH)
    assert len(problems) == 9 and all(p.is_judge for p in problems)
    first = problems[0]
    assert first.id == "judgebench_sample/3f0c5a1e-6b2d-5c4e-9a71-0d2e8b4f6a10"  # pair_id is the id
    assert first.label == first.answer == "A" and first.response_a.startswith("A fully integrated writing")
    assert first.question == first.prompt and first.prompt.startswith("Under the parol evidence rule")
    assert first.meta["subset"] == "mmlu-pro-law" and first.meta["source"] == "judgebench_sample"
    assert first.meta["original_id"] == 1204 and first.meta["response_model"] == "gpt-4o-2024-05-13"
    assert [p.label for p in problems] == ["A", "A", "B", "A", "B", "A", "B", "A", "B"]  # from A>B / B>A
    families = [judge_family(p.meta["subset"]) for p in problems]
    assert families == ["mmlu-pro"] * 3 + ["livebench-reasoning"] * 2 + ["livebench-math"] * 2 + ["livecodebench"] * 2

    # the registry: judgebench is the gpt split (local file judgebench_gpt.jsonl), judgebench_claude the other
    shutil.copy(JUDGEBENCH, tmp_path / "judgebench_gpt.jsonl")
    named = load_benchmark("judgebench", data_dir=tmp_path)
    assert [p.id for p in named][0] == "judgebench/3f0c5a1e-6b2d-5c4e-9a71-0d2e8b4f6a10"
    assert [(p.label, p.response_b) for p in named] == [(p.label, p.response_b) for p in problems]
    with pytest.raises(DataError, match="judgebench_claude.jsonl"):
        load_benchmark("judgebench_claude", data_dir=tmp_path)

    bad = json.loads(JUDGEBENCH.read_text().splitlines()[0]) | {"label": "A=B"}
    (tmp_path / "bad.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: judge label .* 'A>B' / 'B>A'"):
        load_problems(tmp_path / "bad.jsonl")


def test_judgebench_comes_from_the_hub_split_asked_for(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in JUDGEBENCH.read_text().splitlines()]
    calls = []

    def fake_load_dataset(path, name=None, split=None, revision=None, **kw):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(rows[:4] if split == "claude" else rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert len(load_benchmark("judgebench")) == 9 and calls[-1] == ("ScalerLab/JudgeBench", None, "gpt")
    claude = load_benchmark("judgebench_claude")
    assert calls[-1] == ("ScalerLab/JudgeBench", None, "claude") and len(claude) == 4
    assert claude[2].label == "B" and claude[2].meta["subset"] == "mmlu-pro-physics"


def test_judge_family_maps_sources_and_subsets():
    assert judge_family("mmlu-pro-law") == judge_family("mmlu-pro-computer science") == "mmlu-pro"
    assert judge_family("livebench-reasoning") == "livebench-reasoning"
    assert judge_family("livecodebench") == "livecodebench"
    assert [judge_family(s) for s in ("alpacaeval-hard", "llmbar-adver-GPTOut", "donotanswer", "hep-go")] == [
        "chat",
        "chat-hard",
        "safety",
        "reasoning",
    ]
    assert judge_family("my-own-subset") == "my-own-subset" and judge_family(None) is None


def test_rewardbench_split_is_seeded_stratified_disjoint_and_recreated_by_its_spec(tmp_path):
    spec = f"{REWARDBENCH}:split={{}}:heldout=8:seed=3"
    train, held = resolve_dataset(spec.format("train")), resolve_dataset(spec.format("heldout"))
    everything = load_problems(REWARDBENCH)
    assert len(train) == 16 and len(held) == 8
    assert {p.id for p in train} | {p.id for p in held} == {p.id for p in everything}
    assert not {p.id for p in train} & {p.id for p in held}
    assert [p.id for p in resolve_dataset(spec.format("heldout"))] == [p.id for p in held]  # re-created
    assert [p.id for p in load_bench(spec.format("heldout"), load_config(None))] == [p.id for p in held]  # rema eval
    assert [p.id for p in resolve_dataset(spec.format("heldout").replace("seed=3", "seed=4"))] != [p.id for p in held]
    # stratified: xstest-should-respond has 2 of the 24 pairs, so 8/24 * 2 = 0.67 of them held out, rounded by
    # largest remainder; math-prm (2 pairs) likewise; no subset loses more than its share + 1
    for subset in {p.meta["subset"] for p in everything}:
        n = sum(p.meta["subset"] == subset for p in everything)
        assert sum(p.meta["subset"] == subset for p in held) <= math.ceil(8 * n / 24)

    # the registry name takes the same options (local file rewardbench_raw.jsonl); a share works too
    shutil.copy(REWARDBENCH, tmp_path / "rewardbench_raw.jsonl")
    named = resolve_dataset("rewardbench_raw:split=heldout:heldout=0.25:seed=3", tmp_path)
    assert len(named) == 6 and all(p.id.startswith("rewardbench_raw/") for p in named)
    assert len(resolve_dataset("rewardbench_raw:split=train:heldout=0.25:seed=3:limit=5", tmp_path)) == 5
    with pytest.raises(DataError, match="needs heldout=N"):
        resolve_dataset("rewardbench_raw:split=train", tmp_path)
    with pytest.raises(DataError, match="split must be train or heldout"):
        resolve_dataset("rewardbench_raw:split=test:heldout=3", tmp_path)
    with pytest.raises(DataError, match="heldout=30 must be"):
        resolve_dataset("rewardbench_raw:split=train:heldout=30", tmp_path)
    for bad in ("nan", "inf"):
        with pytest.raises(DataError, match=f"heldout={bad} must be"):
            resolve_dataset(f"rewardbench_raw:split=train:heldout={bad}", tmp_path)
    assert BENCHMARKS["rewardbench_raw"].hf_split == "raw" and BENCHMARKS["rewardbench"].hf_split == "filtered"

    record = split_record({"train": ("x:split=train", train), "eval": ("x:split=heldout", held)})
    assert record["eval"]["ids"] == [p.id for p in held] and record["train"]["n"] == 16
    assert record["train"]["fingerprint"] != record["eval"]["fingerprint"]


def test_shipped_judge_config_trains_and_evaluates_on_the_two_sides_of_one_split():
    cfg = load_config(Path(__file__).parents[1] / "configs" / "rema_judge.yaml")
    held_out, out_of_domain = cfg.data.eval_specs
    train_opts, eval_opts = cfg.data.train.split(":"), held_out.split(":")
    assert cfg.rollout.task == "judge" and train_opts[0] == eval_opts[0] == "rewardbench_raw"
    assert out_of_domain == "judgebench"
    assert "split=train" in train_opts and "split=heldout" in eval_opts
    assert sorted(set(train_opts) - {"split=train"}) == sorted(set(eval_opts) - {"split=heldout"})


# --- prompts and the protocol --------------------------------------------------------------------------


def test_judge_prompt_sets_by_method_and_mode():
    def name(*overrides):
        return load_config(None, ["rollout.task=judge", *overrides]).method_name

    assert name() == "rema-judge-multi" and name("rollout.mode=single_turn") == "rema-judge"
    assert name("rollout.method=vrp", "train.shared_weights=true") == "vrp-judge"
    assert name("rollout.method=mrp", "train.shared_weights=true") == "mrp-judge"
    assert FINISH_MARKER in MTA_JUDGE_MULTI_TURN and FINISH_MARKER not in get_prompt_set("rema-judge").mta
    for set_name in ("rema-judge", "rema-judge-multi", "vrp-judge", "mrp-judge"):
        assert "[[A]]" in get_prompt_set(set_name).ra
    with pytest.raises(ConfigError, match="action_set=true has no judge prompts"):
        load_config(None, ["rollout.task=judge", "rollout.mode=single_turn", "rollout.action_set=true"])


def test_training_rollouts_show_both_responses_and_multi_turn_judge_episodes_finish(tiny):
    """A judge Problem from the loader is shown with both responses (its parts are fields, not meta); the
    MTA's [FINISH] ends the episode, the RA is asked for its verdict, and the episode is scored, not masked."""
    _, tok = tiny
    [problem] = load_problems(JUDGEBENCH, limit=1)
    seen = []

    def script(call, prompt):
        text = _decode(tok, prompt)
        seen.append(text)
        if _mta_or_ra(text) == "mta":
            return ("Check which letter each response picks." if call == 0 else FINISH_MARKER), "stop"
        return ("Response A is right. [[A]]" if call == 1 else "Both pick a letter. [[B]]"), "stop"

    eng = ScriptedEngine(tok, script)
    cfg = RolloutConfig(mode="multi_turn", max_turns=3, task="judge", samples_per_question=1, max_tokens_per_turn=32)
    [ep] = rollout([problem], cfg, {"mta": eng, "ra": eng}, get_prompt_set("rema-judge-multi"))
    assert ep.question == JUDGE_QUESTION.format(
        prompt=problem.prompt, response_a=problem.response_a, response_b=problem.response_b
    )
    assert "[Response B]" in seen[0] and problem.response_b.splitlines()[0] in seen[0]
    assert ep.end_code == "finished" and ep.n_rounds == 2
    assert JUDGE_FINAL_INSTRUCTION in seen[-1] and JUDGE_FINAL_INSTRUCTION not in seen[1]  # asked for the verdict
    score_episodes([ep], load_config(None).reward, task="judge", mode="multi_turn")
    assert ep.reward == {"mta": 0.0, "ra": 0.0} and ep.meta["extracted"] == "B"  # the LAST verdict counts
    m = episode_metrics([ep])
    assert m["judge/verdict_found"] == 1.0 and m["judge/verdict_A"] == 0.0 and m["acc/family_mmlu-pro"] == 0.0


# --- rema eval --------------------------------------------------------------------------------------------


def _judge_engine(tok, *, biased: bool):
    """MTA: a plan. RA: always A when biased; else the position of the response that begins with one of
    ``script.good`` (the test lists the beginnings of the responses this judge prefers)."""

    def script(call, prompt):
        text = _decode(tok, prompt)
        if _mta_or_ra(text) == "mta":
            return "Check each response's final answer.", "stop"
        if biased:
            return "A looks fine. [[A]]", "stop"
        a = text.rsplit("[Response A]\n", 1)[1].split("\n\n[Response B]")[0]
        return ("[[A]]" if any(a.startswith(good) for good in script.good) else "[[B]]"), "stop"

    script.good = []
    return ScriptedEngine(tok, script), script


def test_judgebench_eval_reports_families_swap_consistency_and_position_bias(tiny, tmp_path):
    _, tok = tiny
    shutil.copy(JUDGEBENCH, tmp_path / "judgebench_gpt.jsonl")
    problems = load_problems(JUDGEBENCH)
    eng, script = _judge_engine(tok, biased=False)
    script.good = [(p.response_a if p.label == "A" else p.response_b)[:40] for p in problems]
    wrong = problems[5]  # the judge gets one livebench-math pair wrong in both orders
    script.good.remove((wrong.response_a if wrong.label == "A" else wrong.response_b)[:40])
    script.good.append((wrong.response_b if wrong.label == "A" else wrong.response_a)[:40])

    def cfg(out):
        return command_config(
            None,
            [
                "model.name=tiny-random",
                "rollout.mode=single_turn",
                "rollout.max_tokens_per_turn=16",
                "eval.benches=[judgebench]",
                f"data.data_dir={tmp_path}",
                f"eval.out={out}",
            ],
        )

    out, summary = run_benchmarks(cfg(tmp_path / "fair"), engines={"mta": eng, "ra": eng})
    b = summary["benchmarks"]["judgebench"]
    assert b["questions"] == 9 and b["acc"] == pytest.approx(8 / 9) and b["consistency"] == 1.0
    assert b["acc/family_mmlu-pro"] == 1.0 and b["acc/family_livebench-math"] == 0.5
    assert b["questions/family_mmlu-pro"] == 3 and b["consistency/family_livecodebench"] == 1.0
    assert b["verdict_A"] == 0.5  # each pair in both orders: an unbiased judge says A half the time
    rec = json.loads((out / "records" / "judgebench.jsonl").read_text().splitlines()[0])
    assert rec["subset"] == "mmlu-pro-law" and rec["family"] == "mmlu-pro"
    md = (out / "results.md").read_text()
    assert "Judge accuracy per family" in md and "| judgebench | livebench-math | 2 | 50.0 | 100.0 |" in md

    biased, _ = _judge_engine(tok, biased=True)
    _, summary = run_benchmarks(cfg(tmp_path / "biased"), engines={"mta": biased, "ra": biased})
    b = summary["benchmarks"]["judgebench"]  # always A: right on one order of each pair, never consistent
    assert b["acc"] == 0.5 and b["consistency"] == 0.0 and b["verdict_A"] == 1.0
    assert b["acc/family_livecodebench"] == 0.5 and b["consistency/family_mmlu-pro"] == 0.0


# --- the cold start ------------------------------------------------------------------------------------


def test_judge_dialogue_files_load_check_and_replay_as_rl_plays_them(tiny, tmp_path):
    _, tok = tiny
    good = {
        "prompt": "Name a prime above 10.",
        "response_a": "9",
        "response_b": "11",
        "answer": "B>A",
        "turns": [
            {"agent": "mta", "text": "Check whether each number is prime. [FINISH]"},
            {"agent": "ra", "text": "9 = 3 * 3 is not prime; 11 is. [[B]]"},
        ],
    }
    path = tmp_path / "judge_dialogues.jsonl"
    path.write_text(json.dumps(good) + "\n")
    [d] = load_dialogues(path, two_agents=True, multi_turn=True, max_turns=2)
    assert d.answer == "B" and d.meta["response_b"] == "11"
    assert d.question == JUDGE_QUESTION.format(prompt="Name a prime above 10.", response_a="9", response_b="11")
    cfg = RolloutConfig(mode="multi_turn", max_turns=2, task="judge")
    ep = replay(d, cfg, get_prompt_set("rema-judge-multi"), tok)
    assert ep.end_code == "finished" and ep.question == d.question
    assert "[Response A]\n9\n\n[Response B]\n11" in _decode(tok, ep.views["ra"].input_ids)

    for bad, message in [
        ({**good, "answer": "C"}, "answer is its label, 'A' or 'B'"),
        ({k: v for k, v in good.items() if k != "response_b"}, "missing or empty: response_b"),
    ]:
        path.write_text(json.dumps(bad) + "\n")
        with pytest.raises(DialogueError, match=f"judge_dialogues.jsonl:1: .*{message}"):
            load_dialogues(path, two_agents=True, multi_turn=True, max_turns=2)


def test_self_distilled_judge_dialogues_keep_right_verdicts_in_the_judge_format(tiny):
    _, tok = tiny
    problems = load_problems(JUDGEBENCH, limit=2)  # labels A, A

    def script(call, prompt):
        text = _decode(tok, prompt)
        if _mta_or_ra(text) == "mta":
            return "Compare the two final letters. Then say [[A]] if A wins.", "stop"
        return (
            "The first response reasons correctly. So [[A]]. I am sure."
            if call % 4 == 1
            else "The second one is better. [[B]]"
        ), "stop"

    eng = ScriptedEngine(tok, script)
    cfg = RolloutConfig(mode="multi_turn", max_turns=2, task="judge", samples_per_question=2, max_tokens_per_turn=48)
    episodes = rollout(problems, cfg, {"mta": eng, "ra": eng}, get_prompt_set("rema-judge-multi"))

    def grade(responses, golds):  # what sft.self_dialogues uses for rollout.task=judge
        from rema.rewards import judge_verdict

        return [judge_verdict(r, g)[0] == 1.0 for r, g in zip(responses, golds)]

    dialogues, stats = dialogues_from_episodes(
        episodes, grade, two_agents=True, multi_turn=True, max_turns=2, max_per_question=1, task="judge"
    )
    assert stats["with_correct_answer"] >= 1 and len(dialogues) == stats["dialogues"] >= 1
    for d in dialogues:
        # the plan is cut before its verdict; the RA's message at its first sentence with the right verdict
        assert d.turns == [
            ("mta", "Compare the two final letters."),
            ("ra", "The first response reasons correctly. So [[A]]."),
            ("mta", COLD_START_JUDGE_FINISH),
            ("ra", COLD_START_VERDICT.format(answer="A")),
        ]
        assert d.question.startswith("Which response answers the prompt better?")


def _tiny_judge_cfg(tmp_path, *overrides):
    train = f"{REWARDBENCH}:split=train:heldout=8:seed=0"
    return load_config(
        None,
        [
            "model.name=tiny-random",
            "rollout.task=judge",
            "rollout.mode=multi_turn",
            "rollout.max_turns=2",
            "rollout.max_tokens_per_turn=12",
            "rollout.samples_per_question=4",
            "train.questions_per_step=2",
            "train.steps=2",
            "train.lr=1e-3",
            f"data.train={train}",
            f"data.eval={train.replace('=train', '=heldout')}",
            "data.eval_limit=4",
            "train.eval_every=2",
            f"log.run_dir={tmp_path / 'run'}",
            "log.progress=false",
            "log.tensorboard=false",
            "train.autocast=off",
            "train.save_every=100",
            *overrides,
        ],
    )


def _verdict_script(tok):
    """MTA: one instruction, then [FINISH]. RA: verdicts A, B, A, B, ... so each question's group has both
    rewards (GRPO advantages are not all zero) and the update has something to learn from."""
    turn = itertools.count()

    def script(call, prompt):
        text = _decode(tok, prompt)
        if _mta_or_ra(text) == "mta":
            return f"Check the facts. {FINISH_MARKER}", "stop"
        return ("[[A]]" if next(turn) % 2 == 0 else "[[B]]"), "stop"

    return script


def test_judge_rl_trains_the_tiny_model_and_evaluates_the_held_out_split(tmp_path):
    """Judge RL end to end on the real trainer and the tiny model: rollouts with the judge prompts (scripted
    verdicts), judge rewards, a real update (finite loss, weights move), the held-out side of the split and
    JudgeBench rows evaluated with judge metrics, the split's ids in the run folder."""
    from rema.train import Trainer

    held_out = f"{REWARDBENCH}:split=heldout:heldout=8:seed=0"
    cfg = _tiny_judge_cfg(tmp_path, f"data.eval=[{held_out}, {JUDGEBENCH}]")
    tr = Trainer(cfg, engine_factory=lambda model, tok, seed: ScriptedEngine(tok, _verdict_script(tok)))
    try:
        before = [p.detach().clone() for p in tr.policies[0].model.parameters()]
        assert tr.prompts.name == "rema-judge-multi" and tr.train_problems[0].is_judge
        tr.fit()
        moved = any(not torch.equal(a, b) for a, b in zip(before, tr.policies[0].model.parameters()))
    finally:
        tr.close()
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    for r in records[1:]:
        assert math.isfinite(r["loss/policy"]) and r["stats/optimizer_steps"] == 1
        assert r["train/episodes"] == 8 and r["train/end/finished"] == 1.0  # [FINISH] ends every episode
        assert r["train/reward/ra"] == 0.5 and r["train/judge/verdict_found"] == 1.0
    assert moved
    for r in (records[0], records[2]):  # held-out pairs and JudgeBench, at the start and after the last step
        for name in ("rewardbench_sample", "judgebench_sample"):
            assert r[f"eval/{name}/episodes"] == 4 and r[f"eval/{name}/judge/verdict_found"] == 1.0
            assert f"eval/{name}/judge/verdict_A" in r
        assert r["eval/rewardbench_sample/acc/family_chat"] >= 0 and "eval/judgebench_sample/acc/family_mmlu-pro" in r
        assert "eval/avg/acc" in r
    split = json.loads((tmp_path / "run" / "data_split.json").read_text())
    held = split["eval/rewardbench_sample"]
    assert split["train"]["n"] == 16 and held["n"] == 4 and split["eval/judgebench_sample"]["n"] == 4
    assert not set(split["train"]["ids"]) & set(held["ids"])
    assert held["spec"] == held_out and held["ids"] == [p.id for p in resolve_dataset(held_out, limit=4)]


# --- rema chat --task judge ---------------------------------------------------------------------------------


def test_chat_task_judge_plays_and_scores_one_pair(tmp_path, capsys):
    from rema.cli import main

    (tmp_path / "b.txt").write_text("11 is prime: its only divisors are 1 and 11.\n")
    argv = [
        "chat",
        "Name a prime above 10.",
        "--task",
        "judge",
        "--response-a",
        "9",
        "--response-b",
        f"@{tmp_path / 'b.txt'}",
        "--model",
        "tiny-random",
        "--max-turns",
        "1",
        "--max-tokens",
        "6",
        "--json",
    ]
    assert main([*argv, "--answer", "B>A"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["method"] == "rema-judge-multi" and record["answer"] == "B"
    assert record["question"] == JUDGE_QUESTION.format(
        prompt="Name a prime above 10.", response_a="9", response_b="11 is prime: its only divisors are 1 and 11."
    )
    assert set(record["reward_parts"]["ra"]) >= {"correct", "verdict_found"}  # scored as training scores judge

    judge = ["--task", "judge", "--response-a", "x"]
    for bad, message in [
        (["--task", "judge", "--response-b", "x"], "compares two responses .* give --response-a"),
        ([*judge, "--response-b", "@/no/such"], "--response-b @/no/such: no such file"),
        ([*judge, "--response-b", "y", "--answer", "C"], "the better response, A or B"),
        (["--response-a", "x"], "add --task judge"),
    ]:
        assert main(["chat", "q", "--model", "tiny-random", *bad]) == 2, bad
        assert re.search(message, capsys.readouterr().err), bad


def test_sft_self_on_the_judge_task_distils_the_right_verdicts(tmp_path):
    """``sft.data=self`` under ``rollout.task=judge`` through the trainer's cold start: the judge grader keeps
    the episodes whose verdict is right, and the model is fine-tuned on them."""
    from rema.train import Trainer

    cfg = _tiny_judge_cfg(
        tmp_path,
        "sft.cold_start=true",
        "sft.data=self",
        "sft.questions=4",
        "sft.samples=2",
        "sft.epochs=1",
        "sft.batch_dialogues=2",
        "data.eval=null",
        "train.eval_every=0",
    )
    tr = Trainer(cfg, engine_factory=lambda model, tok, seed: ScriptedEngine(tok, _verdict_script(tok)))
    try:
        metrics = tr.cold_start()
    finally:
        tr.close()
    dialogues = [json.loads(x) for x in (tmp_path / "run" / "cold_start_dialogues.jsonl").read_text().splitlines()]
    # 4 pairs x 2 samples, verdicts A then B: one of each pair's two samples is right
    assert metrics["sft/data/episodes"] == 8 and metrics["sft/data/with_correct_answer"] == 4
    assert len(dialogues) == metrics["sft/data/dialogues"] == 4 and metrics["sft/steps"] == 2
    for d in dialogues:
        assert [t["text"] for t in d["turns"]] == [
            "Check the facts.",
            f"[[{d['answer']}]]",
            COLD_START_JUDGE_FINISH,
            COLD_START_VERDICT.format(answer=d["answer"]),
        ]
