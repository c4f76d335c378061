"""Action-set mode as the paper reads it (Fig. 4): what the MTA chose, the difficulty behind each choice, and the
optional penalty for a choice that is not valid JSON."""

from __future__ import annotations

import pytest
from conftest import ScriptedEngine, problem

from rema.config import Config, ConfigError, RewardConfig, RolloutConfig, load_config
from rema.rollout.episode import AgentView, Episode, Turn
from rema.scoring import episode_metrics, run_eval, score_episodes, selected_terms


def _episode(k: int, action: str | None, level: int | None, *, ok: bool | None = None) -> Episode:
    """A scored single-turn action-set episode: the MTA's choice (None = invalid JSON), then the RA's answer."""
    ok = (action is not None) if ok is None else ok
    ep = Episode(
        episode_id=k,
        problem_id=f"p{k}",
        question=f"What is {k} + 1?",
        answer=str(k + 1),
        sample_index=0,
        method="rema-actions",
        end_code="finished",
        meta={"level": level, "correct": k % 2 == 0},
    )
    text = f'{{"action": "{action}", "content": "x"}}' if action else "the answer is 5"
    ep.turns = [
        Turn("mta", 0, text, [1], [-0.1], "stop", 10, action=action, format_ok=ok),
        Turn("ra", 0, f"\\boxed{{{k + 1}}}", [2], [-0.1], "stop", 20),
    ]
    ep.views = {"mta": AgentView("mta"), "ra": AgentView("ra")}
    return ep


EPISODES = [
    _episode(0, "EMPTY", 1),
    _episode(1, "DECOMPOSE", 1),
    _episode(2, "DECOMPOSE", 3),
    _episode(3, "DECOMPOSE", 3),
    _episode(4, "REWRITE", 2),
    _episode(5, None, 3),  # invalid JSON
    _episode(6, "EMPTY", None),  # a question without a level: counted in P(A) only
]


def test_action_statistics_by_hand():
    m = episode_metrics(EPISODES)
    # P(A) over the 7 choices
    assert m["actions/EMPTY"] == pytest.approx(2 / 7)
    assert m["actions/DECOMPOSE"] == pytest.approx(3 / 7)
    assert m["actions/REWRITE"] == pytest.approx(1 / 7)
    assert m["actions/INVALID"] == pytest.approx(1 / 7)
    # P(A | level): level 1 = {EMPTY, DECOMPOSE}, level 2 = {REWRITE}, level 3 = {DECOMPOSE, DECOMPOSE, INVALID}
    assert m["actions/EMPTY/level_1"] == m["actions/DECOMPOSE/level_1"] == pytest.approx(1 / 2)
    assert m["actions/REWRITE/level_2"] == 1.0
    assert m["actions/DECOMPOSE/level_3"] == pytest.approx(2 / 3)
    assert m["actions/INVALID/level_3"] == pytest.approx(1 / 3)
    # E[level | A] and P(level | A): DECOMPOSE was chosen at levels 1, 3, 3
    assert m["action_level/DECOMPOSE/mean"] == pytest.approx(7 / 3)
    assert m["action_level/DECOMPOSE/level_1"] == pytest.approx(1 / 3)
    assert m["action_level/DECOMPOSE/level_3"] == pytest.approx(2 / 3)
    assert m["action_level/EMPTY/mean"] == 1.0 and m["action_level/EMPTY/level_1"] == 1.0  # the unleveled one is out
    assert m["action_level/REWRITE/mean"] == 2.0 and m["action_level/INVALID/mean"] == 3.0
    keys = {k for k in m if k.startswith(("actions/", "action_level/"))}
    assert keys == {
        "actions/EMPTY",
        "actions/DECOMPOSE",
        "actions/REWRITE",
        "actions/INVALID",
        "actions/EMPTY/level_1",
        "actions/DECOMPOSE/level_1",
        "actions/REWRITE/level_2",
        "actions/DECOMPOSE/level_3",
        "actions/INVALID/level_3",
        "action_level/EMPTY/mean",
        "action_level/EMPTY/level_1",
        "action_level/DECOMPOSE/mean",
        "action_level/DECOMPOSE/level_1",
        "action_level/DECOMPOSE/level_3",
        "action_level/REWRITE/mean",
        "action_level/REWRITE/level_2",
        "action_level/INVALID/mean",
        "action_level/INVALID/level_3",
    }


