"""The MTA/RA protocol: conversation views, end codes, token-in/token-out, action-set parsing."""

from __future__ import annotations

import pytest
from conftest import ScriptedEngine, assert_token_in_token_out, problem, record_prompts

from rema.config import RolloutConfig
from rema.prompts import FINISH_MARKER, get_prompt_set, ra_first_message
from rema.rollout import HFEngine, parse_action, rollout


def _alternating(mta_replies, ra_replies):
    """Script whose even calls are MTA turns and odd calls RA turns (one episode per call)."""

    def script(call, prompt):
        replies = mta_replies if call % 2 == 0 else ra_replies
        item = replies[min(call // 2, len(replies) - 1)]
        return item if isinstance(item, tuple) else (item, "stop")

    return script


def _render(tok, messages):
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)


def test_multi_turn_views_match_the_chat_template(tiny):
    _, tok = tiny
    eng = ScriptedEngine(tok, _alternating(["Plan: add.", f"Looks right. {FINISH_MARKER}"], ["2+3=5", "\\boxed{5}"]))
    ps = get_prompt_set("rema-multi")
    cfg = RolloutConfig(mode="multi_turn", max_turns=5, samples_per_question=1, max_tokens_per_turn=64)
    [ep] = rollout([problem()], cfg, {"mta": eng, "ra": eng}, ps)
    assert ep.end_code == "finished"
    assert [(t.agent, t.index) for t in ep.turns] == [("mta", 0), ("ra", 0), ("mta", 1), ("ra", 1)]
    assert ep.final_response == "\\boxed{5}"
    mta_msgs = [
        {"role": "system", "content": ps.mta},
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "Plan: add."},
        {"role": "user", "content": "2+3=5"},
        {"role": "assistant", "content": f"Looks right. {FINISH_MARKER}"},
    ]
    ra_msgs = [
        {"role": "system", "content": ps.ra},
        {"role": "user", "content": ra_first_message("What is 2 + 3?", "Plan: add.")},
        {"role": "assistant", "content": "2+3=5"},
        {"role": "user", "content": "Looks right."},  # finish marker stripped from the RA's view
        {"role": "assistant", "content": "\\boxed{5}"},
    ]
    assert tok.decode(ep.views["mta"].input_ids) == _render(tok, mta_msgs)
    assert tok.decode(ep.views["ra"].input_ids) == _render(tok, ra_msgs)
    assert FINISH_MARKER not in tok.decode(ep.views["ra"].input_ids)


def test_single_turn_and_single_agent_views(tiny):
    _, tok = tiny
    eng = ScriptedEngine(tok, _alternating(["1. add the numbers"], ["\\boxed{5}"]))
    cfg = RolloutConfig(mode="single_turn", samples_per_question=1, max_tokens_per_turn=64)
    [ep] = rollout([problem()], cfg, {"mta": eng, "ra": eng}, get_prompt_set("rema-single"))
    assert ep.end_code == "finished" and len(ep.turns) == 2
    assert "1. add the numbers" in tok.decode(ep.views["ra"].input_ids)

    solo = ScriptedEngine(tok, lambda call, prompt: ("so \\boxed{5}", "stop"))
    [ep] = rollout([problem()], cfg, {"ra": solo}, get_prompt_set("vrp"))
    assert ep.end_code == "finished" and list(ep.views) == ["ra"] and ep.turns[0].agent == "ra"


def test_end_code_max_turns(tiny):
    _, tok = tiny
    eng = ScriptedEngine(tok, _alternating(["keep going"], ["working"]))
    cfg = RolloutConfig(mode="multi_turn", max_turns=3, samples_per_question=2, max_tokens_per_turn=16)
    eps = rollout([problem()], cfg, {"mta": eng, "ra": eng}, get_prompt_set("rema-multi"))
    assert [ep.end_code for ep in eps] == ["max_turns", "max_turns"]
    assert all(ep.n_rounds == 3 for ep in eps)
    assert len(eng.calls) == 6 and all(len(c) == 2 for c in eng.calls)  # both episodes in every call


def test_end_code_context_exceeded_is_checked_before_generating(tiny):
    _, tok = tiny
    eng = ScriptedEngine(tok, _alternating(["keep going " * 5], ["working " * 5]))
    first = len(
        rollout(
            [problem()],
            RolloutConfig(mode="multi_turn", max_turns=1, samples_per_question=1),
            {"mta": eng, "ra": eng},
            get_prompt_set("rema-multi"),
        )[0]
        .views["mta"]
        .input_ids
    )
    cfg = RolloutConfig(
        mode="multi_turn", max_turns=30, samples_per_question=1, max_tokens_per_turn=64, max_context_tokens=first + 400
    )
    eng.calls.clear()
    [ep] = rollout([problem()], cfg, {"mta": eng, "ra": eng}, get_prompt_set("rema-multi"))
    assert ep.end_code == "context_exceeded"
    for call in eng.calls:  # no prompt was ever sent that could overflow the budget
        assert all(len(p) + cfg.max_tokens_per_turn <= cfg.max_context_tokens for p in call)


