"""The ``rema`` command line: chat, train, sft, plan, eval, compare, report, export, serve, distill, reproduce.

The front door: each command's parser and what it runs. ``train``, ``sft`` and ``plan`` are here; the other
commands stand beside them in their own modules (:mod:`rema.chat`, :mod:`rema.eval.commands`,
:mod:`rema.eval.export_cmd`, :mod:`rema.serve`, :mod:`rema.distill`, :mod:`rema.reproduce`). Every one builds
its Config through :func:`rema.cli_args.config_from_args`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

DRY_RUN_HELP = (
    "check everything a run reads before it loads weights (config, the first rows of every data set, "
    "a dialogue file, the tokenizer, one episode's prompts against the context) and print the plan; "
    "writes nothing"
)


def cmd_train(args) -> int:
    """Train from a YAML config with dotted overrides, or resume a run directory (``--dry-run``: check and plan)."""
    from .cli_args import config_from_args
    from .config import check_training
    from .train import RunUnhealthy, TrainingDiverged, dry_run, train
    from .train.strategy import launcher_overrides

    if args.resume is not None and args.config is not None:
        print(
            f"error: --resume {args.resume} continues with the run's config.yaml; drop {args.config} (dotted "
            "overrides still apply)",
            file=sys.stderr,
        )
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
    if args.resume is None:  # a resumed run continues under the settings it started with
        check_training(cfg)
    if args.dry_run:
        print("\n".join(dry_run(cfg, command="train")))
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
    from .config import check_training
    from .data.dialogues import DialogueError
    from .train import dry_run, sft
    from .train.strategy import launcher_overrides

    cfg = config_from_args(args, launcher_overrides())
    if cfg is None:
        return 0
    check_training(cfg)
    if args.dry_run:
        print("\n".join(dry_run(cfg, command="sft")))
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
    from .plan import alternatives, config_shape, host_memory_gib, plan, setup_from_config

    cfg = config_from_args(args)
    if cfg is None:
        return 0
    s = setup_from_config(
        cfg, gpus=args.gpus, gpu_mem_gib=args.gpu_mem, trained_share=args.trained_share, runtime_gib=args.runtime_gib
    )
    shape = config_shape(cfg)  # separate weights with another RA model: the larger
    p = plan(shape, s)
    alts = alternatives(shape, s) if p.works is False else []
    host = host_memory_gib()
    if args.json:
        print(json.dumps(_plan_json(p, shape, alts, gpu_mem=args.gpu_mem, host=host)))
    else:
        _print_plan(args, shape, p, alts, host)
    return 0


def _plan_json(p, shape, alts, *, gpu_mem: float | None, host: float | None) -> dict:
    """``rema plan --json``: the plan, its verdict, the model's parameters and each alternative's peak; on CPU
    (no ``--gpu-mem``) also this machine's memory."""
    from .plan import verdict

    d = p.to_dict() | {
        "verdict": verdict(p, alts),
        "params": shape.params,
        "alternatives": {w: {"peak_gib": round(a.peak_gib, 3), "fits": a.fits, "works": a.works} for w, a in alts},
    }
    if gpu_mem is None:
        d["machine_gib"] = host
    return d


def _print_plan(args, shape, p, alts, host: float | None) -> None:
    """``rema plan``'s table of lines and its peak, then host memory, notes, the verdict and (on CPU) the
    processes' total against this machine's memory."""
    from rich.console import Console

    from .plan import verdict

    console = Console() if sys.stdout.isatty() else Console(width=130)  # files and pipes get whole rows
    console.print(_plan_table(args, shape, p))
    for x in p.host_lines:
        console.print(f"  host memory per process: {x.component} {x.gib:.2f} GiB ({x.note})")
    for note in p.notes:
        console.print(f"  note: {note}")
    console.print(verdict(p, alts))
    if args.gpu_mem is None and host is not None:
        console.print(
            f"{args.gpus} process(es) × {p.peak_gib:.2f} GiB = {args.gpus * p.peak_gib:.2f} GiB of this "
            f"machine's {host:.1f} GiB"
        )


def _plan_table(args, shape, p):
    """The plan's lines as a rich table titled with the model, the devices and the strategy; the lines outside
    the peak's phase dimmed, the peak in bold."""
    from rich.table import Table

    s, gpu_mem = p.setup, args.gpu_mem
    where = (
        f"{args.gpus} × GPU of {gpu_mem:g} GiB"
        + (f" ({s.device_gib:g} GiB reported)" if s.device_gib != gpu_mem else "")
        if gpu_mem is not None
        else f"{args.gpus} CPU process(es)"
    )
    mode = f"{s.strategy}" + (" + CPU offload" if s.cpu_offload and s.strategy == "fsdp" else "")
    table = Table(
        title=f"{shape.name} ({shape.params / 1e9:.2f}B params) on {where}, {mode}: memory per "
        f"{'GPU' if gpu_mem is not None else 'process'}"
    )
    table.add_column("component")
    table.add_column("GiB", justify="right")
    table.add_column("when")
    table.add_column("how counted")
    for x in p.lines:
        style = None if x.peak else "dim"
        when = "always" if not x.phases else ("—" if x.phases == ("info",) else ", ".join(x.phases))
        table.add_row(x.component, f"{x.gib:.2f}", when, x.note, style=style)
    table.add_row("peak", f"{p.peak_gib:.2f}", p.peak_phase, "persistent + the largest phase", style="bold")
    return table


