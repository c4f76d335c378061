"""Episode records: what happened in one dialogue, as data (token ids, log-probs, tags, end code)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

END_CODES = ("finished", "max_turns", "context_exceeded", "truncated")
"""``finished``: the MTA said [FINISH] (or single turn / single agent completed) and the RA answered;
``max_turns``: the turn limit was hit; ``context_exceeded``: the next turn's input plus its token budget
would not fit ``max_context_tokens`` (checked before generating); ``truncated``: a turn hit its token
limit and ``stop_on_truncation`` is on."""


@dataclass
class Turn:
    """One message written by one agent."""

    agent: str
    """``"mta"`` or ``"ra"``."""
    index: int
    """Turn index within this agent's messages (0, 1, ...)."""
    text: str
    """Decoded text, for humans and graders only; training uses ``token_ids``."""
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    """``"stop"`` or ``"length"``."""
    context_len: int
    """Tokens in the agent's context when this turn was generated."""
    action: str | None = None
    """Action-set mode: DECOMPOSE / REWRITE / EMPTY, or None when the JSON was invalid."""
    format_ok: bool | None = None
    """Action-set mode: whether the MTA's JSON parsed."""

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass
class AgentView:
    """One agent's whole chat as token ids: the training row for that agent.

    ``input_ids[i]`` is trained where ``mask[i] == 1`` (ids that agent sampled); ``logprobs[i]`` is the
    sampling log-prob there (0 elsewhere); ``turn_ids[i]`` is the agent's turn index there (-1 elsewhere).
    """

    agent: str
    input_ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turn_ids: list[int] = field(default_factory=list)

    def extend_context(self, ids: list[int]) -> None:
        self.input_ids += ids
        self.mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)
        self.turn_ids += [-1] * len(ids)

    def extend_sampled(self, ids: list[int], logprobs: list[float], turn: int) -> None:
        self.input_ids += ids
        self.mask += [1] * len(ids)
        self.logprobs += list(logprobs)
        self.turn_ids += [turn] * len(ids)

    @property
    def n_trained(self) -> int:
        return sum(self.mask)


@dataclass
class Episode:
    """One sampled dialogue for one problem."""

    episode_id: int
    problem_id: str
    question: str
    answer: str
    sample_index: int
    """Which of the G samples of this problem (groups are formed by ``problem_id`` and agent)."""
    method: str
    """Prompt set name, e.g. ``rema-multi`` or ``vrp``."""
    turns: list[Turn] = field(default_factory=list)
    views: dict[str, AgentView] = field(default_factory=dict)
    end_code: str | None = None
    reward: dict[str, float] = field(default_factory=dict)
    """Per-agent scalar reward, filled by the reward stage."""
    reward_parts: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per-agent reward components (correctness, format terms, masking)."""
    meta: dict = field(default_factory=dict)

    @property
    def agents(self) -> list[str]:
        return list(self.views)

    def turns_of(self, agent: str) -> list[Turn]:
        return [t for t in self.turns if t.agent == agent]

    @property
    def final_response(self) -> str:
        """The RA's last message: what is graded ("" if the RA never spoke)."""
        ra = self.turns_of("ra")
        return ra[-1].text if ra else ""

    @property
    def n_rounds(self) -> int:
        return len(self.turns_of("ra"))

    def to_dict(self, *, with_tokens: bool = False) -> dict:
        """JSON-able record; token-level views only when ``with_tokens`` (they are large)."""
        d = asdict(self)
        if not with_tokens:
            d.pop("views")
            for t in d["turns"]:
                t["n_tokens"] = len(t.pop("token_ids"))
                t.pop("logprobs")
        return d
