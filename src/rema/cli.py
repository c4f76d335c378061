"""The ``rema`` command line: chat, train, sft, plan, eval, compare, report, export, serve."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from types import SimpleNamespace

CHAT_PRESETS = ["rollout.vllm_enforce_eager=true"]
"""``rema chat``'s own starting point over the config: one dialogue does not repay a compiled vLLM start
(~20-80 s), so it runs eager unless ``--compile`` (or ``rollout.vllm_enforce_eager=false``)."""


def chat_overrides(args) -> list[str]:
    """The overrides ``rema chat``'s presets and flags stand for; the typed dotted ones go after these."""
    return CHAT_PRESETS + args.shorthands.overrides(args)


def cmd_chat(args) -> int:
    """Run one episode on one question and print the dialogue (scored when ``--answer`` is given)."""
    from rich.console import Console

    from .display import print_episode
    from .eval.bench_runner import EvalError, eval_config, load_engines
    from .prompts import get_prompt_set
    from .rollout import rollout
    from .rollout.factory import resolve_engine

    # a run folder (--model RUN) is the base config and its final/ weights (shared, or mta/ + ra/)
    parsed = _config_and_overrides(args, chat_overrides(args), load=eval_config)
    if isinstance(parsed, int):
        return parsed
    console = Console(stderr=args.json)
    try:
        cfg = eval_config(*parsed)
        rcfg = cfg.rollout
        problem = chat_problem(args, rcfg.task)  # a missing response fails before any model loads
        with console.status(f"loading the model(s) and starting the {resolve_engine(rcfg.engine)} engine …"):
            engines = load_engines(cfg)
    except EvalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with console.status("generating …"):
        [ep] = rollout([problem], rcfg, engines, get_prompt_set(cfg.method_name),
                       greedy=rcfg.temperature == 0, samples_per_question=1)
    if args.answer is not None:
        from .scoring import score_episodes

        # the same call as training's: the config decides every reward term (format terms, plan leak, ...)
        score_episodes([ep], cfg.reward, task=rcfg.task, mode=rcfg.mode, correctness_fn=None)
    if args.json:
        print(json.dumps(ep.to_dict(with_tokens=args.tokens), ensure_ascii=False))
    else:
        print_episode(ep, console)
    return 0


def chat_problem(args, task: str) -> SimpleNamespace:
    """The one problem ``rema chat`` plays: QUESTION with ``--answer`` as its reference answer; under
    ``--task judge`` QUESTION is the user prompt, ``--response-a`` / ``--response-b`` the two responses (text, or
    ``@FILE`` to read one from a file) and ``--answer`` the better one, A or B (also ``A>B`` / ``B>A``)."""
    from pathlib import Path

    from .config import ConfigError
    from .data.loaders import judge_label

    flags = {"response_a": "--response-a", "response_b": "--response-b"}
    given = {k: getattr(args, k, None) for k in flags}
    if task != "judge":
        if any(v is not None for v in given.values()):
            raise ConfigError("--response-a / --response-b are the two responses of a judge dialogue; add --task judge")
        return SimpleNamespace(id="chat", question=args.question, answer=args.answer or "", meta={})
    missing = [flags[k] for k, v in given.items() if v is None]
    if missing:
        raise ConfigError(f"--task judge compares two responses to QUESTION (the user prompt): give "
                          f"{' and '.join(missing)} (the text, or @FILE to read it from a file)")
    pair = {}
    for key, value in given.items():
        if value.startswith("@"):
            path = Path(value[1:]).expanduser()
            if not path.is_file():
                raise ConfigError(f"{flags[key]} {value}: no such file (@FILE reads the response from FILE)")
            value = path.read_text(encoding="utf-8").strip()
        pair[key] = value
    answer = ""
    if args.answer is not None:
        answer = judge_label(args.answer)
        if answer is None:
            raise ConfigError(f"--answer under --task judge names the better response, A or B; got {args.answer!r}")
    return SimpleNamespace(id="chat", question=args.question, answer=answer, meta={"prompt": args.question, **pair})


def _config_and_overrides(args, implied: list[str] = (), load=None) -> tuple[str | None, list[str]] | int:
    """``(config file, overrides)`` from ``CONFIG [key=value ...]``, the ``implied`` overrides (presets and
    flags) first so that the typed ones win; ``0`` when ``--help-config`` printed the resulting config (built by
    ``load``, default ``load_config``)."""
    from .cli_args import split_config_args
    from .config import describe_config, load_config

    config, explicit = split_config_args(([args.config] if args.config else []) + list(args.overrides))
    overrides = [*implied, *explicit]
    if args.help_config:
        print(describe_config((load or load_config)(config, overrides)))
        return 0
    return config, overrides


