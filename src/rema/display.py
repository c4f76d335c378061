"""Terminal rendering of dialogues (rich): MTA and RA messages in two colours, token counts, end code."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from .rollout.episode import Episode

ROLE_STYLE = {"mta": ("Meta-thinker", "magenta"), "ra": ("Reasoner", "cyan")}
SINGLE_AGENT_STYLE = ("Solver", "cyan")


def print_episode(ep: Episode, console: Console | None = None) -> None:
    """Print one episode as coloured panels, one per message, then a summary line."""
    console = console or Console()
    single = "mta" not in ep.views
    console.print(Panel(Text(ep.question), title="Question", border_style="white", title_align="left"))
    for turn in ep.turns:
        label, colour = SINGLE_AGENT_STYLE if single else ROLE_STYLE[turn.agent]
        extra = f" · action {turn.action or 'INVALID'}" if turn.format_ok is not None else ""
        cut = " · hit token limit" if turn.truncated else ""
        console.print(
            Panel(
                Text(turn.text or "(empty)"),
                title=f"{label} · turn {turn.index + 1}",
                subtitle=f"{len(turn.token_ids)} tokens{cut}{extra}",
                border_style=colour,
                title_align="left",
                subtitle_align="right",
            )
        )
    summary = Text.assemble(
        ("end: ", "bold"),
        (ep.end_code or "?", "bold yellow"),
        f"   rounds: {ep.n_rounds}   tokens: {sum(len(t.token_ids) for t in ep.turns)}",
    )
    if ep.reward:
        parts = ", ".join(f"{a}={r:+.2f}" for a, r in ep.reward.items())
        summary.append(f"   reward: {parts}")
    if "extracted" in ep.meta:
        summary.append(f"   extracted: {ep.meta['extracted']!r}   gold: {ep.answer!r}")
    console.print(summary)
