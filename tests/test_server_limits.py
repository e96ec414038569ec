"""proselab serve's connection hygiene, against a real uvicorn server on a free loopback port
with the options ``serve`` gives it (``ServeConfig.uvicorn_options``): a connection that sends
nothing, or half a request head, is closed after --timeout-header; one idle after a response,
after --timeout-keep-alive; beyond --limit-concurrency a request gets 503 at once. And the
flags are checked like the other limits: a one-line error, exit status 2.
"""

import socket
import threading
import time
from contextlib import contextmanager

import pytest
import uvicorn

from proselab.server import ServeConfig, create_app
from test_server_schema import tiny_chat_generator

TIMEOUT = 0.5  # seconds, for the header and keep-alive deadlines under test
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app():
    app = create_app(tiny_chat_generator())
    yield app
    app.state.engine.close()


@contextmanager
def serving(app, **limits):
    """``app`` under uvicorn in a thread, configured as ``proselab serve`` would be with ``limits``."""
    options = ServeConfig(run="unused", port=free_port(), **limits).uvicorn_options()
    server = uvicorn.Server(uvicorn.Config(app, **options, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield options["port"]
    finally:
        server.should_exit = True
        thread.join(30)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(10)  # a connection the server never closes fails the test instead of hanging it
    return sock


def seconds_until_closed(sock: socket.socket) -> float:
    """How long until the server closes ``sock``, reading (and dropping) what it sends meanwhile."""
    start = time.monotonic()
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        pytest.fail("the server kept the connection open for 10 s")
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def response(sock: socket.socket) -> bytes:
    """The head of one response (status line and headers)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole response: {data!r}"
        data += chunk
    return data


def test_idle_and_half_sent_requests_are_closed_within_the_timeouts(app):
    with serving(app, timeout_header=TIMEOUT, timeout_keep_alive=TIMEOUT) as port:
        idle, half = connect(port), connect(port)
        half.sendall(HEALTH[:20])  # the request line, and no more
        kept = connect(port)
        kept.sendall(HEALTH)
        assert response(kept).startswith(b"HTTP/1.1 200")
        half_again = connect(port)  # a whole request, then half of the next one
        half_again.sendall(HEALTH)
        assert response(half_again).startswith(b"HTTP/1.1 200")
        half_again.sendall(HEALTH[:20])
        for sock in (idle, half, kept, half_again):
            assert seconds_until_closed(sock) < TIMEOUT + 2
            sock.close()


def test_beyond_the_connection_limit_a_request_gets_503_at_once(app):
    with serving(app, limit_concurrency=2, timeout_header=30) as port:
        first = connect(port)  # idle, holding one of the two places
        asking = connect(port)
        asking.sendall(HEALTH)
        assert response(asking).startswith(b"HTTP/1.1 200")
        crowd = [connect(port) for _ in range(3)]
        time.sleep(0.2)  # for the server to take them in
        start = time.monotonic()
        late = connect(port)
        late.sendall(HEALTH)
        assert response(late).startswith(b"HTTP/1.1 503") and time.monotonic() - start < 2
        for sock in (first, asking, late, *crowd):
            sock.close()
        time.sleep(0.2)
        again = connect(port)
        again.sendall(HEALTH)
        assert response(again).startswith(b"HTTP/1.1 200")
        again.close()


@pytest.mark.parametrize("argv, words", [
    (["--timeout-header", "0"], "--timeout-header must be a number of seconds > 0"),
    (["--timeout-keep-alive", "nan"], "--timeout-keep-alive must be a number of seconds > 0"),
    (["--timeout-body", "-1"], "--timeout-body must be a number of seconds > 0"),
    (["--limit-concurrency", "0"], "--limit-concurrency must be >= 1"),
])
def test_the_flags_are_checked_before_anything_loads(tmp_path, capsys, argv, words):
    from proselab.cli import main

    assert main(["serve", str(tmp_path / "no-run"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
