"""The cold start: dialogue files, self-distilled dialogues, replay through the protocol, the SFT loss and step."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ScriptedEngine, problem

from rema.algos import sft_nll
from rema.cli import main
from rema.config import ConfigError, RolloutConfig, load_config
from rema.data.dialogues import (
    Dialogue,
    DialogueError,
    clean_plan,
    cold_start_dialogue,
    dialogues_from_episodes,
    load_dialogues,
    sentence_prefixes,
)
from rema.prompts import (
    COLD_START_ANSWER,
    COLD_START_FINISH,
    FINISH_MARKER,
    PromptSet,
    get_prompt_set,
    ra_first_message,
)
from rema.rollout import HFEngine, rollout
from rema.rollout.scripted import end_of_turn_id, replay
from rema.train import Trainer
from rema.train.sft import dialogue_rows, sft_train

MULTI = RolloutConfig(mode="multi_turn", max_turns=2, samples_per_question=1, max_tokens_per_turn=64)
SHORT = PromptSet("test", "plan", "solve")


def test_sentence_prefixes_drop_an_unfinished_last_sentence():
    text = "Add 3 and 4. That gives 7.\nDone and"
    assert sentence_prefixes(text, complete=False) == ["Add 3 and 4.", "Add 3 and 4. That gives 7."]
    assert sentence_prefixes(text, complete=True)[-1] == text
    assert sentence_prefixes("3.5 is a number", complete=True) == ["3.5 is a number"]  # no split inside 3.5


def test_clean_plan_keeps_the_sentences_that_compute_nothing():
    q = "What is 6 + 8?"
    assert (
        clean_plan("We need the sum of 6 and 8. Adding them gives 14. So", q, "14", complete=False)
        == "We need the sum of 6 and 8."
    )
    assert clean_plan("6 + 8 = 14.", q, "14", complete=True) == ""  # a number not in the question
    assert clean_plan("Add 6 and 8. The answer is 6.", q, "14", complete=True) == "Add 6 and 8."  # a statement
    assert clean_plan("Add 6 and 8 \\boxed{}.", q, "14", complete=True) == ""


def _episode(mta, ra, *, mode="multi_turn", prompts="rema-multi", tiny=None, max_turns=2):
    """One episode whose MTA and RA say the given (text, finish_reason) messages in turn."""
    _, tok = tiny
    calls = iter([m for pair in zip(mta, ra) for m in pair])
    eng = ScriptedEngine(tok, lambda call, prompt: next(calls))
    cfg = RolloutConfig(mode=mode, max_turns=max_turns, samples_per_question=1, max_tokens_per_turn=64)
    [ep] = rollout(
        [problem("q1", "What is 6 + 8?", "14", level=1)], cfg, {"mta": eng, "ra": eng}, get_prompt_set(prompts)
    )
    return ep


def test_cold_start_dialogue_multi_turn(tiny):
    ep = _episode(
        [("We need the sum of 6 and 8. Adding gives 14. Then", "length"), ("ok", "stop")],
        [("6 + 8 = 14. Then I add 2 more and", "length"), ("14", "stop")],
        tiny=tiny,
    )
    d = cold_start_dialogue(ep, 0, "6 + 8 = 14.", two_agents=True, multi_turn=True, max_turns=2)
    assert d.turns == [
        ("mta", "We need the sum of 6 and 8."),
        ("ra", "6 + 8 = 14."),
        ("mta", COLD_START_FINISH),
        ("ra", COLD_START_ANSWER.format(answer="14")),
    ]
    assert d.meta["level"] == 1 and d.answer == "14"
    # the answer in the second round would need a third round: more than max_turns allows
    assert cold_start_dialogue(ep, 1, "14", two_agents=True, multi_turn=True, max_turns=2) is None
    # a plan that computes from its first sentence gives no dialogue
    bad = _episode([("6 + 8 = 14.", "stop"), ("ok", "stop")], [("14.", "stop"), ("14", "stop")], tiny=tiny)
    assert cold_start_dialogue(bad, 0, "14.", two_agents=True, multi_turn=True, max_turns=2) is None


def test_cold_start_dialogue_single_round_appends_the_box(tiny):
    ep = _episode(
        [("Add the numbers 6 and 8.", "stop")],
        [("6 + 8 = 14.", "stop")],
        mode="single_turn",
        prompts="rema-single",
        tiny=tiny,
        max_turns=1,
    )
    d = cold_start_dialogue(ep, 0, "6 + 8 = 14.", two_agents=True, multi_turn=False, max_turns=1)
    assert d.turns == [("mta", "Add the numbers 6 and 8."), ("ra", "6 + 8 = 14.\n\nThe final answer is $\\boxed{14}$.")]
    boxed = cold_start_dialogue(ep, 0, "so \\boxed{14}", two_agents=True, multi_turn=False, max_turns=1)
    assert boxed.turns[-1] == ("ra", "so \\boxed{14}")  # already boxed: left as written


def test_dialogues_from_episodes_picks_the_shortest_correct_prefix_and_caps_per_question(tiny):
    eps = [
        _episode([("Add 6 and 8.", "stop"), ("ok", "stop")], [(ra, "stop"), ("x", "stop")], tiny=tiny)
        for ra in ("First 6. Then 6 + 8 = 14. More text.", "I get 13.", "So 14.", "So 14.", "Hmm 14.")
    ]
    graded = []

    def grade(responses, golds):
        graded.append(list(responses))
        return [r.rstrip(".").endswith("14") for r in responses]

    dialogues, stats = dialogues_from_episodes(
        eps, grade, two_agents=True, multi_turn=True, max_turns=2, max_per_question=2
    )
    assert len(graded) == 1  # one batched call
    assert [d.turns[1][1] for d in dialogues] == ["First 6. Then 6 + 8 = 14.", "So 14."]
    assert stats == {
        "episodes": 5.0,
        "with_correct_answer": 4.0,
        "dialogues": 2.0,
        "dropped_unclean": 0.0,
        "dropped_duplicate_or_cap": 2.0,
        "questions": 1.0,
    }


def _write(tmp_path, rows) -> str:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


GOOD = {
    "question": "What is 3 + 4?",
    "answer": "7",
    "turns": [
        {"agent": "mta", "text": "Add them."},
        {"agent": "ra", "text": "3 + 4 = 7."},
        {"agent": "mta", "text": COLD_START_FINISH},
        {"agent": "ra", "text": "The final answer is $\\boxed{7}$."},
    ],
}


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "not valid JSON"),
        ({"question": "q"}, "expected an object with 'question'"),
        ({**GOOD, "turns": GOOD["turns"][1:]}, "alternate mta, ra"),
        (
            {**GOOD, "turns": [{"agent": "mta", "text": f"go {FINISH_MARKER}"}] + GOOD["turns"][1:]},
            "before the last MTA",
        ),
        ({**GOOD, "turns": GOOD["turns"] + GOOD["turns"]}, "exceed rollout.max_turns=2"),
        ({**GOOD, "turns": [{"agent": "critic", "text": "x"}]}, "agents must be"),
    ],
)
def test_load_dialogues_names_the_line_and_the_problem(tmp_path, bad, message):
    path = _write(tmp_path, [GOOD, bad])
    with pytest.raises(DialogueError, match=f"d.jsonl:2: .*{message}"):
        load_dialogues(path, two_agents=True, multi_turn=True, max_turns=2)
    assert len(load_dialogues(_write(tmp_path, [GOOD]), two_agents=True, multi_turn=True, max_turns=2)) == 1
    with pytest.raises(DialogueError, match="exactly one 'ra'"):
        load_dialogues(_write(tmp_path, [GOOD]), two_agents=False, multi_turn=False, max_turns=1)


def test_replay_builds_the_rows_an_rl_rollout_would_train_on(tiny):
    _, tok = tiny
    ps = get_prompt_set("rema-multi")
    d = Dialogue("What is 3 + 4?", "7", [(t["agent"], t["text"]) for t in GOOD["turns"]])
    ep = replay(d, MULTI, ps, tok)
    assert ep.end_code == "finished" and [t.text for t in ep.turns] == [t["text"] for t in GOOD["turns"]]
    ra_msgs = [
        {"role": "system", "content": ps.ra},
        {"role": "user", "content": ra_first_message("What is 3 + 4?", "Add them.")},
        {"role": "assistant", "content": "3 + 4 = 7."},
        {"role": "user", "content": "Your result is correct."},
        {"role": "assistant", "content": "The final answer is $\\boxed{7}$."},
    ]
    view = ep.views["ra"]
    assert tok.decode(view.input_ids) == tok.apply_chat_template(ra_msgs, tokenize=False)
    # trained: exactly the RA's own messages, each with the token that ends the turn
    end = end_of_turn_id(tok)
    trained = [i for i, m in zip(view.input_ids, view.mask) if m]
    expected = [
        i
        for text in ("3 + 4 = 7.", "The final answer is $\\boxed{7}$.")
        for i in tok(text, add_special_tokens=False)["input_ids"] + [end]
    ]
    assert trained == expected
    # RL rows of the same messages sampled by an engine are the same rows
    calls = iter([(t["text"], "stop") for t in GOOD["turns"]])
    eng = ScriptedEngine(tok, lambda call, prompt: next(calls))
    [sampled] = rollout([problem("q", "What is 3 + 4?", "7")], MULTI, {"mta": eng, "ra": eng}, ps)
    for agent in ("mta", "ra"):
        assert sampled.views[agent].input_ids == ep.views[agent].input_ids
        assert sampled.views[agent].mask == ep.views[agent].mask


def test_replay_refuses_a_dialogue_the_protocol_would_cut_short(tiny):
    _, tok = tiny
    early = Dialogue("q", "1", [("mta", f"a {FINISH_MARKER}"), ("ra", "b"), ("mta", "c"), ("ra", "d")])
    with pytest.raises(ValueError, match="left unplayed"):
        replay(early, MULTI, get_prompt_set("rema-multi"), tok)


def test_sft_nll_is_the_token_mean_negative_log_likelihood():
    logp = torch.tensor([[0.0, -1.0, -2.0], [0.0, -0.5, -9.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    assert torch.isclose(sft_nll(logp, mask), torch.tensor(3.5 / 3))
    assert torch.isclose(sft_nll(logp, mask, n_tokens=7), torch.tensor(3.5 / 7))  # a micro-batch's share
    assert sft_nll(logp, torch.zeros_like(mask)) == 0


def test_sft_teaches_the_tiny_model_a_dialogue_it_then_plays_greedily(tmp_path):
    from rema.models import load_model

    model, tok = load_model("tiny-random", seed=0)
    d = Dialogue("What is 3 + 4?", "7", [("mta", "Add."), ("ra", "7."), ("mta", "OK [FINISH]"), ("ra", "\\boxed{7}")])
    cfg = load_config(None, ["model.name=tiny-random", "rollout.max_turns=2", "rollout.max_tokens_per_turn=16"])
    rows = dialogue_rows([d], cfg, SHORT, tok, ("mta", "ra"))
    assert len(rows) == 2
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    result = sft_train(
        model,
        rows,
        opt,
        epochs=40,
        batch_dialogues=1,
        micro_batch_tokens=4096,
        pad_id=tok.pad_token_id,
        device=torch.device("cpu"),
    )
    # the loss falls from ~5.6 to below 0.05 on the machines this ran on first, to 0.08 on another CPU (its
    # kernels round differently); what matters is below: the model now plays the dialogue greedily
    assert result["sft/loss_first"] > 2 and result["sft/loss_last"] < 0.15
    model.eval()
    [ep] = rollout(
        [problem("q", d.question, "7")],
        cfg.rollout,
        {"mta": HFEngine(model, tok), "ra": HFEngine(model, tok)},
        SHORT,
        greedy=True,
        samples_per_question=1,
    )
    assert [(t.agent, t.text) for t in ep.turns] == d.turns and ep.end_code == "finished"


def _cfg(tmp_path, dialogues, *overrides):
    return load_config(
        None,
        [
            "model.name=tiny-random",
            "rollout.mode=multi_turn",
            "rollout.max_tokens_per_turn=12",
            "rollout.max_turns=2",
            "rollout.samples_per_question=2",
            "train.questions_per_step=2",
            "train.steps=2",
            "train.lr=1e-3",
            "data.train=synthetic:levels=1:n=20:seed=0:word=0",
            "data.eval=synthetic:levels=1:n=2:seed=1:word=0",
            "train.eval_every=2",
            f"log.run_dir={tmp_path / 'run'}",
            "log.progress=false",
            "log.tensorboard=false",
            "sft.cold_start=true",
            f"sft.data={dialogues}",
            "sft.epochs=2",
            "sft.batch_dialogues=1",
            *overrides,
        ],
    )


def test_train_with_a_cold_start_logs_base_sft_and_rl_and_resumes_after_it(tmp_path):
    path = _write(tmp_path, [GOOD, GOOD])
    tr = Trainer(_cfg(tmp_path, path), prompts=SHORT)
    try:
        assert tr.start()
    finally:
        tr.close()
    [rec] = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rec["step"] == 0 and rec["sft/steps"] == 4 and rec["sft/data/dialogues"] == 2
    assert "base_eval/acc" in rec and "eval/acc" in rec
    assert (tmp_path / "run" / "checkpoints" / "step_000000").is_dir()
    assert len((tmp_path / "run" / "cold_start_dialogues.jsonl").read_text().splitlines()) == 2
    # resuming from the step-0 checkpoint goes straight to RL: no second cold start, no second step-0 record
    resumed = Trainer(_cfg(tmp_path, path), tmp_path / "run", resume=True, prompts=SHORT)
    try:
        assert resumed.started
        resumed.fit()
    finally:
        resumed.close()
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]


def test_rema_sft_command_reports_a_bad_dialogue_file(tmp_path, capsys):
    path = _write(tmp_path, [GOOD, {"question": "q", "turns": [{"agent": "ra", "text": "x"}]}])
    code = main(
        [
            "sft",
            "model.name=tiny-random",
            "rollout.max_turns=2",
            f"sft.data={path}",
            "data.eval=null",
            "data.train=synthetic:levels=1:n=5:seed=0:word=0",
            f"log.run_dir={tmp_path / 'run'}",
            "log.tensorboard=false",
            "log.progress=false",
        ]
    )
    assert code == 2
    assert "d.jsonl:2: two-agent turns must alternate" in capsys.readouterr().err


def test_sft_config_is_validated():
    with pytest.raises(ConfigError, match="sft.epochs must be >= 1"):
        load_config(None, ["sft.epochs=0"])
    with pytest.raises(ConfigError, match="unknown config key 'sft.epoch'"):
        load_config(None, ["sft.epoch=2"])


def test_self_distilled_cold_start_keeps_only_correct_graded_dialogues(tmp_path):
    """``sft.data=self`` end to end with the real grader: a scripted model that answers every other question
    wrong; only the right answers become dialogues, cut to their first sentence, in the method's format."""
    import re

    def script(call, prompt_ids, tok):
        text = tok.decode(prompt_ids)
        a, b = map(int, re.findall(r"What is (\d+) \+ (\d+)\?", text)[-1])
        if "meta-thinker in a team" in text:  # the MTA's system prompt
            return f"We need the sum of {a} and {b}. It is {a + b}.", "stop"
        wrong = (a + b) % 2  # odd sums come out wrong
        return f"{a} + {b} = {a + b + wrong}. I am sure.", "stop"

    cfg = _cfg(
        tmp_path,
        "self",
        "sft.questions=6",
        "sft.samples=2",
        "sft.max_per_question=1",
        "data.eval=null",
        "train.eval_every=0",
        "rollout.max_tokens_per_turn=24",
    )
    tr = Trainer(cfg, engine_factory=lambda model, tok, seed: ScriptedEngine(tok, lambda c, p: script(c, p, tok)))
    try:
        metrics = tr.cold_start()
    finally:
        tr.close()
    dialogues = [json.loads(x) for x in (tmp_path / "run" / "cold_start_dialogues.jsonl").read_text().splitlines()]
    assert metrics["sft/data/episodes"] == 12 and metrics["sft/data/dialogues"] == len(dialogues) >= 1
    assert metrics["sft/data/with_correct_answer"] == 2 * len(dialogues)  # 2 samples, 1 kept per question
    assert metrics["sft/steps"] == 2 * len(dialogues)  # 2 epochs of batches of one dialogue
    for d in dialogues:
        a, b = map(int, re.findall(r"(\d+) \+ (\d+)", d["question"])[0])
        assert (a + b) % 2 == 0 and d["answer"] == str(a + b)
        assert [t["text"] for t in d["turns"]] == [
            f"We need the sum of {a} and {b}.",
            f"{a} + {b} = {a + b}.",
            COLD_START_FINISH,
            COLD_START_ANSWER.format(answer=a + b),
        ]
