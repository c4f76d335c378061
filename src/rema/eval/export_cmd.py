"""``rema export RUN [--step N] [--out DIR]``: a training run's checkpoint as ``save_pretrained`` model folders.

Checkpoints hold training state (trainable weights, optimizer states, RNG, data cursor), not models; this
command rebuilds the run's model(s) from its ``config.yaml``, loads a checkpoint's weights (``state.pt``, or
the sharded ``torch.distributed.checkpoint`` form of ``train.strategy=fsdp``) and writes them with LoRA merged
(:mod:`rema.runtime.runs`): ``OUT/`` for shared weights, ``OUT/mta`` and ``OUT/ra`` for separate ones,
loadable by transformers, vLLM, ``rema chat --model`` and ``rema eval --model``.

    rema export runs/demo                      # the latest checkpoint -> runs/demo/exports/step_000008
    rema export runs/demo --step 4 --out models/demo-step4
"""

from __future__ import annotations

import argparse


def cmd_export(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..runtime import CheckpointError, export_checkpoint, parse_step
    from ..runtime.runs import BEST, resolve_best

    console = Console(stderr=True, soft_wrap=True)  # a path in an error message stays on one line
    step = None
    try:
        if args.step == BEST:
            args.step = resolve_best(args.run)
    except CheckpointError as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    if args.step is not None and args.step != "latest":
        step = parse_step(args.step)
        if step is None:
            console.print(
                f"[red]error:[/red] --step {args.step!r}: give a step number (4, or step_000004), latest or best"
            )
            return 2
    try:
        with console.status(f"exporting {args.run} …"):
            out = export_checkpoint(args.run, step, args.out)
    except CheckpointError as err:
        console.print(f"[red]error:[/red] {err}")
        return 2
    print(out)
    return 0


def add_export_command(sub) -> None:
    """Register ``rema export`` on the ``rema`` argparse subparsers."""
    x = sub.add_parser(
        "export",
        help="write a run's checkpoint as a model folder (safetensors, config, tokenizer; LoRA merged)",
        description="rema export RUN [--step N] [--out DIR]: rebuild the run's model(s) from its config.yaml, load "
        "a checkpoint's weights (state.pt or FSDP shards) and write save_pretrained folders with LoRA "
        "merged: OUT/ for shared weights, OUT/mta and OUT/ra for separate ones. Prints OUT.",
    )
    x.add_argument("run", help="training run folder (config.yaml, checkpoints/)")
    x.add_argument(
        "--step",
        help="checkpoint step (4, step_000004, latest, or best: the healthy checkpoint with the "
        "best held-out accuracy; default: latest)",
    )
    x.add_argument("--out", help="output folder (default RUN/exports/step_N)")
    x.set_defaults(func=cmd_export)
