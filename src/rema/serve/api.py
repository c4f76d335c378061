"""The OpenAI chat-completions schema, as far as ``rema serve`` speaks it: a request body in, a validated
:class:`ChatRequest` out (or a :class:`RequestError` with its HTTP status); an episode in, a response or
stream chunks out. Pure functions, no server: the app (``app.py``) only moves bytes.

What maps onto what:

* the question is the text of the **last** ``user`` message (earlier messages and ``system`` messages are
  not read: each agent has its own system prompt, and a dialogue starts from one question);
* on a judge run (``rollout.task=judge``) a question that is a JSON object with ``prompt``, ``response_a``
  and ``response_b`` is rendered by the judge template, as in training; any other text is the question;
* ``temperature`` (0-2, default ``rollout.eval_temperature``) and ``top_p`` sample every turn;
  ``max_tokens`` / ``max_completion_tokens`` cap each message of the dialogue, at most
  ``rollout.max_tokens_per_turn`` (a larger value is lowered to it; the value used is in ``rema.limits``);
* ``n`` must be 1; tools, logprobs, stop strings and the other fields are not supported and not read;
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


@dataclass(frozen=True)
class Limits:
    """What the config allows a request (``rollout.*``) and what it gets when it asks nothing."""

    max_tokens_per_turn: int
    default_temperature: float
    default_top_p: float
    judge: bool = False
    """Judge task: a JSON question with the judge parts is rendered by the judge template."""


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


def parse_request(body: dict, limits: Limits) -> ChatRequest:
    """Validate a chat-completions body against the config's ``limits``; raises :class:`RequestError` (400)."""
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
    n = 1 if body.get("n") is None else body["n"]  # null = the default, as OpenAI takes it
    if n != 1:
        raise RequestError(400, f"n={n!r}: one answer per request (send several requests; they are batched)",
                           param="n")
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
                       stream=stream, include_usage=bool(options.get("include_usage")), meta=meta)


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


def extracted_answer(ep: Episode, judge: bool) -> str | None:
    """The answer as graders read it: the verdict (A/B) on a judge run, else the last ``\\boxed{}``."""
    text = ep.final_response
    if judge:
        from ..rewards.format_terms import last_verdict

        return last_verdict(text)
    from ..rewards.math_worker import find_boxes

    boxes = find_boxes(text)
    return boxes[-1][0] if boxes else None


def usage(ep: Episode, prompt_tokens: int) -> dict:
    """OpenAI ``usage``: the opening prompt (system prompt + question in the first agent's template) and
    every token generated by either agent."""
    completion = sum(len(t.token_ids) for t in ep.turns)
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


def completion_body(ep: Episode, *, model: str, req: ChatRequest, batch: BatchInfo, prompt_tokens: int,
                    judge: bool, rid: str | None = None) -> dict:
    """A ``chat.completion`` object: the RA's last message as the assistant's, plus ``usage`` and ``rema``."""
    return {
        "id": rid or new_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ep.final_response},
                     "logprobs": None, "finish_reason": finish_reason(ep)}],
        "usage": usage(ep, prompt_tokens),
        "rema": rema_field(ep, batch=batch, req=req, judge=judge),
    }


def chunk(rid: str, model: str, delta: dict, finish: str | None = None, **extra) -> dict:
    """One ``chat.completion.chunk`` of a stream."""
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}


def stream_chunks(ep: Episode, *, rid: str, model: str, req: ChatRequest, batch: BatchInfo, prompt_tokens: int,
                  judge: bool) -> list[dict]:
    """The chunks after the opening (role) one: the answer, the finish reason with ``rema``, then ``usage``
    when the request asked for it (``choices`` empty, as OpenAI sends it)."""
    out = [chunk(rid, model, {"content": ep.final_response}),
           chunk(rid, model, {}, finish_reason(ep), rema=rema_field(ep, batch=batch, req=req, judge=judge))]
    if req.include_usage:
        out.append({"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                    "choices": [], "usage": usage(ep, prompt_tokens)})
    return out


def sse(obj: dict | str) -> str:
    """One server-sent event: ``data: <json>`` (or the literal ``[DONE]``) and a blank line."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"