def test_end_code_truncated_only_when_configured(tiny):
    _, tok = tiny
    script = _alternating([("a long plan that got cut", "length"), f"ok {FINISH_MARKER}"], ["5", "\\boxed{5}"])
    stop = RolloutConfig(mode="multi_turn", max_turns=4, samples_per_question=1, stop_on_truncation=True)
    [ep] = rollout(
        [problem()], stop, {"mta": (e := ScriptedEngine(tok, script)), "ra": e}, get_prompt_set("rema-multi")
    )
    assert ep.end_code == "truncated" and len(ep.turns) == 1
    go_on = RolloutConfig(mode="multi_turn", max_turns=4, samples_per_question=1, stop_on_truncation=False)
    [ep] = rollout(
        [problem()], go_on, {"mta": (e := ScriptedEngine(tok, script)), "ra": e}, get_prompt_set("rema-multi")
    )
    assert ep.end_code == "finished" and ep.turns[0].truncated
    # a cut turn is closed with template glue that is not trained
    view = ep.views["mta"]
    n0 = len(ep.turns[0].token_ids)
    start = view.turn_ids.index(0)
    assert view.mask[start : start + n0] == [1] * n0 and view.mask[start + n0] == 0
    assert tok.eos_token_id == view.input_ids[start + n0]


@pytest.mark.parametrize("mode", ["single_turn", "multi_turn"])
def test_token_in_token_out_with_the_real_engine(tiny, mode):
    """Training rows hold exactly the sampled ids, and each turn's prompt is a prefix of the final row."""
    model, tok = tiny
    engine = HFEngine(model, tok, seed=3)
    seen = record_prompts(engine)
    cfg = RolloutConfig(mode=mode, max_turns=3, samples_per_question=3, max_tokens_per_turn=12, max_context_tokens=2048)
    eps = rollout(
        [problem(), problem("p1", "What is 4 * 2?", "8")],
        cfg,
        {"mta": engine, "ra": engine},
        get_prompt_set("rema-multi" if mode == "multi_turn" else "rema-single"),
    )
    assert len(eps) == 6 and len({ep.episode_id for ep in eps}) == 6
    assert_token_in_token_out(eps, seen)


def test_action_set_parsing(tiny):
    assert parse_action('{"action": "DECOMPOSE", "content": "1. a\\n2. b"}') == ("DECOMPOSE", "1. a\n2. b", True)
    assert parse_action('Sure! {"action": "rewrite", "content": "x"} done') == ("REWRITE", "x", True)
    assert parse_action('{"action": "EMPTY", "content": ""}') == ("EMPTY", "", True)
    assert parse_action("no json here") == (None, "", False)
    assert parse_action('{"action": "SOLVE", "content": "5"}') == (None, "", False)
    assert parse_action('{"action": "DECOMPOSE", "content": ') == (None, "", False)
    _, tok = tiny
    eng = ScriptedEngine(tok, _alternating(['{"action": "DECOMPOSE", "content": "add 2 and 3"}'], ["\\boxed{5}"]))
    cfg = RolloutConfig(mode="single_turn", action_set=True, samples_per_question=1)
    [ep] = rollout([problem()], cfg, {"mta": eng, "ra": eng}, get_prompt_set("rema-actions"))
    assert ep.turns[0].action == "DECOMPOSE" and ep.turns[0].format_ok is True
    assert "add 2 and 3" in tok.decode(ep.views["ra"].input_ids)
    bad = ScriptedEngine(tok, _alternating(["I think the answer is 5"], ["\\boxed{5}"]))
    [ep] = rollout([problem()], cfg, {"mta": bad, "ra": bad}, get_prompt_set("rema-actions"))
    assert ep.turns[0].action is None and ep.turns[0].format_ok is False
    assert "no guidance" in tok.decode(ep.views["ra"].input_ids)


def test_episode_record_is_json_able(tiny):
    import json

    _, tok = tiny
    eng = ScriptedEngine(tok, _alternating([f"go {FINISH_MARKER}"], ["\\boxed{5}"]))
    [ep] = rollout(
        [problem(level=2)], RolloutConfig(samples_per_question=1), {"mta": eng, "ra": eng}, get_prompt_set("rema-multi")
    )
    d = json.loads(json.dumps(ep.to_dict()))
    assert d["end_code"] == "finished" and d["turns"][0]["n_tokens"] > 0 and d["meta"]["level"] == 2
    assert "views" in json.loads(json.dumps(ep.to_dict(with_tokens=True)))
