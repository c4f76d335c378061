from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from rema.rollout.engine import Completion, Engine

# Unit tests generate with the transformers engine (in-process, seconds); `rollout.engine: auto` would pick
# vLLM where it is installed. vLLM itself is tested in test_vllm_engine.py, which asks for it by name.
os.environ["REMA_ENGINE"] = "hf"

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny random Llama (built in-process, offline)."""
    from rema.models import load_model

    return load_model("tiny-random", seed=0)


def problem(pid: str = "p0", question: str = "What is 2 + 3?", answer: str = "5", **meta):
    return SimpleNamespace(id=pid, question=question, answer=answer, meta=meta)


class ScriptedEngine(Engine):
    """Returns scripted replies: ``script(role_hint, call_index, prompt_ids) -> (text, finish_reason)``.

    Replies are encoded with the tokenizer; an EOS id is appended when the finish reason is ``stop``.
    Every prompt it receives is recorded, so tests can check what the model would have seen.
    """

    def __init__(self, tokenizer, script):
        self.tokenizer = tokenizer
        self.script = script
        self.calls: list[list[list[int]]] = []

    def generate(self, prompts, params):
        self.calls.append([list(p) for p in prompts])
        outs = []
        for prompt in prompts:
            text, reason = self.script(len(self.calls) - 1, prompt)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if reason == "stop":
                ids = ids + [self.tokenizer.eos_token_id]
            outs.append(
                Completion(ids, [-0.5] * len(ids), reason, self.tokenizer.eos_token_id if reason == "stop" else None)
            )
        return outs


def record_prompts(engine) -> list[list[int]]:
    """Wrap ``engine.generate`` so every prompt it receives is appended to the returned list."""
    seen: list[list[int]] = []
    real_generate = engine.generate

    def recording(prompts, params):
        seen.extend(list(p) for p in prompts)
        return real_generate(prompts, params)

    engine.generate = recording
    return seen


def assert_token_in_token_out(episodes, seen: list[list[int]]) -> None:
    """Training rows hold exactly the sampled ids and log-probs, and each turn's prompt is a row prefix."""
    for ep in episodes:
        for agent, view in ep.views.items():
            assert len(view.input_ids) == len(view.mask) == len(view.logprobs) == len(view.turn_ids)
            for turn in ep.turns_of(agent):
                pos = [i for i, t in enumerate(view.turn_ids) if t == turn.index]
                assert [view.input_ids[i] for i in pos] == turn.token_ids  # the ids sampled, untouched
                assert [view.logprobs[i] for i in pos] == turn.logprobs
                assert all(view.mask[i] == 1 for i in pos)
                assert pos[0] == turn.context_len
                assert view.input_ids[: turn.context_len] in seen  # what the model saw is the row's prefix
            assert sum(view.mask) == sum(len(t.token_ids) for t in ep.turns_of(agent))
