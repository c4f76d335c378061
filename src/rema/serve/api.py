"""The OpenAI chat-completions schema, as far as ``rema serve`` speaks it: a request body in, a validated
:class:`ChatRequest` out (or a :class:`RequestError` with its HTTP status); episodes in, a response or stream
chunks out. Pure functions, no server: the app (``app.py``) only moves bytes.

What maps onto what (docs/serve.md):

* the question is the text of the **last** ``user`` message (earlier messages and ``system`` messages are not
  read: each agent has its own system prompt, and a dialogue starts from one question);
* on a judge run (``rollout.task=judge``) a question that is a JSON object with ``prompt``, ``response_a``
  and ``response_b`` is rendered by the judge template, as in training; any other text is the question;
* ``temperature`` (0-2, default ``rollout.eval_temperature``) and ``top_p`` sample every turn; ``seed`` makes
  the sampling of every turn reproducible (:func:`~rema.rollout.engine.sequence_seed`);
  ``max_tokens`` / ``max_completion_tokens`` cap each message of the dialogue, at most
  ``rollout.max_tokens_per_turn`` (a larger value is lowered to it; the value used is in ``rema.limits``);
* ``n`` dialogues are played for the question (``choices``); ``stop`` (a string or up to 4) cuts each answer
  before the first stop string it holds (``finish_reason`` ``stop``); ``stream`` sends the answer as events;
* any other field that would ask something of the server (``tools``, ``logprobs``, ``response_format``, ...) is
  refused with 400 naming it (:data:`SUPPORTED`, :data:`NEUTRAL`): nothing a client asks is silently ignored;
* the answer is the RA's last message; ``rema`` holds the whole dialogue, its end code, token counts and
  the batch the request ran in; ``usage`` counts the opening prompt and every generated token.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from ..data.loaders import JUDGE_PARTS
from ..rollout.episode import Episode


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx), a message saying what to change, OpenAI's error type."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def body(self) -> dict:
        return error_body(self.message, kind=self.kind, param=self.param, code=self.code)


def error_body(message: str, *, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error object (the ``openai`` client raises ``BadRequestError`` etc. with this message)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


SUPPORTED = ("messages", "model", "temperature", "top_p", "n", "seed", "stop", "max_tokens", "max_completion_tokens",
             "stream", "stream_options", "user")
"""The request fields ``rema serve`` reads (``user`` is the caller's end-user id: bookkeeping, as at OpenAI)."""
NEUTRAL: dict[str, tuple] = {
    "logprobs": (False,), "top_logprobs": (0,), "frequency_penalty": (0,), "presence_penalty": (0,),
    "tools": ([],), "tool_choice": ("none",), "parallel_tool_calls": (True, False), "logit_bias": ({},),
    "response_format": ({"type": "text"},), "store": (False,), "metadata": ({},),
}
"""Fields accepted only with a value that asks nothing (as clients send them by default); null is accepted for
any field. Any other field, or another value, is refused with 400 naming it."""
MAX_STOPS = 4
"""``stop`` takes a string or up to this many (OpenAI's limit)."""


@dataclass(frozen=True)
class Limits:
    """What the config allows a request (``rollout.*``) and what it gets when it asks nothing."""

    max_tokens_per_turn: int
    default_temperature: float
    default_top_p: float
    judge: bool = False
    """Judge task: a JSON question with the judge parts is rendered by the judge template."""
    max_n: int = 16
    """The most dialogues one request may ask for (``n``; ``serve.max_concurrency``)."""


@dataclass
class ChatRequest:
    """A validated ``/v1/chat/completions`` request, reduced to what the dialogue needs."""

    question: str
    temperature: float
    top_p: float
    max_tokens: int
    """Token limit of each message of the dialogue."""
    stream: bool = False
    include_usage: bool = False
    """Streaming: send a last chunk with ``usage`` (``stream_options.include_usage``)."""
    meta: dict = field(default_factory=dict)
    """Judge parts (``prompt``, ``response_a``, ``response_b``) when the question gave them."""
    n: int = 1
    """Dialogues played for the question, one choice each."""
    stop: tuple[str, ...] = ()
    """Each answer is cut before the first of these it holds."""
    seed: int | None = None
    """Choice ``k`` samples with seed ``seed + k`` (None: the engine's own generator)."""


def parse_json(raw: bytes) -> dict:
    """The request body as a JSON object; 400 saying what is wrong otherwise."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"malformed JSON in the request body: {err}") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _text(content, index: int) -> str:
    """A message's text: a string, or the ``text`` parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(400, f"messages[{index}].content: only text parts are supported "
                                        '({"type": "text", "text": ...})', param=f"messages[{index}].content")
            texts.append(part["text"])
        return "\n".join(texts)
    raise RequestError(400, f"messages[{index}].content must be a string or a list of text parts",
                       param=f"messages[{index}].content")


