"""Nothing wrong gets past the front door: every setting is checked when the config loads, every input before a
model loads or a run directory exists, each failure one line naming the key or file:line (exit code 2, no
traceback); ``--dry-run`` checks and plans without writing; budgets hold; the LR schedule counts each agent's
own updates. The property tests throw random overrides and malformed rows at the loaders."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from rema.algos import ADVANTAGE_ESTIMATORS, ESTIMATOR_INFO, register_advantage_estimator
from rema.algos.advantages import grpo_advantages
from rema.algos.schedule import lr_lambda, own_steps, updates_agent
from rema.cli import main
from rema.config import Config, ConfigError, check_training, load_config
from rema.config.checks import RANGES, WARN_ONLY, _warned
from rema.config.choices import choice_table

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")
TINY = [
    "model.name=tiny-random",
    "rollout.max_turns=2",
    "rollout.max_tokens_per_turn=8",
    "rollout.max_context_tokens=1024",
    "rollout.samples_per_question=2",
    "train.questions_per_step=2",
    "train.steps=2",
    "log.progress=false",
    "log.tensorboard=false",
    "data.train=synthetic:levels=1:n=8:seed=0:word=0",
    "data.eval=null",
    "train.eval_every=0",
]

# --- every rejected setting: at load, for every command --------------------------------------------------

REJECTED = [  # (overrides, the key the one-line error must name, a phrase of the reason)
    (["train.grad_clip=-1"], "train.grad_clip", "reverses every gradient"),
    (["train.grad_clip=0"], "train.grad_clip", "must be > 0"),
    (["algo.kl_coef=-0.5"], "algo.kl_coef", "must be >= 0"),
    (["algo.entropy_coef=-0.01"], "algo.entropy_coef", "must be >= 0"),
    (["algo.clip_eps=1.5"], "algo.clip_eps", "in (0, 1)"),
    (["algo.dual_clip=0.5"], "algo.dual_clip", "> 1"),
    (["rollout.temperature=-1"], "rollout.temperature", ">= 0"),
    (["rollout.top_p=1.5"], "rollout.top_p", "in (0, 1]"),
    (["algo.kl_in_reward=true", "algo.kl_coef=0.1"], "algo.kl_in_reward", "does not take"),
    (["algo.kl_in_reward=true", "algo.kl_coef=0.1", "algo.advantage=rloo"], "algo.kl_in_reward", "does not take"),
    (["algo.kl_in_reward=true", "algo.kl_coef=0.1", "algo.advantage=dr_grpo"], "algo.kl_in_reward", "does not take"),
    (["algo.gamma=0.9"], "algo.gamma", "algo.advantage=reinforce_pp"),
    (["algo.gamma=0.9", "algo.advantage=rloo"], "algo.gamma", "scores whole episodes"),
    (["algo.kl_in_reward=true", "algo.advantage=reinforce_pp"], "algo.kl_coef", "adds nothing"),
    (["model.ra_name=other"], "model.ra_name", "train.shared_weights=false"),
    (["algo.advantage=ppo"], "algo.advantage", "choose one of"),
    (["algo.agg=mean"], "algo.agg", "choose one of"),
    (["algo.ratio_mean=harmonic"], "algo.ratio_mean", "choose one of"),
    (["rollout.engine=tgi"], "rollout.engine", "choose one of"),
    (["model.dtype=int8"], "model.dtype", "choose one of"),
    (["rollout.vllm_dtype=fp8"], "rollout.vllm_dtype", "choose one of"),
    (["train.lr_schedule=linear"], "train.lr_schedule", "choose one of"),
    (["sft.over_limit=cut"], "sft.over_limit", "choose one of"),
    (["rollout.max_turns=0"], "rollout.max_turns", ">= 1"),
    (["train.lr=0"], "train.lr", "> 0"),
    (["train.lr=.inf"], "train.lr", "> 0"),
    (["algo.clip_eps=.nan"], "algo.clip_eps", "got nan"),
    (["algo.gamma=0", "algo.advantage=reinforce_pp"], "algo.gamma", "in (0, 1]"),
    (["algo.adv_eps=0"], "algo.adv_eps", "> 0"),
    (["algo.log_ratio_clamp=-3"], "algo.log_ratio_clamp", "> 0"),
    (["model.lora_dropout=1"], "model.lora_dropout", "in [0, 1)"),
    (["rollout.vllm_gpu_memory_utilization=0"], "rollout.vllm_gpu_memory_utilization", "in (0, 1]"),
    (["train.weight_decay=-0.1"], "train.weight_decay", ">= 0"),
    (["train.seed=-1"], "train.seed", ">= 0"),
    (["data.levels=[0]"], "data.levels", ">= 1"),
    (["data.levels=[]"], "data.levels", "data.levels=null"),
    (["serve.port=70000"], "serve.port", "in [0, 65535]"),
    (
        ["train.mini_batches=9", "train.questions_per_step=2", "rollout.samples_per_question=4"],
        "train.mini_batches",
        "at most 8",
    ),
    (["rollout.method=vrp", "rollout.action_set=true"], "rollout.action_set", "rollout.method=rema"),
    (["sft.data= "], "sft.data", "is empty"),
    (["algo.clip_eps=a: b"], "algo.clip_eps", "expected float"),
    (["eval.benches={a: 1}"], "eval.benches", "expected a list"),
    (["reward.extra_terms={format: .nan}"], "reward.extra_terms", "finite"),
]


@pytest.mark.parametrize("overrides, key, reason", REJECTED, ids=[" ".join(r[0]) for r in REJECTED])
def test_every_rejected_setting_fails_at_load_naming_the_key(overrides, key, reason):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    message = str(err.value)
    assert key in message and reason in message, message
    assert "\n" not in message


NO_EFFECT = [  # refused by rema train / rema sft, warned once by the other commands
    (["rollout.mode=multi_turn", "reward.format_terms=true"], "reward.format_terms"),
    (["rollout.method=vrp", "rollout.mode=single_turn", "reward.plan_leak_penalty=0.5"], "reward.plan_leak_penalty"),
    (
        ["rollout.mode=single_turn", "reward.format_terms=true", "reward.plan_leak_penalty=0.5"],
        "reward.plan_leak_penalty",
    ),
    (["reward.format_penalty=2"], "reward.format_penalty"),
    (["model.lora_dropout=0.1"], "model.lora_alpha / lora_dropout"),
    (["model.checkpoint_layers=0.5"], "model.checkpoint_layers"),
    (["train.fsdp_cpu_offload=true"], "train.fsdp_cpu_offload"),
    (["train.switch_freq=3"], "train.switch_freq"),
    (["sft.data=dialogues.jsonl", "sft.questions=10"], "sft.temperature / questions"),
    (["data.eval=null", "data.eval_limit=5"], "data.eval_limit"),
]


@pytest.mark.parametrize("overrides, key", NO_EFFECT, ids=[" ".join(r[0]) for r in NO_EFFECT])
def test_a_key_with_no_effect_is_warned_once_and_refused_for_training(overrides, key, capsys):
    _warned.clear()
    cfg = load_config(None, TINY + overrides)
    load_config(None, TINY + overrides)  # validated again: still one warning
    warnings = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and key in warnings[0], warnings
    if warnings[0].removeprefix("warning: ").startswith(WARN_ONLY):  # shipped arm configs set them: warned only
        check_training(cfg)
    else:
        with pytest.raises(ConfigError, match=key.replace("/", ".")):
            check_training(cfg)


TRAINING_ONLY = [
    (
        ["rollout.max_turns=30", "rollout.max_tokens_per_turn=512", "rollout.max_context_tokens=4096"],
        "rollout.max_context_tokens=4096 holds (3 full round",
    ),
    (["rollout.samples_per_question=1"], "groups of one"),
    (["train.warmup_steps=5", "train.steps=2"], "train.warmup_steps=5"),
]


@pytest.mark.parametrize("overrides, message", TRAINING_ONLY, ids=[" ".join(r[0]) for r in TRAINING_ONLY])
def test_training_refuses_budgets_that_cannot_hold(overrides, message):
    cfg = load_config(None, TINY + overrides)  # fine to chat or evaluate with
    with pytest.raises(ConfigError) as err:
        check_training(cfg)
    assert message in str(err.value)


def test_every_shipped_config_trains_and_the_paper_budgets_hold():
    """Every config in configs/ (rema reproduce's arms too) passes what rema train checks, and every multi-turn one
    holds all its rounds at full length."""
    paths = [p for p in sorted((ROOT / "configs").rglob("*.yaml")) if "accelerate" not in p.parts]
    assert len(paths) > 10
    for path in paths:
        cfg = load_config(path)
        check_training(cfg)
        if cfg.rollout.mode == "multi_turn" and cfg.rollout.method == "rema":
            assert 2 * cfg.rollout.max_turns * cfg.rollout.max_tokens_per_turn < cfg.rollout.max_context_tokens, path


def test_every_numeric_key_has_a_range_and_every_choice_a_registry_list():
    numeric = []
    for section in dataclasses.fields(Config):
        cls = section.default_factory
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            if typing.get_origin(hint) in (dict, list):  # reward.extra_terms, data.levels: checked by hand
                continue
            kinds = set(typing.get_args(hint) or (hint,))
            if kinds & {int, float} and f"{section.name}.{f.name}" not in choice_table():
                numeric.append(f"{section.name}.{f.name}")
    assert sorted(set(numeric) - set(RANGES)) == []
    assert set(RANGES) <= set(numeric)
    assert set(choice_table()["algo.advantage"]) == set(ADVANTAGE_ESTIMATORS)


@pytest.fixture
def own_estimator():
    """An estimator registered the way a user would, removed afterwards."""
    name = "frontdoor_test_mean"

    @register_advantage_estimator(name, per_token=True, grouped=False)
    def mine(rewards, group_ids, mask, turn_ids, **kw):
        return grpo_advantages(rewards, group_ids, mask, turn_ids)

    yield name
    ADVANTAGE_ESTIMATORS.pop(name)
    ESTIMATOR_INFO.pop(name)


def test_a_registered_estimator_is_accepted_by_the_config_its_flags_and_not_the_docs(own_estimator):
    from rema.config_docs import render_markdown

    cfg = load_config(None, [f"algo.advantage={own_estimator}", "algo.gamma=0.9"])  # per_token: gamma is honoured
    assert cfg.algo.advantage == own_estimator
    assert own_estimator not in render_markdown()  # docs list what rema ships
    with pytest.raises(ConfigError, match="choose one of"):
        load_config(None, ["algo.advantage=frontdoor_unregistered"])


def test_flags_take_their_choices_from_the_registries():
    from rema.cli import build_parser

    actions = {a.dest: a for sub in build_parser()._subparsers._group_actions[0].choices.values() for a in sub._actions}
    assert list(actions["engine"].choices) == list(choice_table()["rollout.engine"])
    assert list(actions["dtype"].choices) == list(choice_table()["model.dtype"])


# --- the CLI: one line, exit 2, nothing left behind ---------------------------------------------------------


def _run(argv, capsys, tmp_path, monkeypatch) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "evals").exists()
    return code, err


def _one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", DEMO, "train.grad_clip=-1"], "train.grad_clip"),
        (["train", DEMO, "algo.gamma=0.9"], "algo.gamma"),
        (["train", DEMO, "rollout.max_turns=30"], "rollout.max_context_tokens=768"),
        (["train", *TINY, "data.train=nowhere.jsonl"], "data.train: cannot resolve dataset 'nowhere.jsonl'"),
        (["train", *TINY, "sft.cold_start=true", "sft.data=nowhere.jsonl"], "dialogue file not found: nowhere.jsonl"),
        (["sft", *TINY, "sft.data=nowhere.jsonl"], "dialogue file not found"),
        (["train", *TINY, "model.name=./no-such-model"], "cannot load tokenizer './no-such-model'"),
        (["eval", "--model", "tiny-random", "--bench", "gsm9k"], "'gsm9k' is not a benchmark (aime24"),
        (["eval", "--model", "tiny-random", "--bench", "gsm8k", "rollout.top_p=2"], "rollout.top_p"),
    ],
)
def test_the_cli_refuses_in_one_line_before_anything_loads(argv, expected, capsys, tmp_path, monkeypatch):
    code, err = _run(argv, capsys, tmp_path, monkeypatch)
    assert code == 2 and expected in _one_error_line(err), err


def test_a_bad_row_is_named_by_file_and_line(capsys, tmp_path, monkeypatch):
    data = tmp_path / "train.jsonl"
    data.write_text('{"problem": "1 + 1", "answer": "2"}\n{"problem": "2 + 2"}\n')
    code, err = _run(["train", *TINY, f"data.train={data}"], capsys, tmp_path, monkeypatch)
    assert code == 2 and "train.jsonl:2: no answer field" in _one_error_line(err)


def test_a_dialogue_rl_could_not_reproduce_is_refused_or_cut(capsys, tmp_path, monkeypatch, tiny):
    from rema.data.dialogues import load_dialogues
    from rema.preflight import fit_dialogues
    from rema.prompts import get_prompt_set

    long = {
        "question": "q",
        "answer": "7",
        "turns": [{"agent": "mta", "text": "Add. [FINISH]"}, {"agent": "ra", "text": "seven " * 20 + "\\boxed{7}"}],
    }
    short = {
        "question": "q",
        "answer": "7",
        "turns": [{"agent": "mta", "text": "Add. [FINISH]"}, {"agent": "ra", "text": "\\boxed{7}"}],
    }
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(short) + "\n" + json.dumps(long) + "\n")
    argv = ["sft", *TINY, "rollout.max_tokens_per_turn=16", f"sft.data={path}"]
    code, err = _run(argv, capsys, tmp_path, monkeypatch)
    assert code == 2 and "dialogue 2: its ra message of round 1 takes" in _one_error_line(err)
    cfg = load_config(None, TINY + ["rollout.max_tokens_per_turn=16", f"sft.data={path}"])
    dialogues = load_dialogues(path, two_agents=True, multi_turn=True, max_turns=2)
    kept, stats = fit_dialogues(dialogues, cfg.rollout, get_prompt_set(cfg.method_name), tiny[1], over_limit="truncate")
    assert len(kept) == 2 and stats == {"truncated_messages": 1.0, "dropped_dialogues": 0.0}
    assert len(tiny[1](kept[1].turns[1][1], add_special_tokens=False)["input_ids"]) <= 15


def test_a_teacher_plan_rl_could_not_reproduce_is_refused_before_a_model_loads(capsys, tmp_path, monkeypatch):
    """sft.data=teacher: the program teacher's dialogues are written and replayed under the rollout limits in the
    preflight, so an 8-token message budget refuses its plans in one line, and 160 let them through."""
    base = ["sft", *TINY, "sft.data=teacher", "data.train=synthetic:levels=1,4:n=40:seed=0", "rollout.max_turns=3"]
    code, err = _run(base, capsys, tmp_path, monkeypatch)
    line = _one_error_line(err)
    assert code == 2 and line.startswith("error: sft.data=teacher: dialogue syn-L") and "takes" in line, err
    code, err = _run([*base, "rollout.max_tokens_per_turn=160", "--dry-run"], capsys, tmp_path, monkeypatch)
    assert code == 0, err


def test_debug_shows_the_traceback(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError):
        main(["train", DEMO, "train.grad_clip=-1", "--debug"])
    monkeypatch.setenv("REMA_DEBUG", "1")
    with pytest.raises(ConfigError):
        main(["train", DEMO, "train.grad_clip=-1"])


def test_dry_run_checks_and_plans_without_writing(capsys, tmp_path, monkeypatch):
    code, _ = _run(["train", *TINY, "--dry-run"], capsys, tmp_path, monkeypatch)
    assert code == 0
    code, _ = _run(["sft", *TINY, "--dry-run"], capsys, tmp_path, monkeypatch)
    assert code == 0
    monkeypatch.chdir(tmp_path)
    main(["train", *TINY, "--dry-run"])
    out = capsys.readouterr().out
    for line in (
        "data.train",
        "prompts      rema-multi",
        "budget       2 round(s) x 8 tokens",
        "2 x 2 questions x 2",
        "memory",
    ):
        assert line in out, out
    assert list(tmp_path.iterdir()) == []
    assert (
        main(
            [
                "eval",
                "--model",
                "tiny-random",
                "--bench",
                "synthetic:levels=1:n=4",
                "--max-turns",
                "2",
                "--max-tokens",
                "8",
                "--dry-run",
            ]
        )
        == 0
    )
    assert "bench        synthetic" in capsys.readouterr().out and list(tmp_path.iterdir()) == []
    assert main(["train", *TINY, "rollout.max_context_tokens=40", "--dry-run"]) == 2  # the prompt leaves no room
    assert "over rollout.max_context_tokens=40, so no turn could be played" in _one_error_line(capsys.readouterr().err)


# --- the LR schedule counts each agent's own updates ---------------------------------------------------------


def test_own_steps_follow_the_switching_rule():
    assert [updates_agent(s, 0, switch_freq=2) for s in range(6)] == [True, True, False, False, True, True]
    assert own_steps(8, 0, switch_freq=2) == 4 and own_steps(8, 1, switch_freq=2) == 4
    assert own_steps(5, 0, switch_freq=2) == 3 and own_steps(5, 1, switch_freq=2) == 2
    assert own_steps(7, None, switch_freq=3) == 7  # shared weights, or one agent trained
    cosine = lr_lambda(1, 4, "cosine")
    assert [round(cosine(k), 6) for k in range(5)] == [1.0, 1.0, 0.75, 0.25, 0.0]


def test_separate_weights_schedule_over_their_own_updates(tmp_path):
    """Under separate weights each agent's cosine ends at the run's end (its own half of the steps), not halfway."""
    from rema.train import Trainer

    cfg = load_config(
        None,
        TINY
        + [
            "train.shared_weights=false",
            "train.switch_freq=1",
            "train.steps=4",
            "train.lr_schedule=cosine",
            "train.warmup_steps=2",
            f"log.run_dir={tmp_path}",
        ],
    )
    tr = Trainer(cfg)
    try:
        for pol in tr.policies:  # 2 own updates of 4 steps, the first of them warm-up
            f = pol.scheduler.lr_lambdas[0]
            assert [f(k) for k in range(3)] == [1.0, 1.0, 0.0], pol.name
    finally:
        tr.close()


def test_training_time_evaluation_samples_at_eval_temperature():
    from conftest import problem

    from rema.scoring import run_eval

    seen = []
    from rema.models import load_tokenizer
    from rema.rollout.engine import Completion, Engine

    class Recording(Engine):
        tokenizer = load_tokenizer("tiny-random")

        def generate(self, prompts, params):
            seen.extend(p.temperature for p in params)
            return [
                Completion([self.tokenizer.eos_token_id], [0.0], "stop", self.tokenizer.eos_token_id) for _ in prompts
            ]

    eng = Recording()
    for temperature in (0.0, 0.7):
        cfg = load_config(
            None,
            [
                "rollout.max_turns=1",
                "rollout.max_tokens_per_turn=4",
                "rollout.temperature=1.0",
                f"rollout.eval_temperature={temperature}",
            ],
        )
        seen.clear()
        run_eval([problem()], {"mta": eng, "ra": eng}, cfg, correctness_fn=lambda ep: 0.0)
        assert set(seen) == {temperature}
