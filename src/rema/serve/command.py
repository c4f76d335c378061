"""``rema serve RUN_OR_MODEL``: load the model(s), build the app, run uvicorn.

The config is built as every command builds its own (:func:`rema.cli_args.config_from_args`): the base is
CONFIG, else the run's ``config.yaml`` (method, mode, task, limits, dtype), else the defaults; then what
RUN_OR_MODEL stands for, the flags (shorthands for config keys), the dotted overrides. The weights are the
run's ``final/`` (one model, or ``mta/`` + ``ra/``), loaded by :func:`rema.runtime.load_engines`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_args import (
    Shorthands,
    add_config_args,
    add_generation_shorthands,
    as_override,
    config_from_args,
    model_source,
    ra_model,
)
from ..config import METHODS, Config, method_overrides


def _add_serve_args(c: argparse.ArgumentParser) -> Shorthands:
    sh = Shorthands()
    c.add_argument("source", metavar="RUN_OR_MODEL",
                   help="a training run folder (its final/ weights, shared or mta/ + ra/, and its config.yaml), or "
                        "a model: built-in name, Hub id or folder")
    add_config_args(c, "rollout.max_turns=4 serve.max_concurrency=16")
    net = c.add_argument_group("server")
    sh.add(net, "--host", key="serve.host", help="address to listen on (0.0.0.0: every interface; no authentication)")
    sh.add(net, "--port", type=int, key="serve.port", help="TCP port")
    sh.add(net, "--max-concurrency", type=int, key="serve.max_concurrency",
           help="requests held at once (answered or waiting; the largest batch); one more gets 429")
    sh.add(net, "--served-model-name", key="serve.model_id", help="the model's name in /v1/models and in requests")
    gen = c.add_argument_group("what runs")
    sh.add(gen, "--ra-model", key=ra_model, help="with a model: separate weights, the reasoner's model [model.ra_name, "
                                                 "train.shared_weights=false]")
    sh.add(gen, "--method", choices=list(METHODS), key=method_overrides,
           help="default: the config's (a run's own) [rollout.method, rollout.mode, rollout.action_set]")
    sh.add(gen, "--temperature", type=float, key="rollout.eval_temperature",
           help="temperature of requests that do not set one (0 = greedy)")
    add_generation_shorthands(sh, gen)
    sh.add(gen, "--dtype", key="model.dtype", help="weights' dtype")
    sh.add(gen, "--eager", action="store_const", const=True, key="rollout.vllm_enforce_eager",
           help="vLLM without compiling its model (starts in seconds, decodes slower)")
    return sh


def serve_config(args: argparse.Namespace) -> Config | None:
    """The Config of a parsed ``rema serve`` line (see the module docstring for the order); None when
    ``--help-config`` printed it."""
    return config_from_args(args, [as_override(k, v) for k, v in model_source(args.source)])


def model_id(cfg: Config) -> str:
    """The served name: ``serve.model_id``, else the run folder's name, else a model folder's name, else the
    model's own name (a Hub id stays whole, ``Qwen/Qwen2.5-0.5B-Instruct``, as ``vllm serve`` names it)."""
    if cfg.serve.model_id:
        return cfg.serve.model_id
    if cfg.eval.run:
        return Path(cfg.eval.run).resolve().name
    folder = Path(cfg.model.name.rstrip("/")).expanduser()
    return (folder.resolve().name or cfg.model.name) if folder.is_dir() else cfg.model.name


def cmd_serve(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..runtime import load_engines

    console = Console(stderr=True)
    cfg = serve_config(args)  # errors are rema's one-line errors (exit 2)
    if cfg is None:
        return 0
    from .service import prompt_set

    prompt_set(cfg)  # an unknown method/task fails before the model loads
    with console.status(f"loading the model(s) and starting the {cfg.rollout.engine} engine …"):
        engines = load_engines(cfg)
    try:
        import uvicorn

        from .app import create_app
    except ImportError as err:
        console.print(f"[red]error:[/red] rema serve needs FastAPI and uvicorn: pip install 'rema[serve]' ({err})")
        return 2
    from .service import Service

    service = Service(cfg, engines, model_id(cfg))
    app = create_app(service, cfg.serve)
    host, port = cfg.serve.host, cfg.serve.port
    console.print(f"serving [bold]{service.model_id}[/bold] ({service.describe()}) on http://{host}:{port}/v1 "
                  f"— at most {cfg.serve.max_concurrency} requests at once; Ctrl-C stops")
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        service.close()
    return 0


def add_serve_command(sub) -> None:
    """Register ``rema serve`` on the ``rema`` argparse subparsers."""
    c = sub.add_parser(
        "serve", help="serve a trained pair (or a model) behind an OpenAI-compatible API (/v1/chat/completions)",
        description="rema serve RUN_OR_MODEL [CONFIG] [section.key=value ...] [flags]: answer chat-completion "
                    "requests with the ReMA dialogue (the run's method, limits and weights), batching concurrent "
                    "requests into one engine call per turn. Each flag is a shorthand for the config key in "
                    "brackets; dotted overrides win over flags. See docs/serve.md.")
    c.set_defaults(func=cmd_serve, shorthands=_add_serve_args(c))

