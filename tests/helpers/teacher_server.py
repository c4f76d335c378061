"""A real OpenAI-compatible chat-completions server with scripted replies, for ``rema distill``'s tests.

FastAPI + uvicorn on a free localhost port, in a thread of the test process: the client under test speaks real
HTTP to it (no mocks). Each problem's question carries ``(case: NAME)``; the reply is ``CASES[NAME]``, except that
``rate`` answers its first request with a 429 and ``flaky`` with a 500. Every request is counted per question and
its Authorization header kept, so tests can check retries, resume (no row asked twice) and the key.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections import Counter

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

GOOD = (
    "<mta>We need the sum of the two numbers. Add them carefully.</mta>\n<ra>3 + 4 = 7.</ra>\n"
    "<mta>That checks out. [FINISH]</mta>\n<ra>The final answer is $\\boxed{7}$.</ra>"
)
CASES = {
    "good": (GOOD, "stop"),
    "rate": (GOOD, "stop"),
    "flaky": (GOOD, "stop"),
    "leak": (
        "<mta>Add them: the answer is 7.</mta>\n<ra>3 + 4 = 7.</ra>\n<mta>Right. [FINISH]</mta>\n<ra>$\\boxed{7}$</ra>",
        "stop",
    ),
    "wrong": (
        "<mta>Add the two numbers.</mta>\n<ra>3 + 4 = 8.</ra>\n<mta>Good. [FINISH]</mta>\n"
        "<ra>The final answer is $\\boxed{8}$.</ra>",
        "stop",
    ),
    "malformed": ("Here is the dialogue:\n<mta>Add the two numbers.</mta>\n<ra>7</ra>", "stop"),
    "truncated": ("<mta>Add the two numbers.</mta>\n<ra>3 + 4 = ", "length"),
}
_CASE = re.compile(r"\(case: (\w+)\)")
_QUESTION = re.compile(r"Problem:\n(.*?)\n\nReference solution:", re.S)


class TeacherServer:
    """``with TeacherServer() as s: s.url`` -> ``http://127.0.0.1:PORT/v1``; ``delay_s`` slows every reply."""

    def __init__(self, *, model: str = "teacher", delay_s: float = 0.0):
        self.model, self.delay_s = model, delay_s
        self.calls: Counter = Counter()
        """Requests per question (every try, failed ones included)."""
        self.auth: list[str | None] = []
        self.bodies: list[dict] = []
        app = FastAPI()
        app.post("/v1/chat/completions")(self._chat)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))

    async def _chat(self, request: Request):
        body = await request.json()
        self.bodies.append(body)
        self.auth.append(request.headers.get("authorization"))
        if body.get("model") != self.model:
            return JSONResponse({"error": {"message": f"The model `{body.get('model')}` does not exist."}}, 404)
        user = body["messages"][-1]["content"]
        question = _QUESTION.search(user).group(1)
        self.calls[question] += 1
        case = _CASE.search(question).group(1)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if case == "rate" and self.calls[question] == 1:
            return JSONResponse({"error": {"message": "Rate limit reached"}}, 429, headers={"retry-after-ms": "10"})
        if case == "flaky" and self.calls[question] == 1:
            return JSONResponse({"error": {"message": "internal error"}}, 500)
        text, finish = CASES[case]
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150},
        }

    def __enter__(self) -> TeacherServer:
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test teacher server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
