"""The runtime layer under every command: one way to a Config, the engine resolved once and recorded, and the
commands standing side by side (none imports another; the runtime imports none)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from rema.cli import parse_args
from rema.cli_args import config_from_args
from rema.config import Config, ConfigError, load_config
from rema.prompts import PromptSet
from rema.runtime import command_config, engine_of, resolved

SRC = Path(__file__).resolve().parents[1] / "src" / "rema"
COMMANDS = ("chat.py", "train", "eval", "serve", "distill", "reproduce")
"""The command modules and packages (``rema.cli`` is the front door above them)."""


def _imports(path: Path) -> set[str]:
    """The ``rema`` modules a source file imports (relative imports resolved; lazy ones included)."""
    package = ("rema." + ".".join(path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
    parts = package.split(".") if path.name == "__init__.py" else package.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            found |= {f"{module}.{a.name}" for a in node.names} | {module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("rema")}


def _command(module: str) -> str | None:
    """The command a module belongs to, or None."""
    for name in COMMANDS:
        prefix = "rema." + name.removesuffix(".py")
        if module == prefix or module.startswith(prefix + "."):
            return name
    return None


def test_commands_stand_side_by_side_on_the_runtime():
    """No command imports another command, and the runtime (like every layer below the commands) imports
    none: what two commands share lives below them."""
    crossings = []
    for path in sorted(SRC.rglob("*.py")):
        module = "rema." + ".".join(path.relative_to(SRC).with_suffix("").parts)
        if module == "rema.cli":
            continue
        own = _command(module)
        for imported in _imports(path):
            other = _command(imported)
            if other is not None and other != own:
                crossings.append(f"{path.relative_to(SRC)} imports {imported}")
    assert not crossings, crossings


def test_the_engine_is_resolved_once_when_a_command_builds_its_config(monkeypatch):
    """``rollout.engine=auto`` becomes the engine that will run, in the Config every command builds (so
    ``--help-config`` shows it); an explicit name is taken as given; an impossible combination names what
    ``auto`` became."""
    monkeypatch.setenv("REMA_ENGINE", "hf")
    assert load_config(None).rollout.engine == "auto"
    assert command_config(None).rollout.engine == "hf" == engine_of(load_config(None))
    assert config_from_args(parse_args(["eval", "--model", "tiny-random"])).rollout.engine == "hf"
    assert command_config(None, ["rollout.engine=vllm"]).rollout.engine == "vllm"
    explicit = load_config(None, ["rollout.engine=hf"])
    assert resolved(explicit) is explicit
    with pytest.raises(ConfigError, match="rollout.engine=auto is hf here.*vllm_tensor_parallel_size"):
        command_config(None, ["rollout.vllm_tensor_parallel_size=2"])
    monkeypatch.setenv("REMA_ENGINE", "sglang")
    with pytest.raises(ConfigError, match="rollout.engine: REMA_ENGINE='sglang'"):
        command_config(None)


def test_make_engine_takes_a_resolved_name():
    from rema.rollout.factory import make_engine

    with pytest.raises(ValueError, match="resolve auto first"):
        make_engine(None, None, engine="auto")


def test_a_run_records_the_engine_that_ran(tmp_path, monkeypatch):
    """The run's config.yaml and meta.json name the resolved engine, so ``--resume`` keeps it."""
    from rema.train import Trainer

    monkeypatch.setenv("REMA_ENGINE", "hf")
    cfg = load_config(
        None,
        [
            "model.name=tiny-random",
            "rollout.mode=single_turn",
            "rollout.max_tokens_per_turn=4",
            "train.questions_per_step=1",
            "data.train=synthetic:levels=1:n=4:seed=0",
            "data.eval=null",
            "train.eval_every=0",
            f"log.run_dir={tmp_path / 'run'}",
            "log.progress=false",
            "log.tensorboard=false",
        ],
    )
    assert cfg.rollout.engine == "auto"
    tr = Trainer(cfg, prompts=PromptSet("test", "plan", "solve"))
    try:
        assert tr.cfg.rollout.engine == "hf"
        saved = load_config(tmp_path / "run" / "config.yaml")
        meta = json.loads((tmp_path / "run" / "meta.json").read_text())
        assert saved.rollout.engine == meta["engine"] == "hf" and meta["engines"] == {"shared": "HFEngine"}
    finally:
        tr.close()


def test_train_resume_takes_the_run_config_and_refuses_another(tmp_path, capsys):
    """``rema train --resume RUN``: the run's config.yaml is the base (dotted overrides on top); a CONFIG beside
    it is refused instead of being ignored."""
    run = tmp_path / "run"
    run.mkdir()
    load = command_config(None, ["rollout.max_turns=3"])
    from rema.config import save_config

    save_config(load, run / "config.yaml")
    args = parse_args(["train", "--resume", str(run), "rollout.max_tokens_per_turn=9"])
    cfg = config_from_args(args, base=run / "config.yaml")
    assert isinstance(cfg, Config) and (cfg.rollout.max_turns, cfg.rollout.max_tokens_per_turn) == (3, 9)
    from rema.cli import main

    assert main(["train", "configs/demo.yaml", "--resume", str(run)]) == 2
    assert "continues with the run's config.yaml" in capsys.readouterr().err
