"""The HTTP server: an OpenAI-compatible API over the engine, and the playground page.

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/completions``, ``POST
/v1/chat/completions`` (streamed as Server-Sent Events in OpenAI's chunk format when
``stream`` is true, ending with ``data: [DONE]``), ``POST /v1/attention`` (seq2seq runs:
the heatmap data the playground draws), and the playground at ``/``. Errors have OpenAI's
body, ``{"error": {"message", "type", "param", "code"}}``, and status: 400 for values the run
cannot take, 401 for a missing or wrong key, 404 for another model's name, 413 for a body
too large, 422 for a malformed body, 429 when the queue is full.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..chat import ChatError
from ..config import ConfigError
from ..pair_data import encoder_ids, source_ids
from .engine import Engine
from .responses import APIError, error_response
from .streaming import Mailbox, respond
from .schemas import AttentionRequest, ChatRequest, CompletionRequest, Sampling



class Limits:
    """What one request may ask for (``proselab serve`` flags)."""

    def __init__(self, max_prompt_tokens: int, max_tokens: int, max_body_bytes: int = 1 << 20):
        self.max_prompt_tokens, self.max_tokens, self.max_body_bytes = max_prompt_tokens, max_tokens, max_body_bytes


class Guard:
    """The API key and the body size, checked before any route (pure ASGI middleware).

    Starlette's ``@app.middleware("http")`` would pass every chunk of a streamed response
    through a memory stream and a task of its own; this one only wraps ``receive``. A POST
    body is read here, at most ``max_body_bytes`` of it, and replayed to the route.
    """

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

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
        while more:
            message = await receive()
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
    """The FastAPI app serving ``generator`` (a loaded run). Its engine thread starts now and
    stops with the app (lifespan shutdown); ``threads`` (0 = all cores) is its CPU threads."""
    cfg = generator.config
    name = model_name or (generator.run_dir.name if generator.run_dir else "proselab")
    if limits is None:
        window = cfg.model.block_size if cfg.model.family == "gpt" else 1024
        limits = Limits(window, max(cfg.generation.max_new_tokens, 1024))
    mailbox = Mailbox()
    engine = Engine(generator, max_batch=max_batch, max_queue=max_queue, threads=threads, wake=mailbox.wake)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        engine.close()

    app = FastAPI(title="proselab", version="1", summary=f"OpenAI-compatible text generation with the run '{name}'",
                  lifespan=lifespan)
    app.state.engine, app.state.generator = engine, generator

    # ---- errors in OpenAI's format -------------------------------------------------------
    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError):
        return error_response(e.status, e.message, e.type, e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        return error_response(422, f"{param or 'body'}: {first.get('msg', 'invalid request')}", param=param,
                      code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return error_response(e.status_code, str(e.detail), kind)

    # ---- the API key and the body size, before any route ---------------------------------
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes)

    # ---- routes --------------------------------------------------------------------------
    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": name, "waiting": engine.waiting, "running": engine.running_rows}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "proselab"}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(body.model, name)
        _neutral(body, echo=False, suffix=None)
        if body.best_of is not None and body.best_of != body.n:
            raise APIError(400, "best_of is not supported (only best_of = n)", param="best_of")
        gcfg = _generation(generator, body, limits, output_scores=body.logprobs is not None)
        prompts = _prompt_ids(generator, body.prompt, limits)
        top = body.logprobs or 0
        return await respond(request, engine, mailbox, generator, body, gcfg, prompts, top, chat=False, model=name)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        _check_model(body.model, name)
        _neutral(body, tools=None, tool_choice=None, parallel_tool_calls=None)
        if body.response_format not in (None, {"type": "text"}):
            raise APIError(400, "response_format other than text is not supported", param="response_format")
        if body.max_completion_tokens is not None:
            body.max_tokens = body.max_completion_tokens
            body.model_fields_set.add("max_tokens")
        gcfg = _generation(generator, body, limits, output_scores=body.logprobs)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": _text(m.content)}
                    for m in body.messages]
        try:
            prompt = generator.chat_prompt(messages, gcfg.max_new_tokens)
        except ChatError as e:
            raise APIError(400, str(e), param="messages") from None
        ids = prompt[0] if isinstance(prompt, list) else _source_ids(generator, _last_user(messages))
        _check_prompt_length(len(ids), limits)
        top = (body.top_logprobs or 0) if body.logprobs else 0
        return await respond(request, engine, mailbox, generator, body, gcfg, [ids], top, chat=True, model=name)

    @app.post("/v1/attention")
    async def attention(body: AttentionRequest):
        if not generator.is_seq2seq:
            raise APIError(400, f"attention maps are for seq2seq runs; this run is a {cfg.model.family} model")
        _check_prompt_length(len(_source_ids(generator, body.source)), limits)
        max_new = min(body.max_tokens or cfg.generation.max_new_tokens, limits.max_tokens)
        amap = await asyncio.wrap_future(engine.call(lambda: generator.attention(body.source, max_new_tokens=max_new)))
        return {"text": amap.text, "src_tokens": amap.src_tokens, "tgt_tokens": amap.tgt_tokens,
                "weights": [[round(w, 4) for w in row] for row in amap.weights.tolist()]}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def playground() -> str:
        page = resources.files("proselab.server").joinpath("static/index.html").read_text(encoding="utf-8")
        info = {"model": name, "family": cfg.model.family, "seq2seq": generator.is_seq2seq,
                "chat": _can_chat(generator), "auth": api_key is not None, "defaults": _defaults(cfg.generation)}
        return page.replace("/*PROSELAB_INFO*/{}", json.dumps(info))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        kinds = {"app.js": "text/javascript", "style.css": "text/css"}
        if name not in kinds:
            raise APIError(404, f"no such file: {name}", "not_found_error")
        text = resources.files("proselab.server").joinpath(f"static/{name}").read_text(encoding="utf-8")
        return Response(text, media_type=kinds[name])

    return app


# ---- request -> generation settings --------------------------------------------------------
def _check_model(requested: str | None, name: str) -> None:
    if requested is not None and requested != name:
        raise APIError(404, f"the model '{requested}' does not exist; this server serves '{name}'",
                       "not_found_error", "model", "model_not_found")


def _neutral(body, **neutral) -> None:
    """OpenAI settings proselab cannot honour must be at their neutral values."""
    checks = {"presence_penalty": 0.0, "frequency_penalty": 0.0, **neutral}
    for field, value in checks.items():
        if getattr(body, field) != value:
            raise APIError(400, f"{field} is not supported by proselab (leave it at {value!r}); "
                           "for repetition control use repetition_penalty or no_repeat_ngram_size", param=field)
    if body.logit_bias:
        raise APIError(400, "logit_bias is not supported by proselab", param="logit_bias")


def _generation(generator, body: Sampling, limits: Limits, output_scores: bool):
    """The run's generation defaults with the fields this request set."""
    given = body.model_fields_set
    o: dict[str, Any] = {"num_return_sequences": body.n, "output_scores": output_scores}
    if "max_tokens" in given and body.max_tokens is not None:
        if body.max_tokens > limits.max_tokens:
            raise APIError(400, f"max_tokens is {body.max_tokens}; this server allows at most {limits.max_tokens}",
                           param="max_tokens")
        o["max_new_tokens"] = body.max_tokens
    else:
        o["max_new_tokens"] = min(generator.config.generation.max_new_tokens, limits.max_tokens)
    if body.temperature is not None:
        o.update(do_sample=body.temperature > 0, **({"temperature": body.temperature} if body.temperature > 0 else {}))
    names = {"top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "typical_p": "typical_p", "seed": "seed",
             "repetition_penalty": "repetition_penalty", "no_repeat_ngram_size": "no_repeat_ngram_size",
             "min_tokens": "min_new_tokens", "num_beams": "num_beams", "length_penalty": "length_penalty"}
    for field, key in names.items():
        if field in given and getattr(body, field) is not None:
            o[key] = getattr(body, field)
    if body.stop is not None:
        o["stop"] = [body.stop] if isinstance(body.stop, str) else list(body.stop)
    if o.get("num_beams", 1) > 1 and "temperature" not in o:
        o.setdefault("do_sample", False)
    try:
        return generator.generation_config(**o)
    except (ConfigError, ValueError) as e:
        field = next((f for f in names if names[f] in str(e)), None)
        raise APIError(400, str(e).replace("generation.", ""), param=field) from None


