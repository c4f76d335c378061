"""``rema chat QUESTION``: one episode under a config, played and (with ``--answer``) scored as training would.

The config is built by the command line's front door (:func:`rema.cli_args.config_from_args`): CONFIG (or a
run's ``config.yaml`` for ``--model RUN``), then chat's preset (vLLM eager), then the flags, then the dotted
overrides; the model(s) and engines come from the runtime (:func:`rema.runtime.load_engines`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

from .cli_args import Shorthands, add_config_args, add_generation_shorthands, config_from_args, model_source
from .config import METHODS, ConfigError, method_overrides
from .rewards.tasks import TASKS

CHAT_PRESETS = ["rollout.vllm_enforce_eager=true"]
"""``rema chat``'s own starting point over the config: one dialogue does not repay a compiled vLLM start
(~20-80 s), so it runs eager unless ``--compile`` (or ``rollout.vllm_enforce_eager=false``)."""


def cmd_chat(args) -> int:
    """Run one episode on one question and print the dialogue (scored when ``--answer`` is given)."""
    from rich.console import Console

    from .display import print_episode
    from .prompts import get_prompt_set
    from .rollout import rollout
    from .runtime import SetupError, load_engines

    console = Console(stderr=args.json)
    try:
        cfg = config_from_args(args, CHAT_PRESETS)  # a run folder (--model RUN): its config and final/ weights
        if cfg is None:
            return 0
        rcfg = cfg.rollout
        problem = chat_problem(args, rcfg.task)  # a missing response fails before any model loads
        with console.status(f"loading the model(s) and starting the {rcfg.engine} engine …"):
            engines = load_engines(cfg)
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with console.status("generating …"):
        [ep] = rollout(
            [problem],
            rcfg,
            engines,
            get_prompt_set(cfg.method_name),
            greedy=rcfg.temperature == 0,
            samples_per_question=1,
        )
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
    from .data.loaders import judge_label

    flags = {"response_a": "--response-a", "response_b": "--response-b"}
    given = {k: getattr(args, k, None) for k in flags}
    if task != "judge":
        if any(v is not None for v in given.values()):
            raise ConfigError("--response-a / --response-b are the two responses of a judge dialogue; add --task judge")
        return SimpleNamespace(id="chat", question=args.question, answer=args.answer or "", meta={})
    missing = [flags[k] for k, v in given.items() if v is None]
    if missing:
        raise ConfigError(
            f"--task judge compares two responses to QUESTION (the user prompt): give "
            f"{' and '.join(missing)} (the text, or @FILE to read it from a file)"
        )
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


def add_chat_command(sub) -> None:
    """Register ``rema chat`` on the ``rema`` argparse subparsers."""
    c = sub.add_parser(
        "chat",
        help="run one MTA↔RA dialogue on a question and print it",
        description="rema chat QUESTION [CONFIG] [section.key=value ...] [flags]: one episode under a config "
        "(default: the built-in defaults), as `rema train` would play and score it. Each flag is a "
        "shorthand for the config key in brackets; dotted overrides win over flags.",
    )
    c.add_argument(
        "question", help="the problem to solve (with --task judge: the user prompt whose two responses are judged)"
    )
    add_config_args(c, "rollout.max_turns=2 reward.format_terms=true")
    c.add_argument(
        "--answer",
        default=None,
        help="reference answer: grade the final response (config's rewards); "
        "with --task judge the better response, A or B",
    )
    c.add_argument(
        "--response-a",
        default=None,
        metavar="TEXT|@FILE",
        help="--task judge: response A to QUESTION (@FILE reads it from a file)",
    )
    c.add_argument("--response-b", default=None, metavar="TEXT|@FILE", help="--task judge: response B")
    c.add_argument("--json", action="store_true", help="print the episode record as JSON")
    c.add_argument("--tokens", action="store_true", help="with --json: include token ids, log-probs, views")
    sh = _add_chat_shorthands(c)
    c.set_defaults(func=cmd_chat, shorthands=sh)


def _add_chat_shorthands(c) -> Shorthands:
    """``rema chat``'s flags that stand for config keys (model, dtype, method, task, sampling, vLLM's compile);
    returns them with their keys."""
    sh = Shorthands()
    sh.add(
        c,
        "--model",
        key=model_source,
        help="built-in name, Hub id, local folder, or a training run folder: its final/ weights (one model, or "
        "mta/ + ra/) and its config.yaml as the base [model.name, or eval.run for a run]",
    )
    sh.add(c, "--dtype", key="model.dtype", help="weights' dtype")
    sh.add(
        c,
        "--method",
        choices=list(METHODS),
        key=method_overrides,
        help="default: the config's; a single-agent baseline (vrp, mrp) plays with one model's weights "
        "[rollout.method, rollout.mode, rollout.action_set]",
    )
    sh.add(
        c,
        "--task",
        choices=list(TASKS),
        key="rollout.task",
        help="judge: which of --response-a / --response-b answers QUESTION better, verdict [[A]] or [[B]]",
    )
    sh.add(c, "--temperature", type=float, key="rollout.temperature", help="sampling temperature, 0 = greedy")
    add_generation_shorthands(sh, c)
    sh.add(
        c,
        "--compile",
        action="store_const",
        const=True,
        key=lambda _: [("rollout.vllm_enforce_eager", False)],
        help="vLLM: compile the model (faster decoding; the start takes ~20 s, ~80 s the first time); chat "
        "runs eager otherwise [rollout.vllm_enforce_eager=false]",
    )
    return sh
