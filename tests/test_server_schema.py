"""schemathesis against proselab serve's app, through its pytest integration: every operation of
/openapi.json gets generated requests, valid and invalid, on a tiny randomly initialised GPT
that can chat. Seeded and derandomized, every run sends the same ~900 requests in ~20 s on one
core: ~800 from the coverage phase (each field's boundary values and wrong types, and other
methods, which is what finds a 405 without Allow or a boolean taken for a number) and
``EXAMPLES`` fuzzed ones per operation.

Every response must be what the schema documents (status, content type, headers, body), never
a 5xx, JSON that any parser reads (no NaN or Infinity), and a stream must be Server-Sent Events
whose data are JSON chunks as documented, ending with [DONE].
"""

import json

import jsonschema_rs  # schemathesis' own JSON Schema validator
import pytest
import schemathesis
import torch
from fastapi.testclient import TestClient

from conftest import shakespeare_text
from proselab.api import Generator
from proselab.chat import add_special_tokens, template_tokens
from proselab.config import load_config
from proselab.models import build_model
from proselab.server import Limits, create_app
from proselab.tokenizers import train_tokenizer

EXAMPLES = 25  # fuzzed requests per operation, after the coverage phase's deterministic ones

CONFIG = {
    "seed": 16,
    "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
    "checks": {
        # 400 answers a body that matches the schema but that this run or the server's limits
        # cannot take (a prompt over --max-prompt-tokens, max_tokens over --max-tokens, a setting
        # proselab does not support); 413 a body over the size limit, which a schema cannot state.
        # A valid body must still never get 422: that is what this check is here for.
        "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "413", "429"]},
    },
}


def tiny_chat_generator() -> Generator:
    """A randomly initialised 1-layer GPT whose byte-level BPE (which reads any text) has ChatML's tokens."""
    tok = train_tokenizer("bpe", [shakespeare_text(5000)], vocab_size=300)
    tok = add_special_tokens(tok, template_tokens("chatml"))
    cfg = load_config(None, {"model.n_layer": 1, "model.n_head": 2, "model.n_embd": 16, "model.block_size": 32,
                             "model.vocab_size": tok.vocab_size, "generation.max_new_tokens": 4})
    torch.manual_seed(0)
    return Generator(build_model(cfg.model).eval(), tok, cfg)


@pytest.fixture(scope="module")
def generator():
    return tiny_chat_generator()


@pytest.fixture
def app(generator):
    """A fresh app per test: schemathesis ends the lifespan of an app it served (which stops its
    engine) when the test that served it ends."""
    app = create_app(generator, max_batch=8, max_queue=16, limits=Limits(32, 8))
    yield app
    app.state.engine.close()


@pytest.fixture
def api_schema(app):
    config = schemathesis.config.SchemathesisConfig.from_dict(CONFIG)
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


@pytest.fixture
def documented(app) -> dict:
    return app.openapi()


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as every JSON parser but Python's does."""
    def refuse(word):
        raise AssertionError(f"not JSON: {word}")
    return json.loads(text, parse_constant=refuse)


def _chunk_validator(documented: dict, path: str):
    """A validator of one stream chunk, from the schema the event stream's data documents."""
    sse = documented["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]
    chunk = sse["itemSchema"]["properties"]["data"]["anyOf"][1]["contentSchema"]
    return jsonschema_rs.Draft202012Validator({**chunk, "components": documented["components"]})


def check_json_and_streams(documented: dict):
    """A schemathesis check: bodies are strict JSON; a stream's events are documented chunks, then [DONE]."""

    def check(ctx, response, case):
        kind = response.headers.get("content-type", [""])[0]
        if kind.startswith("application/json"):
            _strict_json(response.text)
        elif kind.startswith("text/event-stream"):
            events = response.text.split("\n\n")
            assert events[-2:] == ["data: [DONE]", ""], f"the stream does not end with [DONE]: {response.text[-200:]}"
            validator = _chunk_validator(documented, case.operation.path)
            for event in events[:-2]:
                assert event.startswith("data: "), f"not a data event: {event!r}"
                validator.validate(_strict_json(event.removeprefix("data: ")))
        else:
            raise AssertionError(f"undocumented content type {kind!r}")

    return check


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_response_is_as_documented(case, documented):
    response = case.call_and_validate(additional_checks=[check_json_and_streams(documented)])
    assert response.status_code < 500


def test_the_schema_documents_errors_and_streams(documented):
    """What schemathesis does not check by itself: every error status is documented with the error
    body the server sends (503, uvicorn's, is plain text), and the streams' chunks are components."""
    for path, operations in documented["paths"].items():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if status not in ("200", "503"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
            assert "text/plain" in operation["responses"]["503"]["content"], path
    for path in ("/v1/completions", "/v1/chat/completions"):
        assert "text/event-stream" in documented["paths"][path]["post"]["responses"]["200"]["content"]
    assert {"ChatCompletionChunk", "CompletionChunk", "ErrorBody"} <= set(documented["components"]["schemas"])


@pytest.mark.parametrize("value, integer, number", [(2, 200, 200), (2.0, 200, 200), (2.5, 422, 200), ("2", 422, 422),
                                                    (True, 422, 422)])
def test_types_are_json_schemas(app, value, integer, number):
    """The schema says "integer", and 2.0 is one in JSON Schema: it is 2, not a 422. A string or a
    boolean is neither an integer nor a number (422); a valid body this server cannot take is a 400."""
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        assert client.post("/v1/completions", json={"prompt": "ROMEO:", "max_tokens": value}).status_code == integer
        assert client.post("/v1/completions", json={"prompt": "ROMEO:", "max_tokens": 2,
                                                    "length_penalty": value}).status_code == number
        assert client.post("/v1/completions", json={"prompt": "ROMEO:", "max_tokens": 9}).status_code == 400


def test_a_keyed_server_documents_its_bearer_key(generator):
    """With --api-key the /v1 routes declare an HTTP bearer scheme (the docs page's Authorize
    button, generated clients); without one, nothing asks for a key."""
    with TestClient(create_app(generator, api_key="k3y")) as c:
        keyed = c.get("/openapi.json").json()
    assert keyed["components"]["securitySchemes"]["apiKey"] == {**keyed["components"]["securitySchemes"]["apiKey"],
                                                                "type": "http", "scheme": "bearer"}
    for path, item in keyed["paths"].items():
        for operation in item.values():
            assert operation.get("security") == ([{"apiKey": []}] if path.startswith("/v1/") else None), path
    with TestClient(create_app(generator)) as c:
        plain = c.get("/openapi.json").json()
    assert "securitySchemes" not in plain["components"]
    assert not any("security" in op for item in plain["paths"].values() for op in item.values())


def test_a_body_that_does_not_arrive_in_time_is_a_408():
    """A client that sends its headers and then trickles (or stops sending) the body gets 408
    within body_seconds, and the route never runs."""
    import asyncio

    from proselab.server.app import Guard

    async def route(scope, receive, send):
        raise AssertionError("the route ran")

    async def main():
        sent = []
        first = True

        async def receive():
            nonlocal first
            if first:  # a piece of the body, then nothing more
                first = False
                return {"type": "http.request", "body": b'{"pro', "more_body": True}
            await asyncio.sleep(60)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": [], "query_string": b""}
        await asyncio.wait_for(Guard(route, None, 1 << 20, body_seconds=0.2)(scope, receive, send), 5)
        return sent

    sent = asyncio.run(main())
    assert sent[0]["status"] == 408
    assert b"did not arrive within 0.2 s" in b"".join(m.get("body", b"") for m in sent)
