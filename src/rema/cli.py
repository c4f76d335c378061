"""The ``rema`` command line: chat, train, sft, eval, compare, report."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from types import SimpleNamespace


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_chat(args) -> int:
    """Run one episode on one question and print the dialogue."""
    from rich.console import Console

    from .config import ConfigError, RolloutConfig, load_config
    from .display import print_episode
    from .models import load_model
    from .prompts import get_prompt_set
    from .rollout import rollout
    from .rollout.factory import engine_options, make_engine, resolve_engine

    console = Console(stderr=args.json)
    cfg = load_config(None, [
        f"rollout.method={args.method}",
        f"rollout.mode={'single_turn' if args.single_turn or args.action_set else 'multi_turn'}",
        f"rollout.action_set={str(args.action_set).lower()}",
    ])
    rcfg: RolloutConfig = cfg.rollout
    rcfg.max_turns, rcfg.max_tokens_per_turn = args.max_turns, args.max_tokens
    rcfg.max_context_tokens = max(args.max_context, args.max_tokens + 1)
    rcfg.temperature, rcfg.top_p = args.temperature, args.top_p
    rcfg.vllm_enforce_eager = not args.compile  # one dialogue: a compiled start (~20-80 s) would not pay off
    try:
        from .config import validate

        validate(cfg)
    except ConfigError as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    with console.status(f"loading {args.model} …"):
        model, tok = load_model(args.model, device=_device(args.device))
    rcfg.engine = args.engine
    with console.status(f"starting the {resolve_engine(args.engine)} engine …"):
        engine = make_engine(model, tok, engine=args.engine, seed=args.seed, **engine_options(rcfg))
    problem = SimpleNamespace(id="chat", question=args.question, answer=args.answer or "", meta={})
    with console.status("generating …"):
        [ep] = rollout([problem], rcfg, {"mta": engine, "ra": engine}, get_prompt_set(cfg.method_name),
                       greedy=args.temperature == 0, samples_per_question=1)
    if args.answer is not None:
        from .scoring import score_episodes

        score_episodes([ep], cfg.reward, task=rcfg.task, mode=rcfg.mode)
    if args.json:
        print(json.dumps(ep.to_dict(with_tokens=args.tokens), ensure_ascii=False))
    else:
        print_episode(ep, console)
    return 0


def _config_and_overrides(args) -> tuple[str | None, list[str]] | int:
    """``(config file, overrides)`` from ``CONFIG [key=value ...]``; an exit code when there is nothing to run
    (``--help-config`` printed, or two config files given)."""
    from .config import describe_config, load_config

    items = ([args.config] if args.config else []) + list(args.overrides)
    overrides = [x for x in items if "=" in x]
    configs = [x for x in items if "=" not in x]
    if len(configs) > 1:
        print(f"error: one config file expected, got {configs}", file=sys.stderr)
        return 2
    config = configs[0] if configs else None
    if args.help_config:
        print(describe_config(load_config(config, overrides)))
        return 0
    return config, overrides


def cmd_train(args) -> int:
    """Train from a YAML config with dotted overrides, or resume a run directory."""
    from .train import TrainingDiverged, train

    parsed = _config_and_overrides(args)
    if isinstance(parsed, int):
        return parsed
    config, overrides = parsed
    if config is None and args.resume is None and not overrides:
        print("error: give a config (e.g. configs/demo.yaml) or --resume RUN_DIR", file=sys.stderr)
        return 2
    try:
        trainer = train(config, overrides, resume=args.resume, max_steps=args.max_steps)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    print(f"run directory: {trainer.run_dir}")
    return 130 if trainer._stop_requested else 0


def cmd_sft(args) -> int:
    """The cold start alone: fine-tune on dialogues (a file, or the model's own correct episodes), export."""
    from .data.dialogues import DialogueError
    from .train import sft

    parsed = _config_and_overrides(args)
    if isinstance(parsed, int):
        return parsed
    config, overrides = parsed
    try:
        trainer = sft(config, overrides)
    except DialogueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run directory: {trainer.run_dir}")
    return 130 if trainer._stop_requested else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rema", description="ReMA: meta-thinking agents trained with multi-agent RL")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("chat", help="run one MTA↔RA dialogue on a question and print it")
    c.add_argument("question", help="the problem to solve")
    c.add_argument("--model", default="smollm2-135m", help="built-in name, Hub id or local folder")
    c.add_argument("--method", default="rema", choices=["rema", "vrp", "mrp"], help="two agents or a baseline")
    c.add_argument("--single-turn", action="store_true", help="plan once, answer once (default: multi-turn)")
    c.add_argument("--action-set", action="store_true", help="MTA answers JSON DECOMPOSE/REWRITE/EMPTY")
    c.add_argument("--max-turns", type=int, default=4, help="most MTA→RA rounds")
    c.add_argument("--max-tokens", type=int, default=256, help="token limit per message")
    c.add_argument("--max-context", type=int, default=4096, help="context budget per agent")
    c.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    c.add_argument("--top-p", type=float, default=1.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="auto")
    c.add_argument("--engine", default="auto", choices=["auto", "hf", "vllm"],
                   help="generation backend (auto: vLLM when installed, else transformers)")
    c.add_argument("--compile", action="store_true",
                   help="vLLM: compile the model (faster decoding; the start takes ~20 s, ~80 s the first time)")
    c.add_argument("--answer", default=None, help="reference answer: grade the final response")
    c.add_argument("--json", action="store_true", help="print the episode record as JSON")
    c.add_argument("--tokens", action="store_true", help="with --json: include token ids, log-probs, views")
    c.set_defaults(func=cmd_chat)

    t = sub.add_parser("train", help="RL-train the meta-thinker and the reasoner (GRPO / REINFORCE++)",
                       description="rema train CONFIG [section.key=value ...]  |  rema train --resume RUN_DIR")
    t.add_argument("config", nargs="?", help="YAML config, e.g. configs/demo.yaml")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. algo.clip_eps=0.1 train.steps=20")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    t.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resume later)")
    t.add_argument("--help-config", action="store_true", help="list every config key with its value and meaning")
    t.set_defaults(func=cmd_train)

    f = sub.add_parser("sft", help="cold start: fine-tune on MTA/RA dialogues before RL (loss on each role's turns)",
                       description="rema sft CONFIG [sft.data=dialogues.jsonl|self] [section.key=value ...]")
    f.add_argument("config", nargs="?", help="YAML config, e.g. configs/demo.yaml (its sft section)")
    f.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sft.epochs=3 sft.data=my_dialogues.jsonl")
    f.add_argument("--help-config", action="store_true", help="list every config key with its value and meaning")
    f.set_defaults(func=cmd_sft)

    from .eval.commands import add_eval_commands

    add_eval_commands(sub)  # eval, compare, report
    return p


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .models import ModelNotFoundError

    args = build_parser().parse_args(argv)
    # `kill` (SIGTERM) exits through Python, so finalizers run: vLLM's engine processes are stopped and its
    # weight folders in /dev/shm removed instead of outliving us. `rema train` replaces this with a graceful
    # stop (finish the step, save a checkpoint) while it trains.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return args.func(args)
    except (ModelNotFoundError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
