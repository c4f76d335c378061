"""The teacher: one chat-completions request per problem through the official ``openai`` client (AsyncOpenAI),
against any OpenAI-compatible endpoint (OpenAI, a hosted API, ``vllm serve``, ``rema serve``).

Retries are ours, not the client's (``max_retries=0`` there), so that every retry is counted by cause for the
progress bar and the summary: a 429 (rate limit), a 408/409/5xx, a timeout or a dropped connection is retried
up to ``max_retries`` times after :func:`backoff_s` seconds (the server's ``Retry-After`` when it gives one,
else exponential backoff with jitter); any other HTTP error (400, 413, ...) fails the row at once. A row whose
request failed is not recorded anywhere, so the next run asks for it again. Errors that every row would meet
(401, 403, 404, or an endpoint still unreachable after the retries) stop the run instead of burning through it.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import asdict, dataclass

RETRY_STATUS = frozenset({408, 409, 429})
"""HTTP statuses retried besides every 5xx: request timeout, conflict, rate limit (as the openai client does)."""
MAX_BACKOFF_S = 60.0
"""No wait between two tries is longer than this, whatever the server asks."""


FATAL_STATUS = frozenset({401, 403, 404})
"""HTTP statuses that stop the whole run: a bad key, no permission, an unknown model or endpoint fail every row
alike."""


class TeacherError(RuntimeError):
    """A request that failed for good: retries used up, or an error no retry fixes. ``fatal``: no other row will
    fare better either (bad key, unknown model, an endpoint that cannot be reached), so the run stops."""

    def __init__(self, message: str, *, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


@dataclass
class Usage:
    """The cost-relevant counts of a run: requests sent (retries included), their causes, tokens billed."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    """429 answers."""
    server_errors: int = 0
    """408, 409 and 5xx answers."""
    timeouts: int = 0
    """Requests that timed out or lost their connection."""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Reply:
    """The teacher's answer to one request."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


def retry_after_s(headers) -> float | None:
    """Seconds a response's ``retry-after-ms`` / ``retry-after`` header asks to wait (None: absent, or an HTTP date)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        try:
            seconds = float(value) * scale if value is not None else math.nan
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def backoff_s(attempt: int, *, base_s: float, retry_after: float | None, jitter: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0 = the first retry).

    The server's ``retry_after`` when it gave one, else ``base_s * 2**attempt``, minus ``jitter`` (a share in
    [0, 0.25), drawn per call) so that parallel requests refused together do not come back together; never more
    than :data:`MAX_BACKOFF_S`. ``backoff_s(2, base_s=1, retry_after=None, jitter=0) == 4``.
    """
    wait = retry_after if retry_after is not None else base_s * 2.0**attempt
    return min(wait * (1.0 - jitter), MAX_BACKOFF_S)


class Teacher:
    """Asks one model for chat completions with counted retries; ``usage`` accumulates over every call."""

    def __init__(
        self,
        client,
        model: str,
        *,
        temperature: float,
        max_tokens: int,
        max_retries: int,
        backoff_base_s: float,
        seed: int = 0,
    ):
        self.client, self.model = client, model
        self.temperature, self.max_tokens = temperature, max_tokens
        self.max_retries, self.backoff_base_s = max_retries, backoff_base_s
        self.usage = Usage()
        self._rng = random.Random(seed)

    async def ask(self, messages: list[dict[str, str]]) -> Reply:
        """The completion of ``messages``; :class:`TeacherError` when it fails for good."""
        import openai

        for attempt in range(self.max_retries + 1):
            self.usage.requests += 1
            try:
                resp = await self.client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    temperature=self.temperature,
                    max_completion_tokens=self.max_tokens,
                )
            except openai.APIConnectionError as err:  # includes APITimeoutError
                self.usage.timeouts += 1
                cause, wait_hint = f"{type(err).__name__}: {err}", None
                unreachable = not isinstance(err, openai.APITimeoutError)  # refused or dropped, not just slow
            except openai.APIStatusError as err:
                status = err.status_code
                if status not in RETRY_STATUS and status < 500:
                    raise TeacherError(
                        f"HTTP {status} from the teacher, not retried: {_message(err)}", fatal=status in FATAL_STATUS
                    ) from None
                if status == 429:
                    self.usage.rate_limited += 1
                else:
                    self.usage.server_errors += 1
                cause, wait_hint, unreachable = (
                    f"HTTP {status}: {_message(err)}",
                    retry_after_s(err.response.headers),
                    False,
                )
            else:
                return self._reply(resp)
            if attempt == self.max_retries:
                raise TeacherError(f"gave up after {self.max_retries} retries; last: {cause}", fatal=unreachable)
            self.usage.retries += 1
            await asyncio.sleep(
                backoff_s(attempt, base_s=self.backoff_base_s, retry_after=wait_hint, jitter=0.25 * self._rng.random())
            )
        raise AssertionError("unreachable")

    def _reply(self, resp) -> Reply:
        if not resp.choices:
            raise TeacherError("the teacher's response has no choices")
        choice, usage = resp.choices[0], resp.usage
        prompt, completion = (usage.prompt_tokens or 0, usage.completion_tokens or 0) if usage else (0, 0)
        self.usage.prompt_tokens += prompt
        self.usage.completion_tokens += completion
        return Reply(choice.message.content or "", choice.finish_reason, prompt, completion)


def _message(err) -> str:
    """The server's error message, short (a whole HTML error page is no use in a log line)."""
    body = err.body.get("error", err.body) if isinstance(err.body, dict) else None
    text = body.get("message") if isinstance(body, dict) else body
    return " ".join(str(text or err.message).split())[:200]
