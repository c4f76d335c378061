"""The ``rema`` command line: chat, train, sft, plan, eval, compare, report, export, serve, distill, reproduce.

The front door: each command's parser and what it runs. ``train``, ``sft`` and ``plan`` are here; the other
commands stand beside them in their own modules (:mod:`rema.chat`, :mod:`rema.eval.commands`,
:mod:`rema.eval.export_cmd`, :mod:`rema.serve`, :mod:`rema.distill`, :mod:`rema.reproduce`). Every one builds
its Config through :func:`rema.cli_args.config_from_args`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path


def cmd_train(args) -> int:
    """Train from a YAML config with dotted overrides, or resume a run directory."""
    from .cli_args import config_from_args
    from .train import RunUnhealthy, TrainingDiverged, train
    from .train.strategy import launcher_overrides

    if args.resume is not None and args.config is not None:
        print(f"error: --resume {args.resume} continues with the run's config.yaml; drop {args.config} (dotted "
              "overrides still apply)", file=sys.stderr)
        return 2
    if args.config is None and args.resume is None and not args.overrides and not args.help_config:
        print("error: give a config (e.g. configs/demo.yaml) or --resume RUN_DIR", file=sys.stderr)
        return 2
    if args.resume is not None:  # the run's own settings; an accelerate config does not re-plan a running run
        cfg = config_from_args(args, base=Path(args.resume) / "config.yaml")
    else:  # an accelerate FSDP config speaks first; the command line's overrides win
        cfg = config_from_args(args, launcher_overrides())
    if cfg is None:
        return 0
    try:
        trainer = train(cfg, resume=args.resume, max_steps=args.max_steps)
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
    from .cli_args import config_from_args
    from .data.dialogues import DialogueError
    from .train import sft
    from .train.strategy import launcher_overrides

    cfg = config_from_args(args, launcher_overrides())
    if cfg is None:
        return 0
    try:
        trainer = sft(cfg)
    except DialogueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run directory: {trainer.run_dir}")
    return 130 if trainer.stop_requested else 0


def cmd_plan(args) -> int:
    """Print the memory a config needs per device (``rema.plan``), from the model's config alone: load the
    config, shape the model on the meta device, print the table (or JSON)."""
    from .cli_args import config_from_args
    from .plan import alternatives, host_memory_gib, model_config, model_shape, plan, setup_from_config, verdict

    cfg = config_from_args(args)
    if cfg is None:
        return 0
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
    from .chat import add_chat_command

    add_chat_command(sub)

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
    from .reproduce import add_reproduce_command

    add_reproduce_command(sub)
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
    from .runtime import SetupError

    args = parse_args(argv)
    # `kill` (SIGTERM) exits through Python, so finalizers run: vLLM's engine processes are stopped and its
    # weight folders in /dev/shm removed instead of outliving us. `rema train` replaces this with a graceful
    # stop (finish the step, save a checkpoint) while it trains.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.command == "report" and args.run_dir:  # a rema reproduce folder: its experiments on one page
        from .reproduce.page import build_page, is_reproduce_folder

        if is_reproduce_folder(args.run_dir):
            print(f"wrote {build_page(args.run_dir)}")
            return 0
    try:
        return args.func(args)
    except (ModelNotFoundError, ConfigError, SetupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
