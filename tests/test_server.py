"""proselab serve through real clients: the official openai package against a server on a free
loopback port (completions, chat, streaming, logprobs, errors, auth), raw HTTP for what the
client hides (413, SSE framing, disconnects), a burst of concurrent requests, and the CLI."""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import uvicorn

import proselab
from conftest import shakespeare_text, tiny_overrides
from proselab.server import Limits, create_app
from proselab.training import train

KEY = "sk-test-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A uvicorn server for ``app`` in a thread, on a free loopback port."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="info"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    corpus = tmp / "corpus.txt"
    corpus.write_text(shakespeare_text(20_000), encoding="utf-8")
    train(None, tiny_overrides(corpus, tmp / "tiny", "gpt", **{"train.max_iters": 10, "data.tokenizer": "bpe",
                                                                "data.vocab_size": 300, "model.block_size": 64}))
    return tmp / "tiny"


@pytest.fixture(scope="module")
def served(gpt_run):
    gen = proselab.load(gpt_run)
    app = create_app(gen, api_key=KEY, max_batch=8, max_queue=32, limits=Limits(48, 200, 4096))
    with Server(app) as server:
        server.gen, server.app = gen, app
        yield server


def client(server, key=KEY):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def post(server, path, body, key=KEY, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_models_health_and_the_openapi_schema(served):
    c = client(served)
    assert [m.id for m in c.models.list().data] == ["tiny"]
    with urllib.request.urlopen(served.url + "/health") as r:  # no key needed
        assert json.load(r)["status"] == "ok"
    with urllib.request.urlopen(served.url + "/openapi.json") as r:
        schema = json.load(r)
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health"} <= set(schema["paths"])
    fields = schema["components"]["schemas"]["CompletionRequest"]["properties"]
    assert {"prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "logprobs",
            "top_k", "repetition_penalty", "num_beams"} <= set(fields)


def test_completions_match_offline_generation(served):
    """Greedy and seeded sampling over HTTP give exactly what proselab.load(...).generate gives."""
    c = client(served)
    r = c.completions.create(model="tiny", prompt="ROMEO:", max_tokens=20, temperature=0)
    assert r.choices[0].text == served.gen.generate("ROMEO:", do_sample=False, max_new_tokens=20)
    assert r.choices[0].finish_reason in ("stop", "length") and r.object == "text_completion"
    assert r.usage.prompt_tokens == len(served.gen.encode_prompt("ROMEO:")) and r.usage.completion_tokens > 0
    r = c.completions.create(model="tiny", prompt="The", max_tokens=15, temperature=0.9, top_p=0.9, seed=7, n=2,
                             extra_body={"top_k": 30, "repetition_penalty": 1.2})
    offline = served.gen.generate("The", max_new_tokens=15, temperature=0.9, top_p=0.9, seed=7, top_k=30,
                                  repetition_penalty=1.2, num_return_sequences=2)
    assert [ch.text for ch in r.choices] == offline and [ch.index for ch in r.choices] == [0, 1]
    r = c.completions.create(model="tiny", prompt=["a", "b"], max_tokens=5, temperature=0)
    assert [ch.text for ch in r.choices] == served.gen.generate(["a", "b"], do_sample=False, max_new_tokens=5)
    beams = c.completions.create(model="tiny", prompt="The", max_tokens=6, n=2, extra_body={"num_beams": 3})
    assert [ch.text for ch in beams.choices] == served.gen.generate("The", max_new_tokens=6, num_beams=3,
                                                                    num_return_sequences=2, do_sample=False)


def test_presence_and_frequency_penalties_and_logit_bias_as_openai_has_them(served):
    c, gen = client(served), served.gen
    plain = gen.complete("The", do_sample=False, max_new_tokens=16)[0].tokens
    openai_args = {"presence_penalty": 1.0, "frequency_penalty": 2.0, "logit_bias": {str(plain[0]): -100}}
    r = c.completions.create(model="tiny", prompt="The", max_tokens=16, temperature=0, **openai_args)
    ours = gen.complete("The", do_sample=False, max_new_tokens=16, presence_penalty=1.0, frequency_penalty=2.0,
                        logit_bias={plain[0]: -100.0})[0]
    assert r.choices[0].text == ours.text and plain[0] not in ours.tokens  # banned
    assert len(set(plain)) < len(plain)  # the tiny model repeats itself greedily...
    assert len(set(ours.tokens)) > len(set(plain))  # ...and less under the penalties


def test_streaming_adds_up_to_the_whole_completion(served):
    c = client(served)
    whole = c.completions.create(model="tiny", prompt="KING:", max_tokens=25, temperature=0, stop=["\n\n"])
    chunks = list(c.completions.create(model="tiny", prompt="KING:", max_tokens=25, temperature=0, stop=["\n\n"],
                                       stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == whole.choices[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    status, body = post(served, "/v1/completions", {"prompt": "a", "max_tokens": 3, "stream": True})
    assert status == 200 and body.rstrip().endswith("data: [DONE]")
    assert all(part.startswith("data: ") for part in body.strip().split("\n\n"))


def test_logprobs(served):
    c = client(served)
    r = c.completions.create(model="tiny", prompt="The", max_tokens=6, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == r.usage.completion_tokens
    assert "".join(lp.tokens) == r.choices[0].text
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 2 and max(top.values()) == pytest.approx(chosen)  # greedy takes the top token


def test_chat_needs_a_chat_run_and_says_so(served):
    with pytest.raises(openai.BadRequestError, match="not fine-tuned for chat"):
        client(served).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"model": "gpt-4"}, openai.NotFoundError, "does not exist"),
    ({"max_tokens": 10_000}, openai.BadRequestError, "at most 200"),
    ({"temperature": 5}, openai.UnprocessableEntityError, "temperature"),
    ({"extra_body": {"top_kk": 3}}, openai.UnprocessableEntityError, "top_kk"),
    ({"presence_penalty": 3}, openai.UnprocessableEntityError, "presence_penalty"),
    ({"logit_bias": {"x": 1}}, openai.BadRequestError, "logit_bias keys must be token ids"),
    ({"logit_bias": {"99999": 1}}, openai.BadRequestError, "not a token of this model"),
    ({"logit_bias": {"5": 101}}, openai.UnprocessableEntityError, "logit_bias"),
    ({"extra_body": {"echo": True}}, openai.BadRequestError, "echo is not supported"),
    ({"prompt": "the " * 60}, openai.BadRequestError, "at most 48"),
    ({"n": 9}, openai.BadRequestError, "exceed"),
    ({"extra_body": {"num_beams": 2}, "n": 3}, openai.BadRequestError, "num_return_sequences"),
])
def test_bad_requests_get_openai_errors(served, kwargs, error, match):
    args = {"model": "tiny", "prompt": "a", "max_tokens": 4, **kwargs}
    with pytest.raises(error, match=match) as e:
        client(served).completions.create(**args)
    body = e.value.body
    assert set(body) >= {"message", "type", "param", "code"}


def chunked_post(server, path, pieces):
    """POST ``pieces`` with Transfer-Encoding: chunked (no Content-Length); the raw response."""
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    # in one write: a server that answers 413 midway closes the connection, and bytes still
    # arriving then would reset it before the answer is read
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    return got


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


def test_auth_body_size_and_the_key_stays_out_of_the_logs(served):
    server_logs = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.access", "uvicorn.error", "proselab.server")]
    recorder = Recorder()
    for lg in server_logs:
        lg.addHandler(recorder)
    with pytest.raises(openai.AuthenticationError):
        client(served, key="wrong").completions.create(model="tiny", prompt="a", max_tokens=2)
    status, body = post(served, "/v1/models", None, key="", raw=b"")
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    status, body = post(served, "/v1/completions", None, raw=b'{"prompt": "' + b"x" * 5000 + b'"}')
    assert status == 413 and "larger than" in json.loads(body)["error"]["message"]
    status, body = post(served, "/v1/completions", None, raw=b"{not json")
    assert status == 422 and "error" in json.loads(body)
    # without a Content-Length the size is counted as the body arrives
    small = json.dumps({"prompt": "a", "max_tokens": 2}).encode()
    assert chunked_post(served, "/v1/completions", [small[:5], small[5:]]).startswith(b"HTTP/1.1 200")
    big = chunked_post(served, "/v1/completions", [b'{"prompt": "'] + [b"x" * 1000] * 5 + [b'"}'])
    assert big.startswith(b"HTTP/1.1 413") and b"larger than" in big
    client(served).completions.create(model="tiny", prompt="a", max_tokens=2)
    for lg in server_logs:
        lg.removeHandler(recorder)
    logged = "\n".join(recorder.lines)
    assert "POST /v1/completions" in logged and KEY not in logged


def test_a_burst_of_concurrent_requests_all_succeed_and_share_steps(served):
    engine = served.app.state.engine
    before = engine.steps
    prompts = [f"{w} " for w in "The king my lord good sir what shall we do now thou art here love night".split()]

    def one(p):
        return client(served).completions.create(model="tiny", prompt=p, max_tokens=20, temperature=0).choices[0].text

    with ThreadPoolExecutor(16) as pool:
        texts = list(pool.map(one, prompts))
    assert texts == served.gen.generate(prompts, do_sample=False, max_new_tokens=20)
    assert engine.steps - before < 16 * 20 / 2  # sequentially it would take 320 steps


def test_a_stream_that_falls_behind_sends_what_piled_up_in_fewer_chunks():
    """Events the client has not taken yet go out as one chunk per sequence: the text, the
    tokens' logprobs and the finish reason all arrive, in order; a sequence's chunks are not
    joined across its finish, nor when they carry top logprobs."""
    import asyncio

    from proselab.decoding.stopping import Delta, Generation
    from proselab.server.streaming import sse as _sse
    from proselab.server.engine import Event
    from proselab.server.responses import Shape

    class Tok:
        def decode(self, ids):
            return "".join(chr(96 + i) for i in ids)

    class Job:
        def cancel(self):
            pass

    async def stream(events, top=0, n=1):
        queue = asyncio.Queue()
        for e in events:
            queue.put_nowait((0, e))
        shape = Shape("cmpl-1", "m", False, Tok(), n, top)
        return [json.loads(line[6:]) for line in [x async for x in _sse(None, queue, [Job()], shape,
                                                                                {"prompt_tokens": 2}, True)]
                if line.startswith("data: {")]

    def step(i, t, fin=None, top=None):  # sequence i's token t, with logprob -t / 2
        return Event(deltas=[Delta(i, Tok().decode([t]), [t], fin, [-0.5 * t])], top=top)

    last = Event(deltas=[Delta(0, "c", [3], "length", [-1.5]), Delta(1, "z", [26], "length", [-13.0])],
                 results=[Generation("abc", [1, 2, 3], "length", 0), Generation("yz", [25, 26], "length", 0)])
    chunks = asyncio.run(stream([step(0, 1), step(1, 25), step(0, 2), last], n=2))
    texts = [(c["choices"][0]["index"], c["choices"][0]["text"], c["choices"][0]["finish_reason"])
             for c in chunks if c["choices"]]
    assert texts == [(0, "abc", "length"), (1, "yz", "length")]
    assert chunks[0]["choices"][0]["logprobs"]["token_logprobs"] == [-0.5, -1.0, -1.5]
    assert chunks[0]["choices"][0]["logprobs"]["text_offset"] == [0, 1, 2]
    assert chunks[-1]["usage"]["completion_tokens"] == 5

    finished_first = [step(0, 1, "length"), Event(deltas=[], results=[Generation("a", [1], "length", 0)])]
    assert len([c for c in asyncio.run(stream(finished_first)) if c["choices"]]) == 1
    with_top = [step(0, 1, top={0: [(1, -0.5)]}), step(0, 2, "length", top={0: [(2, -1.0)]}),
                Event(deltas=[], results=[Generation("ab", [1, 2], "length", 0)])]
    tops = [c["choices"][0]["logprobs"]["top_logprobs"] for c in asyncio.run(stream(with_top, top=1)) if c["choices"]]
    assert tops == [[{"a": -0.5}], [{"b": -1.0}]]


def test_the_mailbox_hands_events_to_the_loop_in_one_wakeup():
    """Events posted from another thread reach their queues, in order, only on ``wake``, and
    through one call into the loop however many there were; a closed loop drops them."""
    import asyncio

    from proselab.server.streaming import Mailbox

    mailbox = Mailbox()

    async def main():
        loop = asyncio.get_running_loop()
        calls = []
        threadsafe = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a: calls.append(a) or threadsafe(*a)
        a, b = asyncio.Queue(), asyncio.Queue()

        def engine_thread(wake):
            for i in range(3):
                mailbox.post(loop, a, ("a", i))
                mailbox.post(loop, b, ("b", i))
            if wake:
                mailbox.wake()

        for wake in (False, True):
            worker = threading.Thread(target=engine_thread, args=(wake,))
            worker.start()
            await asyncio.to_thread(worker.join)
            await asyncio.sleep(0.05)
        got_a = [a.get_nowait() for _ in range(a.qsize())]
        got_b = [b.get_nowait() for _ in range(b.qsize())]
        return got_a, got_b, len([c for c in calls if c[0] == mailbox._deliver]), loop

    got_a, got_b, calls, loop = asyncio.run(main())
    assert got_a == [("a", i) for i in (0, 1, 2)] * 2 and got_b == [("b", i) for i in (0, 1, 2)] * 2
    assert calls == 1
    mailbox.post(loop, asyncio.Queue(), "late")  # the loop is closed now
    mailbox.wake()
    assert not mailbox._items and not mailbox._scheduled


def test_a_client_that_disconnects_stops_its_generation(gpt_run):
    gen = proselab.load(gpt_run)
    app = create_app(gen, limits=Limits(48, 1_000_000))
    engine = app.state.engine
    with Server(app) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        body = json.dumps({"prompt": "The", "max_tokens": 1_000_000, "min_tokens": 1_000_000, "stream": True})
        sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        got = b""
        while b"data: " not in got:  # headers first, then the first chunk
            got += sock.recv(4096)
        while engine.steps < 10:
            time.sleep(0.01)
        assert engine.running_rows == 1
        sock.close()
        deadline = time.monotonic() + 10
        while engine.running_rows and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.running_rows == 0  # it asked for a million tokens


def test_a_full_queue_answers_429(gpt_run):
    gen = proselab.load(gpt_run)
    with Server(create_app(gen, max_batch=1, max_queue=1)) as server:
        def one(_):
            try:
                client(server).completions.create(model="tiny", prompt="a", max_tokens=60, temperature=0)
                return 200
            except openai.RateLimitError:
                return 429

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(one, range(8)))
    assert 429 in codes and 200 in codes