def _check_prompt_length(n: int, limits: Limits) -> None:
    if n > limits.max_prompt_tokens:
        raise APIError(400, f"the prompt has {n} tokens; this server accepts at most {limits.max_prompt_tokens} "
                       "(--max-prompt-tokens)", param="prompt", code="context_length_exceeded")


def _prompt_ids(generator, prompt, limits: Limits) -> list[list[int]]:
    """Each prompt as token ids (sources end with eos for seq2seq)."""
    if isinstance(prompt, str):
        prompts = [prompt]
    elif prompt and isinstance(prompt[0], int):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts or len(prompts) > 64:
        raise APIError(400, "prompt must hold 1 to 64 prompts", param="prompt")
    vocab = generator.config.model.vocab_size
    out = []
    for p in prompts:
        if isinstance(p, str):
            if generator.is_seq2seq:
                ids = _source_ids(generator, p)
            else:
                try:
                    ids = generator.encode_prompt(p)
                except ValueError as e:
                    raise APIError(400, str(e), param="prompt") from None
        else:
            if not p or any(not 0 <= t < vocab for t in p):
                raise APIError(400, f"token-id prompts must be non-empty and each id in [0, {vocab})", param="prompt")
            ids = encoder_ids(p, generator.config.data.truncate_src, generator.src_tokenizer.eos_id) \
                if generator.is_seq2seq else list(p)
        _check_prompt_length(len(ids), limits)
        out.append(ids)
    return out


def _source_ids(generator, text: str) -> list[int]:
    if not text.strip():
        raise APIError(400, "the source is empty; an encoder-decoder needs text to transform", param="prompt")
    return source_ids(generator.src_tokenizer, text, generator.config.data.truncate_src)


def _text(content) -> str:
    """A message's text (OpenAI also allows a list of parts; only text parts are used)."""
    if isinstance(content, str):
        return content
    parts = [p.get("text", "") for p in content if p.get("type") == "text"]
    if len(parts) != len(content):
        raise APIError(400, "only text message parts are supported", param="messages")
    return "".join(parts)


def _last_user(messages: list[dict]) -> str:
    return [m["content"] for m in messages if m["role"] == "user"][-1]


def _can_chat(generator) -> bool:
    if generator.is_seq2seq:  # answers the last user message
        return True
    try:
        generator.chat_prompt([{"role": "user", "content": "hi"}], 0)
        return True
    except ChatError:
        return False


def _defaults(g) -> dict:
    return {"max_tokens": g.max_new_tokens, "temperature": g.temperature if g.do_sample else 0, "top_p": g.top_p,
            "top_k": g.top_k, "repetition_penalty": g.repetition_penalty}
