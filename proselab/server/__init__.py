"""``proselab serve``: an OpenAI-compatible HTTP server with continuous batching and a playground.

``serve`` loads the run a ``ServeConfig`` names and runs uvicorn; ``create_app`` builds the
FastAPI app for a loaded run (``app.py``), whose routes are in ``routes.py`` and whose schema
(/openapi.json) is ``openapi.py``'s; ``engine.py`` batches the requests; ``connections.py``
times out idle clients; ``static/`` is the playground page.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import threading
from dataclasses import dataclass, field

from .app import Limits, create_app
from .connections import connection_options

__all__ = ["Limits", "ServeConfig", "create_app", "serve"]


@dataclass
class ServeConfig:
    """What ``proselab serve`` serves and how (its flags); checked when made."""

    run: str  # the run directory to load
    host: str = "127.0.0.1"  # address to bind: loopback only by default; 0.0.0.0 = every interface
    port: int = 8000
    # required on /v1 as 'Authorization: Bearer KEY'; None: $PROSELAB_API_KEY, else none.
    # Left out of the repr, so a logged config does not leak it.
    api_key: str | None = field(default=None, repr=False)
    max_batch: int = 16  # sequences decoded together
    max_queue: int = 64  # requests waiting before 429
    max_prompt_tokens: int | None = None  # longest prompt; None: a GPT's block_size, else 1024
    max_tokens: int | None = None  # largest max_tokens a request may set; None: max(the run's, 1024)
    model_name: str | None = None  # the model id clients use; None: the run directory's name (or Hugging Face id)
    device: str = "auto"  # where the model runs (see ``proselab.load``)
    threads: int = 0  # the model's CPU threads; 0: one for a small model, else every core (see ``Engine``)
    dtype: str = "auto"  # the weights' dtype (see ``proselab.load``)
    draft: str | None = None  # a smaller run of the same kind and vocabulary: a request alone is decoded speculatively
    num_draft_tokens: int = 5  # the draft's tokens a round to start with
    timeout_keep_alive: float = 5.0  # seconds a connection may stay idle after a response (uvicorn's default)
    timeout_header: float = 10.0  # seconds a connection has to send a whole request head (line + headers)
    timeout_body: float = 30.0  # seconds a request's body has to arrive after its head, else 408
    limit_concurrency: int = 256  # connections served at once; a request on one more gets 503

    def __post_init__(self):
        if self.max_batch < 1 or self.max_queue < 0 or self.threads < 0:
            raise ValueError(f"--max-batch must be >= 1, --max-queue and --threads >= 0, got {self.max_batch}, "
                             f"{self.max_queue} and {self.threads}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"--port must be a TCP port, 1-65535; got {self.port}")
        for flag, value in (("--max-prompt-tokens", self.max_prompt_tokens), ("--max-tokens", self.max_tokens)):
            if value is not None and value < 1:
                raise ValueError(f"{flag} must be >= 1 (leave it out for the default); got {value}")
        for flag, seconds in (("--timeout-keep-alive", self.timeout_keep_alive),
                              ("--timeout-header", self.timeout_header), ("--timeout-body", self.timeout_body)):
            if not (math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"{flag} must be a number of seconds > 0; got {seconds}")
        if self.num_draft_tokens < 1:
            raise ValueError(f"--num-draft-tokens must be >= 1; got {self.num_draft_tokens}")
        if self.limit_concurrency < 1:
            raise ValueError(f"--limit-concurrency must be >= 1; got {self.limit_concurrency}")

    def uvicorn_options(self) -> dict:
        """``uvicorn.Config`` (and ``uvicorn.run``) keywords: the address, the timeouts, the connection limit."""
        return {"host": self.host, "port": self.port,
                **connection_options(self.timeout_keep_alive, self.timeout_header, self.limit_concurrency)}


def check_port_free(host: str, port: int) -> None:
    """Fail in one line, before the model loads, when ``host:port`` cannot be bound (another
    server holds it, or the address is not this machine's); uvicorn would log and exit 3."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind((host, port))
    except OSError as e:
        raise ValueError(f"cannot listen on {host}:{port} ({e.strerror or e}); is another server there? "
                         "Choose another --port or --host") from None


def serve(config: ServeConfig) -> None:
    """Loads ``config.run`` and serves it until interrupted.

    Args:
        config: the run and the server's settings; its ``api_key`` defaults to $PROSELAB_API_KEY.
    """
    import uvicorn

    from ..api import load
    from ..interop.hub import is_hub_id

    check_port_free(config.host, config.port)
    api_key = config.api_key if config.api_key is not None else os.environ.get("PROSELAB_API_KEY") or None
    gen = _on_a_passing_thread(lambda: load(config.run, device=config.device, dtype=config.dtype, draft=config.draft,
                                            num_draft_tokens=config.num_draft_tokens))
    gen.model.eval()
    limits = dataclasses.replace(Limits.for_run(gen.config, config.max_prompt_tokens, config.max_tokens),
                                 body_seconds=config.timeout_body)
    model_name = config.model_name or (config.run if is_hub_id(config.run) else None)  # not the snapshot's hash
    app = create_app(gen, api_key=api_key, model_name=model_name, max_batch=config.max_batch,
                     max_queue=config.max_queue, limits=limits, threads=config.threads)
    logging.getLogger("proselab.server").info("serving %s", config.run)
    where = f"http://{config.host}:{config.port}"
    weights = str(next(gen.model.parameters()).dtype).removeprefix("torch.")
    drafted = f", drafted by {config.draft}" if config.draft else ""
    print(f"proselab: serving {config.run} ({weights} weights{drafted}) at {where} (playground: {where}/, "
          f"API: {where}/v1, "
          f"{'API key required' if api_key else 'no API key'})", flush=True)
    uvicorn.run(app, **config.uvicorn_options(), log_level="info")


def _on_a_passing_thread(fn):
    """``fn()`` run on a thread that then exits; its result, or its exception re-raised.

    PyTorch's OpenMP (libgomp) keeps a pool of worker threads for every thread that ever ran
    a parallel region, for as long as that thread lives. With the main thread's pool alive
    beside the engine thread's, there are more OpenMP threads than cores on a small machine,
    and libgomp then lets idle workers sleep almost at once, so each of the engine's many
    small parallel regions pays for waking them: a GPT-2 step at batch 1 took 29 ms instead
    of 23 ms (measured with the load on the main thread and on a passing one). Loading the
    run (which does run parallel regions) on a thread that exits leaves the engine's pool
    the only one. (``python bench/serve_load.py`` measures the server as a user runs it.)
    """
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 (re-raised on the caller's thread)
            box["error"] = e

    thread = threading.Thread(target=run, name="proselab-load")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]