def test_seq2seq_run_serves_completions_chat_and_attention(tmp_path):
    from test_seq2seq import s2s_overrides

    train(None, s2s_overrides(tmp_path, **{"model.arch": "rnn", "train.max_iters": 10}))
    gen = proselab.load(tmp_path / "run")
    with Server(create_app(gen)) as server:
        c = client(server)
        r = c.completions.create(model="run", prompt="a b c", max_tokens=8, temperature=0)
        assert r.choices[0].text == gen.generate("a b c", do_sample=False, max_new_tokens=8)
        chat = c.chat.completions.create(model="run", max_tokens=8, temperature=0,
                                         messages=[{"role": "user", "content": "x"},
                                                   {"role": "assistant", "content": "y"},
                                                   {"role": "user", "content": "a b c"}])
        assert chat.choices[0].message.content == r.choices[0].text
        streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="run", max_tokens=8, temperature=0, stream=True, messages=[{"role": "user", "content": "a b c"}]))
        assert streamed == r.choices[0].text
        status, body = post(server, "/v1/attention", {"source": "a b c", "max_tokens": 8})
        amap = json.loads(body)
        assert status == 200 and len(amap["weights"]) == len(amap["tgt_tokens"])
        assert all(len(row) == len(amap["src_tokens"]) for row in amap["weights"])


