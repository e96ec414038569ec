"""The HTTP server: an OpenAI-compatible API over the engine, and the playground page.

Routes (``routes.py``): ``GET /health``, ``GET /v1/models``, ``POST /v1/completions``, ``POST
/v1/chat/completions`` (streamed as Server-Sent Events in OpenAI's chunk format when
``stream`` is true, ending with ``data: [DONE]``), ``POST /v1/classify`` (a classifier's
labels and probabilities, or zero-shot with a language model), ``POST /v1/attention`` (seq2seq
runs: the heatmap data the playground draws), and the playground at ``/``. Errors have OpenAI's
body, ``{"error": {"message", "type", "param", "code"}}``, and status: 400 for a body that
matches the schema but that the run or the server's limits cannot take, 401 for a missing or
wrong key, 404 for another model's name, 405 (with ``Allow``) for another method, 408 for a body
that takes too long to arrive, 413 for a body too large, 422 for a body that does not match
the schema, 429 when the queue is full.
/openapi.json documents all of it (``openapi.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from .engine import Engine
from .responses import APIError, error_response
from .classify import ClassifyBatcher
from .openapi import stream_schemas
from .routes import Limits, ServerState, api, playground
from .schemas import UNICODE_ERROR
from .streaming import Mailbox


class Guard:
    """The API key, the body size and the time the body takes, checked before any route (pure
    ASGI middleware).

    Starlette's ``@app.middleware("http")`` would pass every chunk of a streamed response
    through a memory stream and a task of its own; this one only wraps ``receive``. A POST
    body is read here, at most ``max_body_bytes`` of it within ``body_seconds`` (uvicorn
    bounds idle keep-alive connections, not a body sent a byte at a time), and replayed to the
    route.
    """

    def __init__(self, app, api_key: str | None, max_body_bytes: int, body_seconds: float = 30.0):
        self.app, self.api_key, self.max_body_bytes, self.body_seconds = app, api_key, max_body_bytes, body_seconds

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if self.api_key is not None and scope["path"].startswith("/v1/"):
            header = headers.get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                return await error_response(401, "invalid or missing API key: send 'Authorization: Bearer KEY'",
                                            code="invalid_api_key")(scope, receive, send)
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        size = headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > self.max_body_bytes):
            return await self._too_large()(scope, receive, send)
        body, more = bytearray(), True
        deadline = asyncio.get_running_loop().time() + self.body_seconds
        while more:
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:
                return await error_response(408, f"the request body did not arrive within {self.body_seconds:g} s",
                                            code="timeout", headers={"Connection": "close"})(scope, receive, send)
            if message["type"] != "http.request":  # the client went away before sending it all
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return await self._too_large()(scope, receive, send)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:  # then only http.disconnect is left to wait for
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self):
        return error_response(413, f"the request body is larger than {self.max_body_bytes} bytes", code="too_large")


def create_app(generator, *, api_key: str | None = None, model_name: str | None = None, max_batch: int = 16,
               max_queue: int = 64, limits: Limits | None = None, threads: int = 0) -> FastAPI:
    """The FastAPI app serving an already loaded run.

    Its engine thread starts now and stops with the app (lifespan shutdown).

    Args:
        generator: the loaded run (``proselab.load``).
        api_key: the key /v1 routes require as 'Authorization: Bearer KEY'; None: no key.
        model_name: the model id clients use; default the run directory's name.
        max_batch: most sequences decoded together.
        max_queue: most requests waiting before 429.
        limits: what one request may ask for; default ``Limits.for_run(generator.config)``.
        threads: the engine's CPU threads (0 = auto, see ``Engine``).

    Returns:
        The app, for uvicorn or a test server.
    """
    api_key = api_key or None  # an empty key guards nothing: the playground then shows no key field
    name = model_name or (generator.run_dir.name if generator.run_dir else "proselab")
    limits = limits if limits is not None else Limits.for_run(generator.config)
    mailbox = Mailbox()
    engine = Engine(generator, max_batch=max_batch, max_queue=max_queue, threads=threads, wake=mailbox.wake)
    state = ServerState(generator, engine, mailbox, limits, name, api_key, created=int(time.time()),
                        classifier=ClassifyBatcher(engine, generator))

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        engine.close()

    app = FastAPI(title="proselab", version="1", summary=f"OpenAI-compatible text generation with the run '{name}'",
                  lifespan=lifespan)
    app.state.server, app.state.engine, app.state.generator = state, engine, generator
    # FastAPI's, with what the streams send and, with a key, how to send it
    app.openapi = lambda: stream_schemas(FastAPI.openapi(app), keyed=api_key is not None)
    _add_error_handlers(app)
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes, body_seconds=limits.body_seconds)
    app.include_router(api)
    app.include_router(playground)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error in OpenAI's body, ``{"error": {"message", "type", "param", "code"}}``."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError):
        return error_response(e.status, e.message, e.type, e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        status = 400 if first.get("type") == UNICODE_ERROR else 422
        return error_response(status, f"{param or 'body'}: {first.get('msg', 'invalid request')}", param=param,
                              code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return error_response(e.status_code, str(e.detail), kind, headers=e.headers)  # 405 keeps its Allow
