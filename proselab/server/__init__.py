"""``proselab serve``: an OpenAI-compatible HTTP server with continuous batching and a playground.

``create_app`` builds the FastAPI app for a loaded run (``app.py``); ``engine.py`` batches the
requests; ``static/`` is the playground page.
"""

from __future__ import annotations

import logging
import os
import threading

from .app import Limits, create_app

__all__ = ["create_app", "serve", "Limits"]


def serve(run: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, max_batch: int = 16,
          max_queue: int = 64, max_prompt_tokens: int | None = None, max_tokens: int | None = None,
          model_name: str | None = None, device: str = "auto", threads: int = 0, dtype: str = "auto") -> None:
    """Load ``run`` and serve it until interrupted. The key defaults to $PROSELAB_API_KEY.
    ``threads``: CPU threads the model's operations use (0 = auto: one for a small model, else every
    core; see ``Engine``). ``dtype``: the weights' dtype (see ``proselab.load``)."""
    import uvicorn

    from ..api import load

    if max_batch < 1 or max_queue < 0 or threads < 0:
        raise ValueError(f"--max-batch must be >= 1, --max-queue and --threads >= 0, got {max_batch}, {max_queue} "
                         f"and {threads}")
    api_key = api_key if api_key is not None else os.environ.get("PROSELAB_API_KEY") or None
    gen = _on_a_passing_thread(lambda: load(run, device=device, dtype=dtype))
    gen.model.eval()
    cfg = gen.config
    window = cfg.model.block_size if cfg.model.family == "gpt" else 1024
    limits = Limits(max_prompt_tokens or window, max_tokens or max(cfg.generation.max_new_tokens, 1024))
    app = create_app(gen, api_key=api_key, model_name=model_name, max_batch=max_batch, max_queue=max_queue,
                     limits=limits, threads=threads)
    logging.getLogger("proselab.server").info("serving %s", run)
    where = f"http://{host}:{port}"
    weights = str(next(gen.model.parameters()).dtype).removeprefix("torch.")
    print(f"proselab: serving {run} ({weights} weights) at {where} (playground: {where}/, API: {where}/v1, "
          f"{'API key required' if api_key else 'no API key'})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info")


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
        except BaseException as e:  # re-raised on the caller's thread
            box["error"] = e

    thread = threading.Thread(target=run, name="proselab-load")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]
