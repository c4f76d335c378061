"""What the server serves: a config, the engines of its model(s), and the ReMA dialogue played on a batch.

:class:`Service` is the server's model side, with no HTTP in it: ``check`` refuses a question that cannot fit
the context before it queues, ``run_batch`` plays the method's dialogue (``rema.rollout.rollout``: multi turn,
single turn or a single-agent baseline, math or judge, shared or separate weights, as the config says) ``n``
times for each request of a batch, each with its own sampling settings, one engine call per agent turn for the
whole batch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from types import SimpleNamespace

from ..config import Config, ConfigError
from ..prompts import PromptSet, get_prompt_set
from ..rollout import ChatCodec, Engine, Episode, SamplingParams, rollout
from ..rollout.protocol import question_text
from .api import ChatRequest, Limits, RequestError


def prompt_set(cfg: Config) -> PromptSet:
    """The prompt set of the config's method and task (``Config.method_name``)."""
    try:
        return get_prompt_set(cfg.method_name)
    except KeyError:
        raise ConfigError(f"no prompt set '{cfg.method_name}' for rollout.method={cfg.rollout.method}, "
                          f"rollout.task={cfg.rollout.task}; see rema.prompts") from None


class Service:
    """The dialogue behind the API.

    Args:
        cfg: the config (method, mode, task, limits; ``rollout.eval_temperature`` is a request's default).
        engines: ``{"mta": ..., "ra": ...}``, the same object twice for shared weights (``load_engines``).
        model_id: the name requests use (``/v1/models``).
    """

    def __init__(self, cfg: Config, engines: dict[str, Engine], model_id: str):
        self.cfg, self.engines, self.model_id = cfg, engines, model_id
        self.prompts = prompt_set(cfg)
        self.judge = cfg.rollout.task == "judge"
        r = cfg.rollout
        self.limits = Limits(max_tokens_per_turn=r.max_tokens_per_turn, default_temperature=r.eval_temperature,
                             default_top_p=r.top_p, judge=self.judge, max_n=cfg.serve.max_concurrency)
        first = "mta" if self.prompts.mta is not None else "ra"
        # a copy of the tokenizer for the event loop's thread: a fast tokenizer is not safe to call from two
        # threads at once, and the worker thread's engine uses the original
        self._codec = ChatCodec(copy.deepcopy(engines[first].tokenizer))
        self._system = self.prompts.mta if first == "mta" else self.prompts.ra

    def describe(self) -> str:
        engines = {id(e): e for e in self.engines.values()}
        weights = "shared weights" if len(engines) == 1 else "separate weights"
        return f"{self.prompts.name}, {weights}, {next(iter(engines.values())).describe()}"

    def check(self, req: ChatRequest) -> int:
        """The opening prompt's tokens (the first agent's system prompt and question); 400 when it leaves no
        room for a turn of ``req.max_tokens`` in ``rollout.max_context_tokens``."""
        problem = SimpleNamespace(id="request", question=req.question, answer="", meta=req.meta)
        n = len(self._codec.start(self._system, question_text(problem)))
        budget = self.cfg.rollout.max_context_tokens
        if n + req.max_tokens > budget:
            raise RequestError(400, f"the question takes {n} tokens in the prompt; with {req.max_tokens} tokens per "
                                    f"message it does not fit the context of {budget} tokens "
                                    "(rollout.max_context_tokens): shorten it or lower max_tokens",
                               param="messages", code="context_length_exceeded")
        return n

    def run_batch(self, requests: Sequence[ChatRequest]) -> list[list[Episode]]:
        """``n`` dialogues per request (its choices), all in one rollout (blocking: the batcher's worker thread
        calls it); choice ``k`` of a seeded request samples with seed ``seed + k``."""
        problems, sampling = [], []
        for i, q in enumerate(requests):
            for k in range(q.n):
                problems.append(SimpleNamespace(id=f"request-{i}-{k}", question=q.question, answer="",
                                                meta=dict(q.meta)))
                sampling.append(SamplingParams(max_tokens=q.max_tokens, temperature=q.temperature, top_p=q.top_p,
                                               seed=None if q.seed is None else q.seed + k))
        episodes = rollout(problems, self.cfg.rollout, self.engines, self.prompts, samples_per_question=1,
                           sampling=sampling)
        out, start = [], 0
        for q in requests:
            out.append(episodes[start:start + q.n])
            start += q.n
        return out

    def close(self) -> None:
        for engine in {id(e): e for e in self.engines.values()}.values():
            engine.close()
