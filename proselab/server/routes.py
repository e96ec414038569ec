"""The routes: the OpenAI-compatible API (``api``) and the playground page (``playground``).

Handlers share one ``ServerState`` (the loaded run, its engine, the limits), which
``create_app`` stores on ``app.state.server``; each handler asks for it with ``Depends``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from ..chat import ChatError
from ..config import ConfigError
from ..data.seq2seq import encoder_ids, source_ids
from .classify import ClassifyBatcher
from .engine import Engine
from .openapi import (
    AttentionMap,
    ChatCompletion,
    ChatCompletionChunk,
    Classifications,
    Completion,
    CompletionChunk,
    Health,
    ModelList,
    errors,
    streamed,
)
from .responses import APIError
from .schemas import (
    AttentionRequest,
    ChatRequest,
    ClassifyRequest,
    CompletionRequest,
    Sampling,
)
from .streaming import Mailbox, respond


@dataclass
class Limits:
    """What one request may ask for (``proselab serve`` flags)."""

    max_prompt_tokens: int  # longest prompt, in tokens (--max-prompt-tokens)
    max_tokens: int  # largest max_tokens a request may set (--max-tokens)
    max_body_bytes: int = 1 << 20  # largest request body; larger ones get 413 before any parsing
    body_seconds: float = 30.0  # a request body must arrive within this, or 408 (a client trickling it holds a slot)

    @classmethod
    def for_run(cls, cfg, max_prompt_tokens: int | None = None, max_tokens: int | None = None) -> Limits:
        """The limits for a run with config ``cfg``; a limit left at None (or 0) gets its default.

        Args:
            cfg: the run's config (``Generator.config``).
            max_prompt_tokens: longest prompt; default a GPT's block_size, else 1024.
            max_tokens: largest max_tokens; default max(the run's max_new_tokens, 1024).

        Returns:
            The limits, with the default body size.
        """
        window = cfg.model.block_size if cfg.model.family == "gpt" else 1024
        return cls(max_prompt_tokens or window, max_tokens or max(cfg.generation.max_new_tokens, 1024))


@dataclass
class ServerState:
    """What the routes share, built once per app by ``create_app``."""

    generator: Any  # the loaded run (``proselab.load``)
    engine: Engine  # batches every request's decoding on its own thread
    mailbox: Mailbox  # hands the engine's events to the event loop, one wakeup per step
    limits: Limits  # what one request may ask for
    model_name: str  # the model id clients send and see
    api_key: str | None  # None: no key needed (the playground then hides its key field)
    created: int  # /v1/models' "created": when the app was built (Unix seconds)
    classifier: ClassifyBatcher  # batches /v1/classify requests on the engine thread


async def server_state(request: Request) -> ServerState:
    """The app's ``ServerState`` (a FastAPI dependency).

    Async on purpose: FastAPI runs a plain ``def`` dependency on its thread pool, one more hop
    per request for a lookup.
    """
    return request.app.state.server


State = Annotated[ServerState, Depends(server_state)]

api = APIRouter()
playground = APIRouter(include_in_schema=False)


@api.get("/health", responses={200: {"model": Health}, **errors()})
def health(s: State):
    return {"status": "ok", "model": s.model_name, "waiting": s.engine.waiting, "running": s.engine.running_rows}


@api.get("/v1/models", responses={200: {"model": ModelList}, **errors(401)})
def models(s: State):
    return {"object": "list",
            "data": [{"id": s.model_name, "object": "model", "created": s.created, "owned_by": "proselab"}]}


@api.post("/v1/completions",
          responses={**streamed(Completion, CompletionChunk), **errors(400, 401, 404, 408, 413, 422, 429)})
async def completions(body: CompletionRequest, request: Request, s: State):
    gen, limits = s.generator, s.limits
    _check_model(body.model, s.model_name)
    _neutral(body, echo=False, suffix=None)
    if body.best_of is not None and body.best_of != body.n:
        raise APIError(400, "best_of is not supported (only best_of = n)", param="best_of")
    gcfg = _generation(gen, body, limits, output_scores=body.logprobs is not None)
    prompts = _prompt_ids(gen, body.prompt, limits)
    top = body.logprobs or 0
    return await respond(request, s.engine, s.mailbox, gen, body, gcfg, prompts, top, chat=False, model=s.model_name)


@api.post("/v1/chat/completions",
          responses={**streamed(ChatCompletion, ChatCompletionChunk), **errors(400, 401, 404, 408, 413, 422, 429)})
async def chat_completions(body: ChatRequest, request: Request, s: State):
    gen = s.generator
    _check_model(body.model, s.model_name)
    _neutral(body, tools=None, tool_choice=None, parallel_tool_calls=None)
    if body.response_format not in (None, {"type": "text"}):
        raise APIError(400, "response_format other than text is not supported", param="response_format")
    if body.max_completion_tokens is not None:
        body.max_tokens = body.max_completion_tokens
        body.model_fields_set.add("max_tokens")
    gcfg = _generation(gen, body, s.limits, output_scores=body.logprobs)
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": _text(m.content)}
                for m in body.messages]
    try:
        prompt = gen.chat_prompt(messages, gcfg.max_new_tokens)
    except ChatError as e:
        raise APIError(400, str(e), param="messages") from None
    ids = prompt[0] if isinstance(prompt, list) else _source_ids(gen, _last_user(messages))
    _check_prompt_length(len(ids), s.limits)
    top = (body.top_logprobs or 0) if body.logprobs else 0
    return await respond(request, s.engine, s.mailbox, gen, body, gcfg, [ids], top, chat=True, model=s.model_name)


@api.post("/v1/attention", responses={200: {"model": AttentionMap}, **errors(400, 401, 408, 413, 422)})
async def attention(body: AttentionRequest, s: State):
    gen, cfg = s.generator, s.generator.config
    if not gen.is_seq2seq:
        raise APIError(400, f"attention maps are for seq2seq runs; this run is a {cfg.model.family} model")
    _check_prompt_length(len(_source_ids(gen, body.source)), s.limits)
    max_new = min(body.max_tokens or cfg.generation.max_new_tokens, s.limits.max_tokens)
    amap = await asyncio.wrap_future(s.engine.call(lambda: gen.attention(body.source, max_new_tokens=max_new)))
    return {"text": amap.text, "src_tokens": amap.src_tokens, "tgt_tokens": amap.tgt_tokens,
            "weights": [[round(w, 4) for w in row] for row in amap.weights.tolist()]}


MAX_CLASSIFY_INPUTS = 2048  # texts in one /v1/classify request


@api.post("/v1/classify", responses={200: {"model": Classifications}, **errors(400, 401, 404, 408, 413, 422)})
async def classify(body: ClassifyRequest, s: State):
    gen = s.generator
    _check_model(body.model, s.model_name)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or len(texts) > MAX_CLASSIFY_INPUTS:
        raise APIError(400, f"input must hold 1 to {MAX_CLASSIFY_INPUTS} texts, got {len(texts)}", param="input")
    options = {} if body.classes is None else {"classes": body.classes, "verbalizers": body.verbalizers,
                                               "calibrate": body.calibrate}
    if body.template is not None:
        options["template"] = body.template
    if (body.template is not None or body.verbalizers is not None) and body.classes is None:
        raise APIError(400, "template and verbalizers are for zero-shot classification: give classes too",
                       param="classes")
    if not gen.is_classifier and body.classes is None:
        raise APIError(400, f"this run is a {gen.config.model.family} language model without a classification head: "
                       "give classes (and a template) for zero-shot classification", param="classes")
    try:
        results = await asyncio.wrap_future(s.classifier.submit(texts, options))
    except ValueError as e:
        raise APIError(400, str(e), param="input") from None
    n_tokens = sum(len(ids) for ids in gen.tokenizer.encode_batch(texts))
    return {"object": "list", "model": s.model_name,
            "data": [{"object": "classification", "index": i, "label": r.label, "probs": r.probs}
                     for i, r in enumerate(results)],
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}


@playground.get("/", response_class=HTMLResponse)
def page(s: State) -> str:
    gen, cfg = s.generator, s.generator.config
    html = resources.files("proselab.server").joinpath("static/index.html").read_text(encoding="utf-8")
    info = {"model": s.model_name, "family": cfg.model.family, "seq2seq": gen.is_seq2seq,
            "chat": not gen.is_classifier and _can_chat(gen), "auth": s.api_key is not None,
            "defaults": _defaults(cfg.generation), "labels": cfg.model.labels}
    return html.replace("/*PROSELAB_INFO*/{}", json.dumps(info))


@playground.get("/static/{name}")
def static(name: str) -> Response:
    kinds = {"app.js": "text/javascript", "style.css": "text/css"}
    if name not in kinds:
        raise APIError(404, f"no such file: {name}", "not_found_error")
    text = resources.files("proselab.server").joinpath(f"static/{name}").read_text(encoding="utf-8")
    return Response(text, media_type=kinds[name])


# ---- request -> generation settings --------------------------------------------------------
def _check_model(requested: str | None, name: str) -> None:
    if requested is not None and requested != name:
        raise APIError(404, f"the model '{requested}' does not exist; this server serves '{name}'",
                       "not_found_error", "model", "model_not_found")


def _neutral(body, **neutral) -> None:
    """OpenAI settings proselab cannot honour must be at their neutral values."""
    for field, value in neutral.items():
        if getattr(body, field) != value:
            raise APIError(400, f"{field} is not supported by proselab (leave it at {value!r})", param=field)


def _logit_bias(body) -> dict[int, float]:
    """OpenAI's logit_bias, whose keys are token ids written as JSON text ("50256")."""
    out = {}
    for key, bias in (body.logit_bias or {}).items():
        if not key.strip().isdigit():
            raise APIError(400, f"logit_bias keys must be token ids, got {key!r}", param="logit_bias")
        out[int(key)] = bias
    return out


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
    if body.temperature is not None:  # 0 means greedy, in the decoding engine, as everywhere in proselab
        o["temperature"] = body.temperature
        if body.temperature > 0:  # OpenAI has no do_sample: a temperature samples, even from a greedy run
            o["do_sample"] = True
    names = {"top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "typical_p": "typical_p", "seed": "seed",
             "repetition_penalty": "repetition_penalty", "no_repeat_ngram_size": "no_repeat_ngram_size",
             "min_tokens": "min_new_tokens", "num_beams": "num_beams", "length_penalty": "length_penalty",
             "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}
    for field, key in names.items():
        if field in given and getattr(body, field) is not None:
            o[key] = getattr(body, field)
    if body.stop is not None:
        o["stop"] = [body.stop] if isinstance(body.stop, str) else list(body.stop)
    if body.logit_bias:
        o["logit_bias"] = _logit_bias(body)
    if o.get("num_beams", 1) > 1 and "temperature" not in o:
        o.setdefault("do_sample", False)
    try:
        return generator.generation_config(**o)
    except (ConfigError, ValueError) as e:
        field = next((f for f in [*names, "logit_bias"] if names.get(f, f) in str(e)), None)
        raise APIError(400, str(e).replace("generation.", ""), param=field) from None


def _check_prompt_length(n: int, limits: Limits) -> None:
    if n > limits.max_prompt_tokens:
        raise APIError(400, f"the prompt has {n} tokens; this server accepts at most {limits.max_prompt_tokens} "
                       "(--max-prompt-tokens)", param="prompt", code="context_length_exceeded")


def _prompt_ids(generator, prompt, limits: Limits) -> list[list[int]]:
    """Each prompt as token ids (sources end with eos for seq2seq)."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
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
            ids = encoder_ids(p, generator.config.data.truncate_src, generator.src_tokenizer.eos_id,
                              generator.config.model.src_prefix_id) \
                if generator.is_seq2seq else list(p)
        _check_prompt_length(len(ids), limits)
        out.append(ids)
    return out


def _source_ids(generator, text: str) -> list[int]:
    if not text.strip():
        raise APIError(400, "the source is empty; an encoder-decoder needs text to transform", param="prompt")
    return source_ids(generator.src_tokenizer, text, generator.config.data.truncate_src,
                      generator.config.model.src_prefix_id)


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
            "top_k": g.top_k, "repetition_penalty": g.repetition_penalty, "presence_penalty": g.presence_penalty,
            "frequency_penalty": g.frequency_penalty}
