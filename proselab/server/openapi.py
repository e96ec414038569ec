"""What /openapi.json says the server answers: each route's response body, its error statuses
(all with OpenAI's error body) and, for the routes that stream, the Server-Sent Events.

These models only document: the routes build their answers as dicts (``responses.py``), and
``tests/test_server_schema.py`` checks with schemathesis that what they send is what is written
here. The statuses mean one thing on every route: 422 for a body that does not match the
request schema (a wrong type, a value out of range, an unknown field), 400 for a body that
does but that this run or this server's limits cannot take.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter


class ErrorDetail(BaseModel):
    message: str
    type: str  # invalid_request_error, not_found_error, rate_limit_error, ...
    param: str | None  # the request field at fault
    code: str | None  # e.g. context_length_exceeded, invalid_api_key, model_not_found


class ErrorBody(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


ERRORS = {
    400: "the request matches the schema, but this run or this server's limits cannot take it (a prompt above "
         "--max-prompt-tokens, max_tokens above --max-tokens, a setting proselab or this run does not support)",
    401: "the API key is missing or wrong (a server started with --api-key)",
    404: "the model named is not the one this server serves",
    408: "the request body did not arrive in time (30 s by default)",
    413: "the request body is larger than the server accepts",
    422: "the request does not match the schema: not JSON, a wrong type, a value out of range, an unknown field",
    429: "the queue is full (--max-queue): retry later",
}


# uvicorn's own answer, before the app sees the request: plain text
BUSY = {503: {"description": "the server holds --limit-concurrency connections already: retry later",
              "content": {"text/plain": {"schema": {"type": "string", "const": "Service Unavailable"}}}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entries of a route's error ``statuses``, and 503."""
    return {**{s: {"model": ErrorBody, "description": ERRORS[s]} for s in statuses}, **BUSY}


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]  # null: a token the processors ruled out (-inf)
    top_logprobs: list[dict[str, float | None] | None] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"]


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunkChoice(CompletionChoice):
    finish_reason: Literal["stop", "length"] | None  # null until the sequence's last chunk


class CompletionChunk(BaseModel):
    """One event of a streamed completion; the last, with stream_options.include_usage, has no
    choices and the usage."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float | None
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]


class ChatMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    logprobs: ChatLogprobs | None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None  # in each sequence's first chunk
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: Literal["stop", "length"] | None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class Health(BaseModel):
    status: Literal["ok"]
    model: str
    waiting: int  # requests queued
    running: int  # rows being decoded


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class AttentionMap(BaseModel):
    text: str
    src_tokens: list[str]
    tgt_tokens: list[str]
    weights: list[list[float]]  # (len(tgt_tokens), len(src_tokens))


class Classification(BaseModel):
    object: Literal["classification"]
    index: int
    label: str
    probs: dict[str, float]


class ClassifyUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class Classifications(BaseModel):
    object: Literal["list"]
    model: str
    data: list[Classification]
    usage: ClassifyUsage


def streamed(whole: type[BaseModel], chunk: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The 200 response of a route that answers ``whole`` as JSON, or with ``"stream": true`` a
    stream of ``chunk`` events, as OpenAI sends them; ``stream_schemas`` fills in the chunk."""
    return {200: {"model": whole, "description": f"a {whole.__name__}, or with stream: true an event stream of "
                  f"{chunk.__name__} objects (an ErrorBody if generation fails), then [DONE]",
                  "content": {"text/event-stream": {"x-chunk": chunk.__name__}}}}


STREAM_CHUNKS = {m.__name__: m for m in (CompletionChunk, ChatCompletionChunk)}


def stream_schemas(schema: dict, keyed: bool = False) -> dict:
    """``schema`` (the app's OpenAPI document) with each event stream's ``itemSchema``, as FastAPI
    writes it for its own SSE routes: an event whose data is a JSON chunk, or [DONE] last. With
    ``keyed`` (a server with an API key), the /v1 routes say they need it as a bearer token,
    so clients generated from the schema and the docs page's Authorize button send it."""
    if keyed:
        schema.setdefault("components", {})["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "the key the server was started with "
                                                                          "(--api-key or $PROSELAB_API_KEY)"}}
        for path, item in schema.get("paths", {}).items():
            for operation in item.values() if path.startswith("/v1/") else ():
                operation["security"] = [{"apiKey": []}]
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for operation in (op for path in schema.get("paths", {}).values() for op in path.values()):
        for response in operation.get("responses", {}).values():
            sse = response.get("content", {}).get("text/event-stream")
            if sse is None or "x-chunk" not in sse:
                continue
            chunk = STREAM_CHUNKS[sse.pop("x-chunk")]
            data = TypeAdapter(chunk | ErrorBody).json_schema(ref_template="#/components/schemas/{model}")
            for name, model in data.pop("$defs", {}).items():
                components.setdefault(name, model)
            sse["itemSchema"] = {"type": "object", "required": ["data"], "properties": {
                "data": {"type": "string", "anyOf": [
                    {"const": "[DONE]"},
                    {"contentMediaType": "application/json", "contentSchema": data}]},
                "event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer", "minimum": 0}}}
    return schema
