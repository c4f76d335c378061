"""The generation backend interface: token ids in, token ids + sampling log-probs out.

Every engine (the transformers one here, vLLM later) implements :class:`Engine`. Prompts are lists of token
ids, never text, so the rollout protocol controls tokenization exactly (token-in/token-out). Log-probs are
those of the distribution the token was drawn from *before* top-p truncation: ``log_softmax(logits / T)``
(``T = 1`` for greedy), the same quantity the trainer recomputes, so the two can be compared.
"""

from __future__ import annotations

import array
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is sampled."""

    max_tokens: int
    """Hard limit on new tokens for this sequence; hitting it gives ``finish_reason == "length"``."""
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off)."""
    stop: tuple[str, ...] = ()
    """Stop strings: generation ends once the decoded new text contains one (the tokens are kept)."""
    seed: int | None = None
    """This sequence's own sampling seed (``rema serve``'s ``seed``): its draws come from
    :func:`sequence_seed` of it and the prompt, so the same seed and prompt sample the same tokens whatever else is
    in the batch. None: the engine's own generator (training)."""


def sequence_seed(seed: int, prompt: list[int]) -> int:
    """The seed of one sequence's draws: ``seed`` mixed with its prompt, so each turn of a seeded dialogue (a longer
    prompt every time) draws afresh, and the same dialogue replays exactly."""
    digest = hashlib.blake2b(f"{seed}:".encode() + array.array("q", prompt).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@dataclass
class Completion:
    """One generated sequence."""

    token_ids: list[int]
    """Sampled ids, in order, including the EOS token when the model produced one."""
    logprobs: list[float]
    """Log-prob of each sampled id under ``log_softmax(logits / T)``; same length as ``token_ids``."""
    finish_reason: str
    """``"stop"`` (EOS or a stop string) or ``"length"`` (hit ``max_tokens``)."""
    stop_reason: str | int | None = None
    """The EOS id or stop string that ended it; None for ``"length"``."""
    extra: dict = field(default_factory=dict)


class Engine(ABC):
    """A batched sampler over token ids."""

    tokenizer = None
    """The tokenizer whose ids the engine speaks."""

    @abstractmethod
    def generate(self, prompts: list[list[int]], params: list[SamplingParams]) -> list[Completion]:
        """Generate one completion per prompt (``len(prompts) == len(params)``), in one batched call."""

    def describe(self) -> str:
        """A short human-readable name (shown when a run starts)."""
        return type(self).__name__

    def sync_weights(self, model) -> dict:
        """Make the engine sample from ``model``'s current weights; returns timing/check metrics."""
        return {}

    @property
    def needs_sync(self) -> bool:
        """Whether the engine lost its weights (vLLM's level-2 sleep) and must be synced before it generates,
        whether or not its model changed."""
        return False

    def end_rollout(self) -> None:  # noqa: B027 - engines that serve one process keep this
        """Called once at the end of every rollout, after its last ``generate``: an engine whose calls are
        collective over several processes (:class:`rema.rollout.tp_group.TPGroupEngine`) waits there until
        they have all ended theirs."""

    def release_memory(self) -> dict:
        """Called between a rollout and the update: give back memory only sampling needs (e.g. a KV cache).

        Returns metrics (may be empty). The next ``generate`` or ``sync_weights`` works as before."""
        return {}

    def close(self) -> None:  # noqa: B027 - engines without processes or files keep this
        """Release what the engine holds outside this process (processes, files)."""

    def state_dict(self) -> dict:
        """Sampler RNG state, so a resumed run samples the same tokens."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 - engines without RNG state keep this
        """Restore what :meth:`state_dict` returned."""

    def reseed(self, salt: int) -> None:  # noqa: B027 - engines that do not sample (replay, scripts) keep this
        """Sample from a new stream from now on: the engine's seed mixed with ``salt`` (a rollback replays its
        steps with other samples, ``train.health.reseed``)."""


def mix_seed(seed: int, salt: int) -> int:
    """A new 63-bit seed from ``seed`` and ``salt`` (stable across processes and Python versions)."""
    digest = hashlib.blake2b(f"{seed}:{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def release_memory(engines) -> dict:
    """:meth:`Engine.release_memory` once per distinct engine of ``engines`` (a role -> engine dict or a list);
    numeric metrics are summed."""
    out: dict = {}
    seen: set[int] = set()
    for engine in engines.values() if isinstance(engines, dict) else engines:
        if id(engine) not in seen:
            seen.add(id(engine))
            for k, v in engine.release_memory().items():
                out[k] = out.get(k, 0.0) + v
    return out


def stop_token_ids(tokenizer, model=None) -> set[int]:
    """EOS ids that end a turn: the tokenizer's EOS plus any the model's generation config lists."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(gen_eos)
    return ids