def cmd_train(args) -> int:
    """Train from a YAML config with dotted overrides, or resume a run directory."""
    from .train import RunUnhealthy, TrainingDiverged, train

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
    except RunUnhealthy as err:  # a health check fired and stopped the run (train.health)
        print(f"error: {err}", file=sys.stderr)
        return 4
    print(f"run directory: {trainer.run_dir}")
    return 130 if trainer.stop_requested else 0


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
    return 130 if trainer.stop_requested else 0


def _chat_method(name: str) -> list[tuple[str, object]]:
    """``--method``: a single-agent baseline plays both roles with one model."""
    return [("rollout.method", name)] + ([("train.shared_weights", True)] if name != "rema" else [])


def _add_chat_command(sub) -> None:
    from .cli_args import Shorthands, add_config_args, add_generation_shorthands, model_source

    c = sub.add_parser(
        "chat", help="run one MTA↔RA dialogue on a question and print it",
        description="rema chat QUESTION [CONFIG] [section.key=value ...] [flags]: one episode under a config "
                    "(default: the built-in defaults), as `rema train` would play and score it. Each flag is a "
                    "shorthand for the config key in brackets; dotted overrides win over flags.")
    c.add_argument("question", help="the problem to solve (with --task judge: the user prompt whose two responses "
                                    "are judged)")
    add_config_args(c, "rollout.max_turns=2 reward.format_terms=true")
    c.add_argument("--answer", default=None, help="reference answer: grade the final response (config's rewards); "
                                                  "with --task judge the better response, A or B")
    c.add_argument("--response-a", default=None, metavar="TEXT|@FILE",
                   help="--task judge: response A to QUESTION (@FILE reads it from a file)")
    c.add_argument("--response-b", default=None, metavar="TEXT|@FILE", help="--task judge: response B")
    c.add_argument("--json", action="store_true", help="print the episode record as JSON")
    c.add_argument("--tokens", action="store_true", help="with --json: include token ids, log-probs, views")
    sh = Shorthands()
    sh.add(c, "--model", key=model_source,
           help="built-in name, Hub id, local folder, or a training run folder: its final/ weights (one model, or "
                "mta/ + ra/) and its config.yaml as the base [model.name, or eval.run for a run]")
    sh.add(c, "--dtype", choices=["float32", "bfloat16", "float16"], key="model.dtype", help="weights' dtype")
    sh.add(c, "--method", key=_chat_method, choices=["rema", "vrp", "mrp"],
           help="two agents or a single-agent baseline [rollout.method; a baseline sets train.shared_weights=true]")
    sh.add(c, "--single-turn", action="store_const", const=True, key=lambda _: [("rollout.mode", "single_turn")],
           help="plan once, answer once [rollout.mode=single_turn]")
    sh.add(c, "--action-set", action="store_const", const=True,
           key=lambda _: [("rollout.mode", "single_turn"), ("rollout.action_set", True)],
           help="MTA answers JSON DECOMPOSE/REWRITE/EMPTY [rollout.action_set=true, rollout.mode=single_turn]")
    sh.add(c, "--task", choices=["math", "judge"], key="rollout.task",
           help="judge: which of --response-a / --response-b answers QUESTION better, verdict [[A]] or [[B]]")
    sh.add(c, "--temperature", type=float, key="rollout.temperature", help="sampling temperature, 0 = greedy")
    add_generation_shorthands(sh, c)
    sh.add(c, "--compile", action="store_const", const=True, key=lambda _: [("rollout.vllm_enforce_eager", False)],
           help="vLLM: compile the model (faster decoding; the start takes ~20 s, ~80 s the first time); chat "
                "runs eager otherwise [rollout.vllm_enforce_eager=false]")
    c.set_defaults(func=cmd_chat, shorthands=sh)