def _number(body: dict, key: str, default: float, low: float, high: float, *, low_open: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            (low < value if low_open else low <= value) and value <= high):
        span = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise RequestError(400, f"{key} must be a number in {span}, got {value!r}", param=key)
    return float(value)


def check_fields(body: dict) -> None:
    """400 naming every field the server would not honour (see :data:`SUPPORTED` and :data:`NEUTRAL`)."""
    refused = [k for k, v in body.items()
               if k not in SUPPORTED and v is not None and not (k in NEUTRAL and _neutral(v, NEUTRAL[k]))]
    if refused:
        raise RequestError(400, f"unsupported field(s) {', '.join(map(repr, refused))}: rema serve plays the ReMA "
                                f"dialogue and reads {', '.join(SUPPORTED)} (docs/serve.md)", param=refused[0],
                           code="unsupported_parameter")


def _neutral(value, allowed: tuple) -> bool:
    """Whether ``value`` is one of ``allowed`` (0 and 0.0 alike; false is not 0)."""
    return any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in allowed)


def _question(body: dict) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list of {role, content} objects", param="messages")
    question = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(400, f"messages[{i}] must be an object with a role", param=f"messages[{i}]")
        if m["role"] == "user":
            question = _text(m.get("content"), i)
    if question is None or not question.strip():
        raise RequestError(400, "no user message: the last user message is the question the agents answer",
                           param="messages")
    return question


def _choices(body: dict, limits: Limits) -> tuple[int, tuple[str, ...], int | None]:
    """``(n, stop, seed)`` of a request."""
    n = 1 if body.get("n") is None else body["n"]  # null = the default, as OpenAI takes it
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limits.max_n:
        raise RequestError(400, f"n must be an integer from 1 to {limits.max_n} (serve.max_concurrency), got {n!r}",
                           param="n")
    stop = body.get("stop")
    stop = () if stop is None else (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, (list, tuple)) or len(stop) > MAX_STOPS or not all(isinstance(x, str) and x for x in stop):
        raise RequestError(400, f"stop must be a string or a list of at most {MAX_STOPS} non-empty strings, got "
                                f"{body.get('stop')!r}", param="stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(400, f"seed must be an integer, got {seed!r}", param="seed")
    return n, tuple(stop), seed


def parse_request(body: dict, limits: Limits) -> ChatRequest:
    """Validate a chat-completions body against the config's ``limits``; raises :class:`RequestError` (400)."""
    check_fields(body)
    question = _question(body)
    n, stop, seed = _choices(body, limits)
    temperature = _number(body, "temperature", limits.default_temperature, 0.0, 2.0)
    top_p = _number(body, "top_p", limits.default_top_p, 0.0, 1.0, low_open=True)
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    asked = body.get(key)
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked < 1):
        raise RequestError(400, f"{key} must be a positive integer, got {asked!r}", param=key)
    stream = False if body.get("stream") is None else body["stream"]
    if not isinstance(stream, bool):
        raise RequestError(400, f"stream must be true or false, got {stream!r}", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError(400, "stream_options must be an object", param="stream_options")
    meta = judge_parts(question) if limits.judge else {}
    return ChatRequest(question=question, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                       max_tokens=min(asked or limits.max_tokens_per_turn, limits.max_tokens_per_turn),
                       stream=stream, include_usage=bool(options.get("include_usage")), meta=meta, n=n, stop=stop,
                       seed=seed)


def judge_parts(question: str) -> dict:
    """``{prompt, response_a, response_b}`` when ``question`` is a JSON object holding them as strings, else {}."""
    try:
        obj = json.loads(question)
    except json.JSONDecodeError:
        return {}
    if isinstance(obj, dict) and all(isinstance(obj.get(k), str) for k in JUDGE_PARTS):
        return {k: obj[k] for k in JUDGE_PARTS}
    return {}


# --- responses ------------------------------------------------------------------------------------------


@dataclass
class BatchInfo:
    """How a request was served: the batch it ran in and its times."""

    size: int
    """Requests in the batch (one engine call per turn for all of them)."""
    wait_s: float
    """From arrival to the batch's start."""
    rollout_s: float
    """The batch's dialogue, all turns."""


def finish_reason(ep: Episode) -> str:
    """``stop`` when the dialogue ended as the method ends it and the answer was not cut, else ``length``."""
    ra = ep.turns_of("ra")
    return "stop" if ep.end_code == "finished" and ra and not ra[-1].truncated else "length"


def answer(ep: Episode, stop: tuple[str, ...]) -> tuple[str, str]:
    """``(content, finish_reason)`` of one choice: the RA's last message, cut before the first stop string it holds
    (then the reason is ``stop``)."""
    text = ep.final_response
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(cuts)], "stop") if cuts else (text, finish_reason(ep))