def test_cli_serve_binds_loopback_and_reads_the_key_from_the_environment(gpt_run):
    """Also --threads and --dtype, through the real command line."""
    port = free_port()
    env = {**os.environ, "PROSELAB_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "proselab", "serve", str(gpt_run), "--port", str(port),
                             "--threads", "1", "--dtype", "bfloat16"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
                time.sleep(0.2)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        assert c.completions.create(model="tiny", prompt="a", max_tokens=3).choices[0].text is not None
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="nope", max_retries=0).models.list()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"127.0.0.1:{port}" in out and "(bfloat16 weights)" in out and KEY not in out


# ---- the playground, in a real browser ---------------------------------------------------------


STREAM_WATCH = """() => {
  window.updates = 0;
  new MutationObserver(() => { window.updates += 1; })
    .observe(document.getElementById('output'), {childList: true, subtree: true, characterData: true});
}"""


def test_playground_streams_a_completion(served, browser):
    page = browser.new_page()
    page.goto(served.url)
    assert page.text_content("#model-name") == "tiny"
    assert page.is_visible("#complete-pane") and not page.is_visible("#chat-pane")  # not a chat run
    assert page.is_visible("#api-key")  # this server needs a key
    page.fill("#api-key", KEY)
    page.fill("#prompt", "ROMEO:")
    page.fill("#temperature", "0")
    # long enough to arrive in several reads: a stream that falls behind is sent in fewer chunks,
    # and 30 tokens of this tiny model could come in two
    page.fill("#max_tokens", "150")
    page.evaluate(STREAM_WATCH)
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=30_000)
    assert page.text_content("#output .generated") == served.gen.generate("ROMEO:", do_sample=False,
                                                                          max_new_tokens=150)
    assert page.evaluate("window.updates") > 1  # the text came in pieces (few when the machine is busy: coalesced)
    assert page.input_value("#presence_penalty") == page.input_value("#frequency_penalty") == "0"  # the run's
    page.fill("#presence_penalty", "1")
    page.fill("#frequency_penalty", "2")
    page.fill("#max_tokens", "16")
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=30_000)
    penalised = served.gen.generate("ROMEO:", do_sample=False, max_new_tokens=16, presence_penalty=1.0,
                                    frequency_penalty=2.0)
    assert page.text_content("#output .generated") == penalised
    assert penalised != served.gen.generate("ROMEO:", do_sample=False, max_new_tokens=16)  # the settings count
    page.fill("#api-key", "wrong")
    page.click("#generate")
    page.wait_for_selector("#output .error", timeout=30_000)
    assert "API key" in page.text_content("#output .error")
    page.close()