def test_no_action_keys_outside_action_set_mode():
    plain = [_episode(0, None, 2, ok=None)]
    plain[0].turns[0].format_ok = None  # a free-text plan: no choice was asked for
    assert not [k for k in episode_metrics(plain) if k.startswith(("actions/", "action_level/"))]


def test_action_format_penalty_off_and_on():
    eps = [_episode(1, "DECOMPOSE", 1), _episode(2, None, 2)]
    score_episodes(eps, RewardConfig(), mode="single_turn", correctness_fn=lambda ep: 1.0)
    assert [ep.reward for ep in eps] == [{"mta": 1.0, "ra": 1.0}] * 2  # off: an invalid choice costs nothing
    assert "action_invalid" not in eps[1].reward_parts["mta"]

    score_episodes(eps, RewardConfig(action_format_penalty=0.5), mode="single_turn", correctness_fn=lambda ep: 1.0)
    assert eps[0].reward == {"mta": 1.0, "ra": 1.0}
    assert eps[1].reward == {"mta": 0.5, "ra": 1.0}  # the MTA alone pays
    assert eps[1].reward_parts["mta"]["action_invalid"] == 1.0 and eps[1].reward_parts["mta"]["action_format"] == -0.5
    assert eps[0].reward_parts["mta"]["action_invalid"] == 0.0 and "action_invalid" not in eps[0].reward_parts["ra"]
    m = episode_metrics(eps)
    assert m["reward/mta"] == 0.75 and m["reward_parts/mta/action_invalid"] == 0.5
    # with the single-turn format terms both apply
    names = [
        name for name, _ in selected_terms(RewardConfig(format_terms=True, action_format_penalty=0.5), "single_turn")
    ]
    assert names == ["format", "action_format"]


def test_action_format_penalty_through_the_rollout(tiny):
    """The protocol marks the unparsable choice; scoring turns it into the MTA's penalty."""
    _, tok = tiny

    def script(call, prompt):
        text = tok.decode(prompt)
        if call % 2 == 0:  # MTA turns of both episodes
            return ('{"action": "DECOMPOSE", "content": "add"}' if "2 + 3" in text else "the answer is 8"), "stop"
        return "\\boxed{5}", "stop"

    eng = ScriptedEngine(tok, script)
    cfg = Config(
        rollout=RolloutConfig(mode="single_turn", action_set=True, samples_per_question=1),
        reward=RewardConfig(action_format_penalty=0.25),
    )
    problems = [problem("a", level=1), problem("b", "What is 4 + 4?", "8", level=3)]
    metrics, (good, bad) = run_eval(problems, {"mta": eng, "ra": eng}, cfg, correctness_fn=lambda ep: 1.0)
    assert (good.turns[0].format_ok, bad.turns[0].format_ok) == (True, False)
    assert (good.reward["mta"], bad.reward["mta"], bad.reward["ra"]) == (1.0, 0.75, 1.0)
    assert metrics["actions/DECOMPOSE/level_1"] == 1.0 and metrics["action_level/INVALID/mean"] == 3.0


def test_action_format_penalty_config_checks():
    with pytest.raises(ConfigError, match="rollout.action_set=true"):
        load_config(overrides=["reward.action_format_penalty=0.5"])
    with pytest.raises(ConfigError, match=">= 0"):
        load_config(
            overrides=["rollout.mode=single_turn", "rollout.action_set=true", "reward.action_format_penalty=-1"]
        )
    cfg = load_config(
        overrides=["rollout.mode=single_turn", "rollout.action_set=true", "reward.action_format_penalty=0.5"]
    )
    assert cfg.reward.action_format_penalty == 0.5 and Config().reward.action_format_penalty == 0.0