def cmd_plan(args) -> int:
    """Print the memory a config needs per device (``rema.plan``), from the model's config alone: load the
    config, shape the model on the meta device, print the table (or JSON)."""
    from .config import load_config
    from .plan import alternatives, host_memory_gib, model_config, model_shape, plan, setup_from_config, verdict

    parsed = _config_and_overrides(args)
    if isinstance(parsed, int):
        return parsed
    config, overrides = parsed
    cfg = load_config(config, overrides)
    gpu_mem = args.gpu_mem
    s = setup_from_config(cfg, gpus=args.gpus, gpu_mem_gib=gpu_mem, trained_share=args.trained_share,
                          runtime_gib=args.runtime_gib)
    names = [cfg.model.name] + ([cfg.model.ra_name] if not cfg.train.shared_weights and cfg.model.ra_name else [])
    shape = model_shape(model_config(names[0]), names[0])
    if len(names) > 1 and names[1] != names[0]:  # separate weights with another RA model: plan the larger
        other = model_shape(model_config(names[1]), names[1])
        shape = max(shape, other, key=lambda x: x.params)
    p = plan(shape, s)
    alts = alternatives(shape, s) if p.fits is False else []
    host = host_memory_gib()
    if args.json:
        d = p.to_dict() | {"verdict": verdict(p, alts), "params": shape.params,
                           "alternatives": {w: {"peak_gib": round(a.peak_gib, 3), "fits": a.fits} for w, a in alts}}
        if gpu_mem is None:
            d["machine_gib"] = host
        print(json.dumps(d))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=130)  # files and pipes get whole rows
    where = f"{args.gpus} × GPU of {gpu_mem:g} GiB" if gpu_mem is not None else f"{args.gpus} CPU process(es)"
    mode = f"{s.strategy}" + (" + CPU offload" if s.cpu_offload and s.strategy == "fsdp" else "")
    table = Table(title=f"{shape.name} ({shape.params / 1e9:.2f}B params) on {where}, {mode}: memory per "
                        f"{'GPU' if gpu_mem is not None else 'process'}")
    table.add_column("component")
    table.add_column("GiB", justify="right")
    table.add_column("when")
    table.add_column("how counted")
    for x in p.lines:
        style = None if x.peak else "dim"
        when = "always" if not x.phases else ("—" if x.phases == ("info",) else ", ".join(x.phases))
        table.add_row(x.component, f"{x.gib:.2f}", when, x.note, style=style)
    table.add_row("peak", f"{p.peak_gib:.2f}", p.peak_phase, "persistent + the largest phase", style="bold")
    console.print(table)
    for x in p.host_lines:
        console.print(f"  host memory per process: {x.component} {x.gib:.2f} GiB ({x.note})")
    console.print(verdict(p, alts))
    if gpu_mem is None and host is not None:
        console.print(f"{args.gpus} process(es) × {p.peak_gib:.2f} GiB = {args.gpus * p.peak_gib:.2f} GiB of this "
                      f"machine's {host:.1f} GiB")
    return 0


def _add_plan_command(sub) -> None:
    from .cli_args import add_config_args

    c = sub.add_parser(
        "plan", help="memory per device (weights, grads, optimizer, activations, vLLM) and whether it fits",
        description="rema plan [CONFIG] [section.key=value ...] --gpus N [--gpu-mem GiB]: what one training "
                    "process holds at its peak, from the model's config alone (no weights read; the paper's "
                    "models answer offline). Without --gpu-mem: CPU processes, host memory per process.")
    add_config_args(c, "model.lora_r=16 train.strategy=fsdp")
    c.add_argument("--gpus", type=int, default=1, help="processes (one per GPU, or CPU processes)")
    c.add_argument("--gpu-mem", type=float, default=None, metavar="GiB", help="memory of one GPU (e.g. 80)")
    c.add_argument("--trained-share", type=float, default=1.0,
                   help="share of a micro-batch's tokens that are trained (LM-head positions; 1 = upper bound)")
    c.add_argument("--runtime-gib", type=float, default=None,
                   help="the process's own memory outside tensors (default: measured on CPU, 1 GiB on a GPU)")
    c.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    c.set_defaults(func=cmd_plan)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rema", description="ReMA: meta-thinking agents trained with multi-agent RL")
    sub = p.add_subparsers(dest="command", required=True)

    _add_chat_command(sub)

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

    _add_plan_command(sub)
    from .distill import add_distill_command

    add_distill_command(sub)

    from .eval.commands import add_eval_commands

    add_eval_commands(sub)  # eval, compare, report
    from .eval.export_cmd import add_export_command

    add_export_command(sub)
    from .serve import add_serve_command

    add_serve_command(sub)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a ``rema`` command line; CONFIG and overrides may stand before, between or after the flags."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # positionals after a flag (`rema chat Q --max-turns 2 CONFIG k=v`) are left over by argparse: they are
    # the config file and overrides when the command takes them
    if extra and isinstance(getattr(args, "overrides", None), list) and not any(x.startswith("-") for x in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .models import ModelNotFoundError

    args = parse_args(argv)
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