def test_playground_translates_chats_and_draws_attention_for_seq2seq(tmp_path, browser):
    from test_seq2seq import s2s_overrides

    train(None, s2s_overrides(tmp_path, **{"model.arch": "rnn", "train.max_iters": 10}))
    gen = proselab.load(tmp_path / "run")
    with Server(create_app(gen)) as server:
        page = browser.new_page()
        page.goto(server.url)
        assert page.text_content("#prompt-label") == "Source"
        assert page.is_visible("#complete-pane")  # a source to transform, though it can chat too
        assert not page.is_visible("#key-label")  # no key needed, no key field
        page.fill("#prompt", "a b c")
        page.fill("#temperature", "0")
        page.fill("#max_tokens", "8")
        page.click("#generate")
        page.wait_for_selector("#attention-box:not([hidden])", timeout=30_000)
        expected = gen.generate("a b c", do_sample=False, max_new_tokens=8)
        assert page.text_content("#output .generated") == expected
        assert page.evaluate("document.getElementById('attention').width") > 110
        page.click("#mode-chat")
        page.fill("#chat-input", "a b c")
        page.press("#chat-input", "Enter")
        page.wait_for_function("!document.getElementById('send').disabled && "
                               "document.querySelectorAll('#messages .assistant').length == 1", timeout=30_000)
        assert page.text_content("#messages .assistant") == expected
        page.close()