def _add_plan_command(sub) -> None:
    from .cli_args import add_config_args

    c = sub.add_parser(
        "plan",
        help="memory per device (weights, grads, optimizer, activations, vLLM) and whether it fits",
        description="rema plan [CONFIG] [section.key=value ...] --gpus N [--gpu-mem GiB]: what one training "
        "process holds at its peak, from the model's config alone (no weights read; the paper's "
        "models answer offline). Without --gpu-mem: CPU processes, host memory per process.",
    )
    add_config_args(c, "model.lora_r=16 train.strategy=fsdp")
    c.add_argument("--gpus", type=int, default=1, help="processes (one per GPU, or CPU processes)")
    c.add_argument("--gpu-mem", type=float, default=None, metavar="GiB", help="memory of one GPU (e.g. 80)")
    c.add_argument(
        "--trained-share",
        type=float,
        default=1.0,
        help="share of a micro-batch's tokens that are trained (LM-head positions; 1 = upper bound)",
    )
    c.add_argument(
        "--runtime-gib",
        type=float,
        default=None,
        help="the process's own memory outside tensors (default: measured on CPU, 1 GiB on a GPU)",
    )
    c.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    c.set_defaults(func=cmd_plan)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rema", description="ReMA: meta-thinking agents trained with multi-agent RL")
    sub = p.add_subparsers(dest="command", required=True)
    from .chat import add_chat_command

    add_chat_command(sub)

    t = sub.add_parser(
        "train",
        help="RL-train the meta-thinker and the reasoner (GRPO / REINFORCE++)",
        description="rema train CONFIG [section.key=value ...]  |  rema train --resume RUN_DIR",
    )
    t.add_argument("config", nargs="?", help="YAML config, e.g. configs/demo.yaml")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. algo.clip_eps=0.1 train.steps=20")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    t.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resume later)")
    t.add_argument("--help-config", action="store_true", help="list every config key with its value and meaning")
    t.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
    t.set_defaults(func=cmd_train)

    f = sub.add_parser(
        "sft",
        help="cold start: fine-tune on MTA/RA dialogues before RL (loss on each role's turns)",
        description="rema sft CONFIG [sft.data=dialogues.jsonl|self] [section.key=value ...]",
    )
    f.add_argument("config", nargs="?", help="YAML config, e.g. configs/demo.yaml (its sft section)")
    f.add_argument("overrides", nargs="*", help="dotted overrides, e.g. sft.epochs=3 sft.data=my_dialogues.jsonl")
    f.add_argument("--help-config", action="store_true", help="list every config key with its value and meaning")
    f.add_argument("--dry-run", action="store_true", help=DRY_RUN_HELP)
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


def user_errors() -> tuple[type[Exception], ...]:
    """The errors that say what the user must change (a key, a file:line, a name): exit code 2, one line."""
    from .config import ConfigError
    from .data import DataError
    from .data.dialogues import DialogueError
    from .distill.store import DistillError
    from .eval.bench_runner import EvalError
    from .eval.report import ReportError
    from .models import ModelNotFoundError
    from .rollout.chat import ChatTemplateError
    from .runtime import CheckpointError, SetupError

    return (
        ConfigError,
        DataError,
        DialogueError,
        ModelNotFoundError,
        ChatTemplateError,
        EvalError,
        CheckpointError,
        SetupError,
        ReportError,
        DistillError,
        FileNotFoundError,
    )


def one_line(err: BaseException) -> str:
    """An error's message on one line (a library's multi-line message, e.g. the Hub's, squeezed)."""
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """``rema ...``: every error is one line on stderr without a traceback (exit 2 for the user's to fix, 1 for
    others); ``--debug`` anywhere on the line, or ``REMA_DEBUG=1``, lets the traceback through."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("REMA_DEBUG", "").strip() not in ("", "0")
    args = parse_args([a for a in argv if a != "--debug"])
    # `kill` (SIGTERM) exits through Python, so finalizers run: vLLM's engine processes are stopped and its
    # weight folders in /dev/shm removed instead of outliving us. `rema train` replaces this with a graceful
    # stop (finish the step, save a checkpoint) while it trains.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        if isinstance(err, user_errors()):
            print(f"error: {one_line(err)}", file=sys.stderr)
            return 2
        print(
            f"error: {type(err).__name__}: {one_line(err)} (rema --debug, or REMA_DEBUG=1, shows where)",
            file=sys.stderr,
        )
        return 1


def _run(args) -> int:
    if args.command == "report" and args.run_dir:  # a rema reproduce folder: its experiments on one page
        from .reproduce.page import build_page, is_reproduce_folder

        if is_reproduce_folder(args.run_dir):
            print(f"wrote {build_page(args.run_dir)}")
            return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