def extracted_answer(ep: Episode, judge: bool) -> str | None:
    """The answer as graders read it: the verdict (A/B) on a judge run, else the last ``\\boxed{}``."""
    text = ep.final_response
    if judge:
        from ..rewards.format_terms import last_verdict

        return last_verdict(text)
    from ..rewards.math_worker import find_boxes

    boxes = find_boxes(text)
    return boxes[-1][0] if boxes else None


def usage(episodes: list[Episode], prompt_tokens: int) -> dict:
    """OpenAI ``usage``: the opening prompt (system prompt + question in the first agent's template) and every
    token generated by either agent, over all choices."""
    completion = sum(len(t.token_ids) for ep in episodes for t in ep.turns)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def rema_field(ep: Episode, *, batch: BatchInfo, req: ChatRequest, judge: bool) -> dict:
    """The extra ``rema`` object: the dialogue, how it ended, token counts, the batch."""
    generated = {agent: sum(len(t.token_ids) for t in ep.turns_of(agent)) for agent in ep.views}
    return {
        "method": ep.method,
        "end_code": ep.end_code,
        "answer": extracted_answer(ep, judge),
        "dialogue": [{"agent": t.agent, "turn": t.index, "content": t.text, "tokens": len(t.token_ids),
                      "finish_reason": t.finish_reason} for t in ep.turns],
        "tokens": {"generated": generated, "context": {a: len(v.input_ids) for a, v in ep.views.items()}},
        "limits": {"temperature": req.temperature, "top_p": req.top_p, "max_tokens_per_turn": req.max_tokens},
        "batch": {"size": batch.size, "wait_s": round(batch.wait_s, 4), "rollout_s": round(batch.rollout_s, 4)},
    }


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion_body(episodes: list[Episode], *, model: str, req: ChatRequest, batch: BatchInfo, prompt_tokens: int,
                    judge: bool, rid: str | None = None) -> dict:
    """A ``chat.completion`` object: one choice per dialogue (the RA's last message as the assistant's), ``usage``,
    and ``rema``: the first choice's dialogue (with ``n`` > 1 every choice carries its own ``rema`` too)."""
    fields = [rema_field(ep, batch=batch, req=req, judge=judge) for ep in episodes]
    choices = []
    for k, (ep, extra) in enumerate(zip(episodes, fields)):
        content, reason = answer(ep, req.stop)
        choices.append({"index": k, "message": {"role": "assistant", "content": content}, "logprobs": None,
                        "finish_reason": reason, **({"rema": extra} if len(episodes) > 1 else {})})
    return {
        "id": rid or new_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": choices, "usage": usage(episodes, prompt_tokens), "rema": fields[0],
    }


def chunk(rid: str, model: str, delta: dict, finish: str | None = None, index: int = 0, **extra) -> dict:
    """One ``chat.completion.chunk`` of a stream (choice ``index``)."""
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}


def stream_chunks(episodes: list[Episode], *, rid: str, model: str, req: ChatRequest, batch: BatchInfo,
                  prompt_tokens: int, judge: bool) -> list[dict]:
    """The chunks after the opening (role) one: per choice its answer, then its finish reason with ``rema``; then
    ``usage`` when the request asked for it (``choices`` empty, as OpenAI sends it)."""
    out = []
    for k, ep in enumerate(episodes):
        content, reason = answer(ep, req.stop)
        if k > 0:
            out.append(chunk(rid, model, {"role": "assistant", "content": ""}, index=k))
        out += [chunk(rid, model, {"content": content}, index=k),
                chunk(rid, model, {}, reason, index=k, rema=rema_field(ep, batch=batch, req=req, judge=judge))]
    if req.include_usage:
        out.append({"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                    "choices": [], "usage": usage(episodes, prompt_tokens)})
    return out


def sse(obj: dict | str) -> str:
    """One server-sent event: ``data: <json>`` (or the literal ``[DONE]``) and a blank line."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"
