"""``rema distill``'s work: solved problems in, teacher requests out (``distill.concurrency`` at a time), every
reply checked (:mod:`.replies`) and appended to the dialogue or the rejected file (:mod:`.store`), a progress bar
with the cost-relevant counts, and a summary.

    problems (file / Hub) ─► pending = not in OUT, not in OUT.rejected ─► teacher (:mod:`.teacher`) ─►
    check_reply ─► OUT (kept, an sft.data file) | OUT.rejected (reason, reply)
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, ConfigError
from ..data import DataError, Problem, load_problems, parse_hf_spec
from ..prompts import PromptSet, TeacherPrompt, get_prompt_set, get_teacher_prompt
from .replies import REASONS, Format, check_reply
from .store import Appender, DistillError, read_rows, rejected_path, rewrite_rows
from .teacher import Teacher, TeacherError, Usage

WORDS_PER_TOKEN = 0.5
"""The teacher is asked to keep a message under ``rollout.max_tokens_per_turn * WORDS_PER_TOKEN`` words: math
text with LaTeX runs about two tokens per word, so a message the student could not write in RL is rarely asked for."""


@dataclass
class Summary:
    """What a run did (``run_*``, ``usage``) and what the files hold now (``total_*``)."""

    out: Path
    rejected: Path
    rows: int
    """Problems in the input (after ``distill.limit``)."""
    skipped: int = 0
    """Rows already in OUT or OUT.rejected when the run started."""
    run_kept: int = 0
    run_rejected: Counter = field(default_factory=Counter)
    failed: dict[str, str] = field(default_factory=dict)
    """Row id -> why its request failed for good (not recorded in any file: the next run asks again)."""
    total_kept: int = 0
    total_rejected: Counter = field(default_factory=Counter)
    usage: Usage = field(default_factory=Usage)
    torn_bytes: int = 0

    def line(self) -> str:
        """The one-line summary the command prints."""

        def reasons(c: Counter) -> str:
            return f" ({', '.join(f'{r} {c[r]}' for r in REASONS if c[r])})" if c else ""

        u = self.usage
        return (
            f"distill: this run kept {self.run_kept}, rejected {sum(self.run_rejected.values())}"
            f"{reasons(self.run_rejected)}, failed {len(self.failed)}; {self.skipped} of {self.rows} rows were "
            f"done before. Files: {self.total_kept} kept in {self.out}, {sum(self.total_rejected.values())} "
            f"rejected{reasons(self.total_rejected)} in {self.rejected}. Requests {u.requests} (retries "
            f"{u.retries}: 429 x{u.rate_limited}, 5xx x{u.server_errors}, timeouts x{u.timeouts}), tokens "
            f"{u.prompt_tokens} prompt + {u.completion_tokens} completion."
        )


def dialogue_format(cfg: Config) -> tuple[Format, PromptSet, TeacherPrompt]:
    """The format of the dialogues to write, the student's prompt set and the teacher prompt, from the config's
    method (what ``rema sft`` under the same config will check and train)."""
    r = cfg.rollout
    if r.task != "math":
        raise ConfigError(
            f"rema distill writes math dialogues graded against a reference answer; rollout.task="
            f"{r.task} is not supported"
        )
    try:
        teacher = get_teacher_prompt(cfg.method_name)
    except KeyError as err:
        raise ConfigError(f"{err.args[0]}; choose --method rema-multi, rema-single, vrp or mrp") from None
    prompts = get_prompt_set(cfg.method_name)
    multi = r.mode == "multi_turn" and prompts.mta is not None
    if multi and r.max_turns < 2:
        raise ConfigError(
            f"a multi-turn dialogue needs 2 rounds or more (the last is [FINISH] and the answer); "
            f"rollout.max_turns={r.max_turns} (--max-turns)"
        )
    fmt = Format(
        two_agents=prompts.mta is not None,
        multi_turn=multi,
        max_turns=r.max_turns,
        plan_then_solution=cfg.method_name == "mrp",
    )
    return fmt, prompts, teacher


def load_input(cfg: Config) -> list[tuple[Problem, str]]:
    """``(problem, worked solution)`` for every input row; ids must be unique (they key the resume)."""
    d = cfg.distill
    if not d.input:
        raise DistillError(
            "no input: set distill.input (--input FILE.jsonl|.json|.parquet, a datasets folder, or "
            "hf:owner/name[:config][:split], e.g. hf:GAIR/LIMO)"
        )
    source, config, split = d.input, None, d.split
    if source.startswith("hf:"):
        try:
            source, config, split = parse_hf_spec(source, split)
        except DataError as err:
            raise DistillError(f"distill.input: {err}") from None
    problems = load_problems(
        source,
        split=split,
        config=config,
        question_field=cfg.data.question_field,
        answer_field=cfg.data.answer_field,
        id_field=d.id_field,
        task="math",
        limit=d.limit,
        data_dir=cfg.data.data_dir,
    )
    if not problems:
        raise DistillError(f"distill.input={d.input!r} has no rows")
    seen: dict[str, int] = {}
    out = []
    for i, p in enumerate(problems):
        if p.id in seen:
            raise DistillError(
                f"row ids repeat in {d.input}: {p.id!r} (rows {seen[p.id] + 1} and {i + 1}); resume "
                "keys on them: pass an id column that is unique (--id-field), or none (row numbers)"
            )
        seen[p.id] = i
        solution = p.meta.get(d.solution_field)
        if not isinstance(solution, str) or not solution.strip():
            raise DataError(
                f"{p.id}: no worked solution in field {d.solution_field!r} (fields: "
                f"{', '.join(sorted(map(str, p.meta)))}); pass --solution-field NAME (distill.solution_field)"
            )
        out.append((p, solution))
    return out


def _check_resume(
    rows: list[dict], by_id: dict[str, Problem], where: Path, prompt_set: str, max_turns: int | None = None
) -> None:
    """An output made from another input, for another method, or with dialogues longer than ``max_turns``
    rounds (``rema sft`` would refuse the file) fails instead of mixing rows."""
    for row in rows:
        p = by_id.get(row["id"])
        if p is not None and row.get("question") != p.question:
            raise DistillError(
                f"{where}: row {row['id']!r} holds another question than the input's row with that id: "
                "the file was made from another input (or rows moved and ids are row numbers); use "
                "another --out, or an id column (--id-field)"
            )
        made_for = (row.get("meta") or {}).get("prompt_set")
        if made_for is not None and made_for != prompt_set:
            raise DistillError(
                f"{where}: holds {made_for} dialogues, this run writes {prompt_set} ones; use another "
                "--out (or the same --method as before)"
            )
        rounds = sum(t.get("agent") == "mta" for t in row.get("turns") or [])
        if max_turns is not None and rounds > max_turns:
            raise DistillError(
                f"{where}: row {row['id']!r} has {rounds} rounds, more than rollout.max_turns="
                f"{max_turns} (--max-turns) allows; use the --max-turns it was made with, or another "
                "--out"
            )


def api_key(cfg: Config) -> str:
    """The key from ``distill.api_key_env``; without one only a local endpoint (``distill.base_url``) is allowed,
    which ``vllm serve`` accepts unless it was started with ``--api-key``."""
    d = cfg.distill
    key = os.environ.get(d.api_key_env, "")
    if key:
        return key
    if d.base_url:
        return "no-key"  # the openai client insists on a string; servers without --api-key ignore it
    raise DistillError(
        f"${d.api_key_env} is not set: export the teacher's API key there (or name another variable "
        "with --api-key-env), or give --base-url of a local server that needs none"
    )


def run_distill(cfg: Config, *, console=None, client=None) -> Summary:
    """Distil ``cfg.distill.input`` into ``cfg.distill.out`` (resuming it); returns the :class:`Summary`.

    ``client``: an ``openai.AsyncOpenAI``-like client (default: one for ``distill.base_url``)."""
    d = cfg.distill
    if not d.teacher:
        raise DistillError(
            "no teacher model: set distill.teacher (--model NAME: gpt-4o, or the name vllm serve was started with)"
        )
    fmt, prompts, tprompt = dialogue_format(cfg)
    jobs = load_input(cfg)
    out = Path(d.out)
    rej = rejected_path(out)
    kept_rows, torn_kept = read_rows(out)
    rej_rows, torn_rej = read_rows(rej)
    by_id = {p.id: p for p, _ in jobs}
    _check_resume(kept_rows, by_id, out, prompts.name, fmt.max_turns if fmt.multi_turn else None)
    _check_resume(rej_rows, by_id, out, prompts.name)
    if d.retry_rejected:
        retry = {r["id"] for r in rej_rows if r["id"] in by_id}
        if retry:
            rej_rows = [r for r in rej_rows if r["id"] not in retry]
            rewrite_rows(rej, rej_rows)
    done = {r["id"] for r in kept_rows} | {r["id"] for r in rej_rows}
    pending = [(p, s) for p, s in jobs if p.id not in done]
    summary = Summary(
        out,
        rej,
        rows=len(jobs),
        skipped=len(jobs) - len(pending),
        torn_bytes=torn_kept + torn_rej,
        total_kept=len(kept_rows),
        total_rejected=Counter(r.get("reason") for r in rej_rows),
    )
    if summary.torn_bytes and console is not None:
        console.print(
            f"dropped a torn last line ({summary.torn_bytes} bytes) left by an interrupted run; that row is asked again"
        )
    if pending:
        asyncio.run(_distill(pending, cfg, fmt, prompts, tprompt, summary, console=console, client=client))
    return summary


async def _distill(
    pending, cfg: Config, fmt: Format, prompts: PromptSet, tprompt: TeacherPrompt, summary: Summary, *, console, client
) -> None:
    """Ask the teacher for every pending ``(problem, solution)``, ``distill.concurrency`` requests at a time, and
    record each reply's verdict (:class:`_Asker`); the files and the client are closed however it ends."""
    d = cfg.distill
    client = client if client is not None else _client(cfg)
    teacher = Teacher(
        client,
        d.teacher,
        temperature=d.temperature,
        max_tokens=d.max_tokens,
        max_retries=d.max_retries,
        backoff_base_s=d.backoff_s,
    )
    summary.usage = teacher.usage
    queue: asyncio.Queue = asyncio.Queue()
    for job in pending:
        queue.put_nowait(job)
    asker = _Asker(
        cfg,
        fmt,
        prompts,
        tprompt,
        teacher,
        summary,
        kept=Appender(summary.out),
        rejected=Appender(summary.rejected),
        progress=_Progress(len(pending), summary, console, enabled=cfg.log.progress),
    )

    async def worker() -> None:
        while not queue.empty():
            await asker.ask(*queue.get_nowait())

    workers = [asyncio.create_task(worker()) for _ in range(min(d.concurrency, len(pending)))]
    try:
        with asker.progress:
            await asyncio.gather(*workers)
    finally:  # a fatal error in one worker (or Ctrl-C) stops the others before the files close
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        asker.kept.close()
        asker.rejected.close()
        await client.close()


