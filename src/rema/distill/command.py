"""``rema distill``: the command line. Like every config command it reads ``[CONFIG] [section.key=value ...]``;
its flags are shorthands for ``distill.*`` keys (and ``--method``/``--max-turns`` for the rollout keys that fix the
dialogue format, the ones ``rema sft`` checks the file against).

    rema distill --input hf:GAIR/LIMO --model gpt-4o --out limo_dialogues.jsonl
    rema distill configs/rema_multi_turn_30x512.yaml --input limo.jsonl --base-url http://localhost:8000/v1 \\
        --model Qwen/Qwen2.5-72B-Instruct --concurrency 16
"""

from __future__ import annotations

import argparse
import sys

from ..cli_args import Shorthands, add_config_args, config_from_args
from ..config import METHODS, method_overrides


def add_distill_command(sub) -> None:
    """Register ``rema distill`` on the ``rema`` sub-command parser."""

    c = sub.add_parser(
        "distill",
        help="cold-start dialogues from a teacher model (any OpenAI-compatible endpoint) for rema sft",
        description="rema distill [CONFIG] [section.key=value ...] --input PROBLEMS --model TEACHER [flags]: ask a "
        "teacher to rewrite each solved problem as a dialogue in the method's format, keep those that "
        "pass the checks (format, no leaked answer, correct boxed answer) in --out, the others in "
        "<out>.rejected.jsonl; a re-run resumes. Guide: docs/distill.md. Each flag is a shorthand for "
        "the config key in brackets; dotted overrides win over flags.",
    )
    add_config_args(c, "distill.temperature=0.3 rollout.max_turns=8")
    sh = Shorthands()
    _add_problem_args(sh, c)
    fmt = c.add_argument_group("dialogue format (what rema sft will read)")
    sh.add(
        fmt,
        "--method",
        choices=[m for m in METHODS if m != "rema-actions"],
        key=method_overrides,
        help="default: the config's [rollout.method, rollout.mode]",
    )
    sh.add(fmt, "--max-turns", type=int, key="rollout.max_turns", help="most MTA→RA rounds of a multi-turn dialogue")
    _add_teacher_args(sh, c)
    sh.add(c, "--no-progress", action="store_const", const=False, key="log.progress", help="no progress bar")
    c.set_defaults(func=cmd_distill, shorthands=sh)


def _add_problem_args(sh: Shorthands, c: argparse.ArgumentParser) -> None:
    """``rema distill``'s "problems and output" flags: the solved problems, their columns, the dialogue file."""
    src = c.add_argument_group("problems and output")
    sh.add(
        src,
        "--input",
        key="distill.input",
        help="solved problems: .jsonl/.json/.parquet, a datasets folder, or hf:owner/name[:config][:split]",
    )
    sh.add(
        src,
        "--out",
        key="distill.out",
        help="dialogue JSONL to append to (resumed); rejects go to <stem>.rejected.jsonl",
    )
    sh.add(src, "--limit", type=int, key="distill.limit", help="first N rows only")
    sh.add(src, "--question-field", key="data.question_field", help="question column")
    sh.add(src, "--answer-field", key="data.answer_field", help="reference answer column")
    sh.add(src, "--solution-field", key="distill.solution_field", help="worked solution column")
    sh.add(src, "--id-field", key="distill.id_field", help="stable row id column (the resume key)")
    sh.add(src, "--split", key="distill.split", help="split of a Hub dataset or folder")
    sh.add(src, "--data-dir", key="data.data_dir", help="folder to resolve a relative --input against")
    sh.add(
        src,
        "--retry-rejected",
        action="store_const",
        const=True,
        key="distill.retry_rejected",
        help="ask again for rows recorded as rejected",
    )


def _add_teacher_args(sh: Shorthands, c: argparse.ArgumentParser) -> None:
    """``rema distill``'s "teacher" flags: the endpoint, the model, and how it is asked."""
    t = c.add_argument_group("teacher")
    sh.add(t, "--base-url", key="distill.base_url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    sh.add(t, "--model", key="distill.teacher", help="teacher model name at that endpoint")
    sh.add(t, "--api-key-env", key="distill.api_key_env", help="environment variable holding the API key")
    sh.add(t, "--concurrency", type=int, key="distill.concurrency", help="requests in flight")
    sh.add(t, "--max-retries", type=int, key="distill.max_retries", help="retries on 429/5xx/timeouts")
    sh.add(t, "--timeout", type=float, key="distill.timeout_s", help="seconds per request")
    sh.add(t, "--temperature", type=float, key="distill.temperature", help="teacher sampling temperature")
    sh.add(t, "--max-tokens", type=int, key="distill.max_tokens", help="completion-token limit of one reply")


def cmd_distill(args: argparse.Namespace) -> int:
    """Run ``rema distill``; 0 when every row was asked, 1 when some requests failed (a re-run asks them), 2 on
    a setup error."""
    from rich.console import Console

    from ..config import ConfigError
    from ..data import DataError
    from .run import run_distill
    from .store import DistillError
    from .teacher import TeacherError

    console = Console(stderr=True)
    if not console.is_terminal:  # a log file: whole progress lines, not rich's 80 columns
        console = Console(stderr=True, width=160)
    try:
        cfg = config_from_args(args)
        if cfg is None:
            return 0
        summary = run_distill(cfg, console=console)
    except (ConfigError, DataError, DistillError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TeacherError as err:
        print(f"error: the teacher failed: {err} (rows written so far are kept; fix it and run again)", file=sys.stderr)
        return 2
    print(summary.line())
    if summary.failed:
        first = next(iter(summary.failed.items()))
        print(
            f"{len(summary.failed)} rows failed and were not recorded (e.g. {first[0]}: {first[1]}); run the same "
            "command again to ask for them",
            file=sys.stderr,
        )
        return 1
    return 0