def test_playground_opens_a_chat_run_in_chat_mode_and_asks_for_a_key_only_when_needed(tmp_path, browser):
    from test_cli_idioms import train_chat_run

    gen = proselab.load(train_chat_run(tmp_path))
    with Server(create_app(gen)) as server:
        page = browser.new_page()
        page.goto(server.url)
        assert page.is_visible("#chat-pane") and not page.is_visible("#complete-pane")
        assert "active" in page.get_attribute("#mode-chat", "class")
        assert not page.is_visible("#key-label") and not page.is_visible("#api-key")
        page.fill("#temperature", "0")
        page.fill("#max_tokens", "10")
        page.fill("#chat-input", "say red 1")
        page.press("#chat-input", "Enter")
        page.wait_for_function("!document.getElementById('send').disabled && "
                               "document.querySelectorAll('#messages .assistant').length == 1", timeout=30_000)
        expected = gen.chat([{"role": "user", "content": "say red 1"}], do_sample=False, max_new_tokens=10).text
        assert page.text_content("#messages .assistant") == expected
        page.click("#mode-complete")
        assert page.is_visible("#complete-pane") and not page.is_visible("#chat-pane")
        page.close()
    with Server(create_app(gen, api_key=KEY)) as server:
        page = browser.new_page()
        page.goto(server.url)
        assert page.is_visible("#chat-pane") and page.is_visible("#api-key")
        assert KEY not in page.content()  # the page learns that a key is needed, not the key
        page.close()


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as every JSON parser but Python's does."""
    def refuse(word):
        raise ValueError(f"not JSON: {word}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("settings", [{"top_k": 3}, {"top_p": 0.1}, {"min_p": 0.9}])
def test_ruled_out_tokens_logprobs_are_null_not_500_or_infinity(served, settings):
    """-inf log-probabilities (tokens the processors ruled out) are null in whole responses and streams."""
    body = {"prompt": "ROMEO:", "logprobs": 5, "max_tokens": 3, "temperature": 0.7, "seed": 1, **settings}
    status, text = post(served, "/v1/completions", body)
    assert status == 200, text
    tops = _strict_json(text)["choices"][0]["logprobs"]["top_logprobs"]
    if "top_k" in settings:  # 5 asked, 3 allowed: the other two are null
        assert all(sum(v is None for v in top.values()) == 2 for top in tops)
    status, text = post(served, "/v1/completions", {**body, "stream": True})
    assert status == 200
    for part in text.strip().split("\n\n")[:-1]:
        _strict_json(part.removeprefix("data: "))


def test_a_lone_surrogate_in_a_prompt_is_a_400(served):
    raw = b'{"prompt": "ROMEO\\ud800", "max_tokens": 3}'
    status, text = post(served, "/v1/completions", None, raw=raw)
    assert status == 400 and "not valid Unicode" in json.loads(text)["error"]["message"]
    raw = b'{"messages": [{"role": "user", "content": "hi \\udfff"}]}'
    assert post(served, "/v1/chat/completions", None, raw=raw)[0] == 400


def test_a_trickled_body_times_out_with_a_408_over_http(gpt_run):
    """Over a real socket: headers, a few bytes of a promised 100-byte body, then silence. The
    server answers 408 after body_seconds and closes; the next client is served."""
    gen = proselab.load(gpt_run)
    with Server(create_app(gen, limits=Limits(48, 200, 4096, body_seconds=0.5))) as server:
        head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{\"pro")
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(head)
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
        assert got.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in got
        status, _ = post(server, "/v1/completions", {"prompt": "a", "max_tokens": 2}, key=None)
        assert status == 200


def test_playground_chat_stops_a_reply_and_keeps_what_was_written(tmp_path, browser):
    """The chat pane's Stop button: stopped before any text, the turn is undone (the message goes
    back to the input box); stopped midway, the partial reply stays and is the history's next
    assistant message."""
    from test_cli_idioms import train_chat_run

    gen = proselab.load(train_chat_run(tmp_path))

    def slowed(fn):  # a slow model, so Stop lands while a reply is being written
        def slow(*args, **kwargs):
            time.sleep(delay)
            return fn(*args, **kwargs)
        return slow

    for name in ("start", "step_start", "step"):  # what the engine calls
        setattr(gen.model, name, slowed(getattr(gen.model, name)))
    with Server(create_app(gen)) as server:
        page = browser.new_page()
        page.goto(server.url)
        page.fill("#temperature", "0")
        page.fill("#max_tokens", "40")
        delay = 1.0
        page.fill("#chat-input", "say red 1")
        page.press("#chat-input", "Enter")
        page.click("#chat-stop")
        page.wait_for_function("document.getElementById('chat-status').textContent == 'stopped'", timeout=30_000)
        assert page.locator("#messages .msg").count() == 0 and page.input_value("#chat-input") == "say red 1"
        delay = 0.2
        page.press("#chat-input", "Enter")
        page.wait_for_function("document.querySelector('#messages .assistant') && "
                               "document.querySelector('#messages .assistant').textContent.length > 0", timeout=30_000)
        page.click("#chat-stop")
        page.wait_for_function("document.getElementById('chat-status').textContent == 'stopped'", timeout=30_000)
        partial = page.text_content("#messages .assistant")
        delay = 0.0
        full = gen.chat([{"role": "user", "content": "say red 1"}], do_sample=False, max_new_tokens=40).text
        assert partial and full.startswith(partial)
        page.fill("#chat-input", "say blue 2")
        with page.expect_request("**/v1/chat/completions") as request:
            page.press("#chat-input", "Enter")
        assert request.value.post_data_json["messages"] == [
            {"role": "user", "content": "say red 1"}, {"role": "assistant", "content": partial},
            {"role": "user", "content": "say blue 2"}]
        page.wait_for_function("!document.getElementById('send').disabled", timeout=30_000)
        page.close()
