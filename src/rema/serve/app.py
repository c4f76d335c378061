"""The HTTP side of ``rema serve``: a FastAPI app with OpenAI's ``/v1/models`` and ``/v1/chat/completions``.

Every request is checked before it queues (size, JSON, fields, messages, model, sampling fields, context) and
refused with a 4xx and an OpenAI error object saying what to change; every other error the app answers (an
unknown route, a wrong method, a failure inside a batch: 500, and the server goes on) has the same shape. Streams
(``stream: true``) send the role at once, keep-alive comments while the dialogue runs (a client that left is
noticed there and its request dropped if its batch has not begun), then the answers, each choice's finish reason
with the ``rema`` field, and ``[DONE]``.

:func:`create_app` is four steps: the batcher and its lifespan, the error handlers, the information routes
(``/health``, ``/v1/models``), the chat route.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import ServeConfig
from .api import (
    ChatRequest,
    RequestError,
    chunk,
    completion_body,
    error_body,
    new_id,
    parse_json,
    parse_request,
    sse,
    stream_chunks,
)
from .batcher import Batcher, Busy
from .service import Service

log = logging.getLogger("rema.serve")

KEEPALIVE_S = 2.0
"""Seconds between keep-alive comments of a stream while its dialogue runs (how soon a gone client is noticed)."""

_KINDS = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
"""OpenAI's error ``type`` for an HTTP status (others: ``invalid_request_error`` below 500, ``server_error`` above)."""


def _error(status: int, message: str, **kw) -> JSONResponse:
    return JSONResponse(error_body(message, **kw), status_code=status)


def _kind(status: int) -> str:
    return _KINDS.get(status, "server_error" if status >= 500 else "invalid_request_error")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (declared or read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {declared} bytes is over the limit of {limit} "
                                "(serve.max_request_bytes)", code="request_too_large")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise RequestError(413, f"request body is over the limit of {limit} bytes (serve.max_request_bytes)",
                               code="request_too_large")
    return bytes(body)


def create_app(service: Service, serve: ServeConfig) -> FastAPI:
    """The app serving ``service``; its batcher starts and stops with the app (lifespan)."""
    batcher = Batcher(service.run_batch, max_pending=serve.max_concurrency, wait_s=serve.batch_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="rema serve", lifespan=lifespan)
    app.state.batcher, app.state.service = batcher, service
    _add_error_handlers(app)
    _add_info_routes(app, service, batcher)
    _add_chat_route(app, service, batcher, serve)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error the app answers is an OpenAI error object: refusals, unknown routes or methods, anything else."""

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        what = f"{request.method} {request.url.path}: {err.detail}"
        if err.status_code == 404:
            what += " (rema serve answers GET /v1/models, POST /v1/chat/completions, GET /health)"
        return JSONResponse(error_body(what, kind=_kind(err.status_code)), status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return _error(400, f"invalid request: {err.errors()}")

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(500, f"internal error: {type(err).__name__}: {err}", kind="server_error")


def _add_info_routes(app: FastAPI, service: Service, batcher: Batcher) -> None:
    """``/health`` and OpenAI's ``/v1/models`` (the one model served)."""
    created = int(time.time())

    def model_card() -> dict:
        return {"id": service.model_id, "object": "model", "created": created, "owned_by": "rema"}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "pending": batcher.pending, "batches": batcher.batches}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != service.model_id:
            return _error(404, f"model {model_id!r} is not served here; this server serves {service.model_id!r}",
                          kind="not_found_error", code="model_not_found")
        return model_card()


def _add_chat_route(app: FastAPI, service: Service, batcher: Batcher, serve: ServeConfig) -> None:
    """``POST /v1/chat/completions``: checked, queued for the next batch, answered whole or streamed."""

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = parse_json(await _read_body(request, serve.max_request_bytes))
        name = body.get("model")
        if name is not None and name != service.model_id:
            raise RequestError(404, f"model {name!r} is not served here; this server serves {service.model_id!r} "
                                    "(GET /v1/models)", kind="not_found_error", param="model", code="model_not_found")
        req = parse_request(body, service.limits)
        prompt_tokens = service.check(req)
        try:
            future = batcher.submit(req)
        except Busy as err:
            return _error(429, str(err), kind="rate_limit_error", code="busy")
        if req.stream:
            return StreamingResponse(_stream(request, future, req, prompt_tokens, service),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            episodes, info = await future
        except Exception as err:  # the batch failed: say why, keep serving
            return _error(500, f"generation failed: {type(err).__name__}: {err}", kind="server_error")
        return completion_body(episodes, model=service.model_id, req=req, batch=info, prompt_tokens=prompt_tokens,
                               judge=service.judge)


async def _stream(request: Request, future: asyncio.Future, req: ChatRequest, prompt_tokens: int, service: Service):
    """The server-sent events of a streamed request (see the module docstring)."""
    rid = new_id()
    try:
        yield sse(chunk(rid, service.model_id, {"role": "assistant", "content": ""}))
        while not future.done():
            await asyncio.wait({future}, timeout=KEEPALIVE_S)
            if not future.done():
                if await request.is_disconnected():
                    return
                yield ": keep-alive\n\n"
        try:
            episodes, info = future.result()
        except Exception as err:
            yield sse(error_body(f"generation failed: {type(err).__name__}: {err}", kind="server_error"))
            yield sse("[DONE]")
            return
        for c in stream_chunks(episodes, rid=rid, model=service.model_id, req=req, batch=info,
                               prompt_tokens=prompt_tokens, judge=service.judge):
            yield sse(c)
        yield sse("[DONE]")
    finally:  # the client left (or the stream ended): a request not yet in a batch is dropped
        if not future.done():
            future.cancel()
