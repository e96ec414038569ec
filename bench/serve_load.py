"""Load test of ``proselab serve``: 1, 4, 8 and 16 concurrent streaming clients.

    python bench/serve_load.py --model gpt2-124m [--seconds 30] [--clients 1,4,8,16] [--rounds 1]
    python bench/serve_load.py --model RUN_DIR --threads 1   # e.g. runs/nanogpt-cpu

``gpt2-124m`` is GPT-2's shape (12 layers, 768 wide, its 50,257-token vocabulary) with random
weights, saved as a Hugging Face checkpoint with GPT-2's tokenizer (from --tokenizer, default
../shared/data/gpt2-tokenizer). The server runs in its own process (``proselab serve``, as a
user starts it), so the clients here do not share its interpreter. Each client sends streaming
completions back to back for ``--seconds``: a prompt of some 30 tokens, ``--max-tokens`` new
tokens sampled at temperature 0.8 (``min_tokens`` = max_tokens, so every request is the same
length). A char model's prompts need ``--prompt-chars`` to fit its window.
Reported per concurrency level: aggregate generated tokens/s (completion tokens from
the usage chunk, over the wall time), requests done, p50/p95 time to first token (request sent
to first text), p50/p95 inter-token latency (between text chunks of a stream), and errors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TOKENIZER = REPO.parent / "shared" / "data" / "gpt2-tokenizer"
PROMPTS = [
    "The history of the city begins with a small settlement on the river, where",
    "In the morning the ships left the harbour, and the sailors said that",
    "She opened the letter slowly. It was from her brother, who had written that",
    "The committee met on Tuesday to discuss the new rules for the library and",
    "ROMEO: But soft, what light through yonder window breaks? It is the east, and",
    "Once upon a time there lived a king who had three daughters, and the youngest",
]


def gpt2_checkpoint(out: Path, tokenizer: Path) -> Path:
    """A random-weight GPT-2-124M in Hugging Face's format, with GPT-2's tokenizer files."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    model.save_pretrained(out)
    for f in tokenizer.iterdir():
        if f.is_file():
            shutil.copy(f, out / f.name)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, max_batch: int, log: Path, threads: int = 0,
                 dtype: str = "auto") -> subprocess.Popen:
    """``proselab serve`` in its own process, its output (one access-log line per request) to
    ``log``: a pipe nobody reads would fill up and stall the server."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "proselab", "serve", str(run), "--port", str(port),
                                 "--max-batch", str(max_batch), "--model-name", "bench", "--threads", str(threads),
                                 "--dtype", dtype],
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    import urllib.request

    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.5)


def client_loop(url: str, stop_at: float, max_tokens: int, seed: int, out: dict, lock: threading.Lock,
                prompt_chars: int = 0) -> None:
    import openai

    c = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    i = seed
    while time.monotonic() < stop_at:
        prompt = PROMPTS[i % len(PROMPTS)][: prompt_chars or None]
        i += 1
        sent = time.perf_counter()
        first = last = None
        gaps, tokens = [], 0
        try:
            stream = c.completions.create(model="bench", prompt=prompt, max_tokens=max_tokens, temperature=0.8,
                                          stream=True, stream_options={"include_usage": True},
                                          extra_body={"min_tokens": max_tokens, "top_k": 0})
            for chunk in stream:
                now = time.perf_counter()
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
                if chunk.choices and chunk.choices[0].text:
                    if first is None:
                        first = now
                    else:
                        gaps.append(now - last)
                    last = now
        except Exception as e:  # counted, and shown once
            with lock:
                out["errors"] += 1
                out.setdefault("first_error", repr(e))
            continue
        with lock:
            out["requests"] += 1
            out["tokens"] += tokens
            out["ttft"].append(first - sent if first is not None else float("nan"))
            out["itl"].extend(gaps)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(x for x in xs if x == x)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_level(url: str, clients: int, seconds: float, max_tokens: int, prompt_chars: int = 0) -> dict:
    out = {"requests": 0, "tokens": 0, "errors": 0, "ttft": [], "itl": []}
    lock = threading.Lock()
    start = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(url, start + seconds, max_tokens, k, out, lock, prompt_chars))
               for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["wall"] = time.monotonic() - start  # includes finishing the requests in flight at the deadline
    return out


def summary(clients: int, runs: list[dict]) -> dict:
    """One concurrency level over its rounds: tokens and wall time added up, latencies pooled."""
    pooled = lambda key: [x for r in runs for x in r[key]]  # noqa: E731
    wall = sum(r["wall"] for r in runs)
    return {"clients": clients, "tokens_per_sec": sum(r["tokens"] for r in runs) / wall,
            "per_round": [round(r["tokens"] / r["wall"], 1) for r in runs],
            "requests": sum(r["requests"] for r in runs), "errors": sum(r["errors"] for r in runs),
            "ttft_p50": pct(pooled("ttft"), 0.5), "ttft_p95": pct(pooled("ttft"), 0.95),
            "itl_p50": pct(pooled("itl"), 0.5), "itl_p95": pct(pooled("itl"), 0.95), "wall": wall,
            "first_error": next((r["first_error"] for r in runs if "first_error" in r), None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gpt2-124m", help="gpt2-124m, or a run / checkpoint directory")
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="GPT-2 tokenizer files (gpt2-124m)")
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--seconds", type=float, default=30.0, help="per concurrency level and round")
    ap.add_argument("--rounds", type=int, default=1,
                    help="go through the levels this many times (1, 8, 1, 8, ...) and add up each level's "
                         "rounds: the machine's drift then weighs on every level alike")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="the server's --threads (0 = auto)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help="the server's --dtype (auto = as saved, float32 here)")
    ap.add_argument("--prompt-chars", type=int, default=0,
                    help="cut prompts to this many characters (e.g. 40 for a char model with a 64-token window)")
    args = ap.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        ap.error("--rounds must be >= 1 and --seconds > 0")
    tmp = Path(tempfile.mkdtemp(prefix="serve_load_"))
    try:
        run = gpt2_checkpoint(tmp / "gpt2", args.tokenizer) if args.model == "gpt2-124m" else Path(args.model)
        port = free_port()
        server = start_server(run, port, args.max_batch, tmp / "server.log", args.threads, args.dtype)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            run_level(url, 1, min(5.0, args.seconds), args.max_tokens, args.prompt_chars)  # warm-up
            levels = [int(c) for c in args.clients.split(",")]
            runs: dict[int, list[dict]] = {c: [] for c in levels}
            for k in range(args.rounds):
                for c in levels:
                    runs[c].append(run_level(url, c, args.seconds, args.max_tokens, args.prompt_chars))
                    last = runs[c][-1]
                    print(json.dumps({"round": k + 1, "clients": c, "tokens_per_sec": last["tokens"] / last["wall"],
                                      "errors": last["errors"]}), flush=True)
            rows = [summary(c, runs[c]) for c in levels]
        finally:
            server.terminate()
            server.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0]["tokens_per_sec"] or float("nan")
    print(f"\n{args.model}: {args.max_tokens} new tokens per request, {args.seconds:g} s per level x "
          f"{args.rounds} round(s), --max-batch {args.max_batch}, --threads {args.threads}, --dtype {args.dtype}, "
          f"{os.cpu_count()} CPUs\n")
    print("| clients | tokens/s | x 1 client | requests | errors | TTFT p50 / p95 (s) | ITL p50 / p95 (ms) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['tokens_per_sec']:.1f} | {r['tokens_per_sec'] / base:.2f} | {r['requests']} | "
              f"{r['errors']} | {r['ttft_p50']:.2f} / {r['ttft_p95']:.2f} | "
              f"{1000 * r['itl_p50']:.0f} / {1000 * r['itl_p95']:.0f} |")
    if args.rounds > 1:
        print("\nper round, tokens/s: " + "; ".join(f"{r['clients']} clients {r['per_round']}" for r in rows))


if __name__ == "__main__":
    main()