def _client(cfg: Config):
    """An ``openai.AsyncOpenAI`` client for ``distill.base_url`` (retries are the :class:`Teacher`'s own)."""
    try:
        from openai import AsyncOpenAI
    except ImportError:
        raise DistillError("rema distill needs the openai client: pip install 'rema[distill]'") from None
    d = cfg.distill
    return AsyncOpenAI(base_url=d.base_url, api_key=api_key(cfg), max_retries=0, timeout=d.timeout_s)


@dataclass
class _Asker:
    """One request's work: the teacher's messages for a problem, its reply checked (:func:`check_reply`) and
    written to the kept or the rejected file, the counts of :class:`Summary` and the progress bar advanced."""

    cfg: Config
    fmt: Format
    prompts: PromptSet
    tprompt: TeacherPrompt
    teacher: Teacher
    summary: Summary
    kept: Appender
    rejected: Appender
    progress: _Progress

    def grade(self, response: str, gold: str):
        from ..rewards.math_grader import grade_math

        return grade_math(response, gold, timeout_s=self.cfg.reward.grader_timeout_s)

    async def ask(self, p: Problem, solution: str) -> None:
        """Ask for ``p``'s dialogue and record the verdict; a request that failed for good is counted in
        ``summary.failed`` (a re-run asks again), a fatal teacher error is raised."""
        cfg, summary, tprompt, prompts = self.cfg, self.summary, self.tprompt, self.prompts
        max_words = max(16, int(cfg.rollout.max_tokens_per_turn * WORDS_PER_TOKEN))
        messages = tprompt.messages(
            prompts,
            question=p.question,
            solution=solution,
            answer=p.answer,
            max_rounds=cfg.rollout.max_turns,
            max_words=max_words,
        )
        try:
            reply = await self.teacher.ask(messages)
        except TeacherError as err:
            if err.fatal:
                raise
            summary.failed[p.id] = str(err)
            self.progress.advance()
            return
        meta = {
            "source": p.meta.get("source"),
            "teacher": cfg.distill.teacher,
            "teacher_prompt": tprompt.tag,
            "prompt_set": prompts.name,
            "prompts_version": prompts.version,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
        }
        verdict = await asyncio.to_thread(
            check_reply,
            reply.text,
            reply.finish_reason,
            question=p.question,
            answer=p.answer,
            fmt=self.fmt,
            grade=self.grade,
            id=p.id,
            meta=meta,
        )
        if verdict.kept:
            self.kept.write(verdict.dialogue.to_dict())
            summary.run_kept += 1
            summary.total_kept += 1
        else:
            self.rejected.write(
                {
                    "id": p.id,
                    "reason": verdict.reason,
                    "detail": verdict.detail,
                    "question": p.question,
                    "answer": p.answer,
                    "reply": reply.text,
                    "finish_reason": reply.finish_reason,
                    "meta": meta,
                }
            )
            summary.run_rejected[verdict.reason] += 1
            summary.total_rejected[verdict.reason] += 1
        self.progress.advance()


class _Progress:
    """A rich progress bar over the pending rows with kept / rejected / failed and the request and token counts."""

    def __init__(self, total: int, summary: Summary, console, *, enabled: bool):
        self.summary = summary
        self.bar = None
        if enabled and console is not None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("distill"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}"),
                console=console,
                transient=False,
            )
            self.task = self.bar.add_task("distill", total=total, stats=self._stats())

    def _stats(self) -> str:
        s, u = self.summary, self.summary.usage
        return (
            f"kept {s.run_kept} · rejected {sum(s.run_rejected.values())} · failed {len(s.failed)} · "
            f"requests {u.requests} (retries {u.retries}) · tokens {u.prompt_tokens}+{u.completion_tokens}"
        )

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, stats=self._stats())

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
