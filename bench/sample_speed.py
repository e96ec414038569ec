"""nanoGPT's ``sample.py`` defaults on the nanogpt-cpu model: proselab against nanoGPT's loop.

    python bench/sample_speed.py [--run DIR] [--data PATH] [--reps N]

The job is sample.py's defaults: 10 samples x 500 new characters, temperature 0.8, top_k 200,
start prompt "\\n", float32 on the CPU (sample.py only autocasts on CUDA). Without ``--run``
the script first trains the ``nanogpt-cpu`` preset into a temporary directory (a separate
``python -m proselab train`` process, ~60-100 s), and says so.

Both sides run in this process on the same weights, alternated ``--reps`` times (which goes
first flips each time). The table gives medians; the speed-up against the target is the
median of each rep's ratio, the two runs of a rep being back to back:

  proselab  ``Generator.complete("\\n", num_return_sequences=10, ...)``: one batched call
            that prefills the prompt once and samples the 10 rows together through the KV
            cache, text decoding and all. When a row's 64-token window fills, proselab
            re-prefills it with its last 32 tokens (a context shift), so it conditions on
            32-64 tokens where nanoGPT always takes the last 64: the same job, not the same
            arithmetic.
  nanoGPT   ``GPT.generate`` from nanoGPT's model.py, re-implemented here on the loaded model:
            the 10 samples one after another at batch 1. Every new token runs the whole
            context, cropped to block_size, through the model (no KV cache), with the head
            on the last position only as nanoGPT's forward does; then logits[:, -1] /
            temperature, top-k, softmax, multinomial. Each sample is decoded to text, as
            sample.py does before printing it. The blocks are proselab's, so the GELU is
            GPT-2's tanh form where nanoGPT uses the exact one: one elementwise op, same cost.

Both times cover the generation only. Loading the run (``proselab.load``) is timed on its
own, and so is a "start-up included" figure: importing torch and proselab, loading the run
and the first (cold) proselab call. That is the nearest thing to the issue's nanoGPT figure
(11.4 s for ``python sample.py`` on this machine, start-up included), quoted and not
re-measured here; it still leaves out the Python interpreter's own start (~0.05 s).

Last, one more proselab call with ``model.step`` timed, to show where the time goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"

# quoted from the issue, not re-measured: `python sample.py` (nanoGPT) on this machine
NANOGPT_SAMPLE_WALL = 11.4
TARGET_SPEEDUP = 10.0  # the target for the generation itself

NUM_SAMPLES, MAX_NEW_TOKENS, TEMPERATURE, TOP_K, START, SEED = 10, 500, 0.8, 200, "\n", 1337


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=None, help="an existing nanogpt-cpu run directory (default: train one)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="tiny shakespeare input.txt, to train on without --run (default: %(default)s)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of each side (default: %(default)s)")
    return p.parse_args(argv)


def train_run(data: Path) -> tuple[Path, float]:
    """Train the nanogpt-cpu preset in a child process (so its allocator and compile state
    stay out of this one); returns the run directory and the seconds it took."""
    out = Path(tempfile.mkdtemp(prefix="proselab-sample-")) / "nanogpt-cpu"
    cmd = [sys.executable, "-m", "proselab", "train", "nanogpt-cpu", "--out", str(out), "--data", str(data),
           "--train.progress=false", "--train.overwrite=true"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return out, time.perf_counter() - start


def nanogpt_generate(model, idx, max_new_tokens: int, temperature: float, top_k: int):
    """nanoGPT's ``GPT.generate`` (model.py) on a proselab GPT: no cache, the whole context per token."""
    import torch
    import torch.nn.functional as F

    tr, bs = model.transformer, model.config.block_size
    for _ in range(max_new_tokens):
        idx_cond = idx if idx.size(1) <= bs else idx[:, -bs:]  # (1, <= block_size)
        # nanoGPT's GPT.forward(idx) without targets: the head on the last position only
        pos = torch.arange(0, idx_cond.size(1), dtype=torch.long, device=idx.device)  # (t,)
        x = tr.drop(tr.wte(idx_cond) + tr.wpe(pos))  # (1, t, C)
        for block in tr.h:
            x = block(x)
        logits = model.lm_head(tr.ln_f(x)[:, [-1], :])  # (1, 1, V)
        logits = logits[:, -1, :] / temperature  # (1, V)
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float("Inf")
        probs = F.softmax(logits, dim=-1)
        idx_next = torch.multinomial(probs, num_samples=1)  # (1, 1)
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


def run_nanogpt(gen) -> list[str]:
    """sample.py's loop: seed, then the samples one at a time, each decoded to text."""
    import torch

    torch.manual_seed(SEED)
    x = torch.tensor(gen.tokenizer.encode(START), dtype=torch.long)[None, ...]  # (1, T)
    with torch.no_grad():
        return [gen.tokenizer.decode(nanogpt_generate(gen.model, x, MAX_NEW_TOKENS, TEMPERATURE, TOP_K)[0].tolist())
                for _ in range(NUM_SAMPLES)]


def run_proselab(gen) -> list[str]:
    outs = gen.complete(START, num_return_sequences=NUM_SAMPLES, max_new_tokens=MAX_NEW_TOKENS,
                        temperature=TEMPERATURE, top_k=TOP_K, do_sample=True, seed=SEED)
    assert len(outs) == NUM_SAMPLES and all(len(g.tokens) == MAX_NEW_TOKENS for g in outs), "short samples"
    return [g.text for g in outs]


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def step_share(gen) -> tuple[float, float, float]:
    """One proselab call with model.step (and the window slides inside it) timed:
    (total s, model.step s, of which GPT._slide s)."""
    model = gen.model
    acc = {"step": 0.0, "slide": 0.0}

    def clock(key, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[key] += time.perf_counter() - start
        return wrapper

    model.step, model._slide = clock("step", model.step), clock("slide", model._slide)  # instance attributes
    try:
        total, _ = timed(run_proselab, gen)
    finally:
        del model.step, model._slide
    return total, acc["step"], acc["slide"]


def alternate(gen, reps: int) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    """Warm up the nanoGPT side, then time both sides ``reps`` times, flipping which goes first."""
    import torch

    torch.manual_seed(SEED)  # the proselab side was warmed by the cold first call
    with torch.no_grad():
        nanogpt_generate(gen.model, torch.tensor([gen.tokenizer.encode(START)]), MAX_NEW_TOKENS, TEMPERATURE, TOP_K)
    times: dict[str, list[float]] = {"proselab": [], "nanogpt": []}
    samples = {}
    for r in range(reps):
        for side in (("proselab", "nanogpt") if r % 2 == 0 else ("nanogpt", "proselab")):
            secs, samples[side] = timed(run_proselab if side == "proselab" else run_nanogpt, gen)
            times[side].append(secs)
        print(f"  rep {r + 1}: proselab {times['proselab'][-1]:.2f} s, nanoGPT loop {times['nanogpt'][-1]:.2f} s",
              flush=True)
    return times, samples


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    sys.path.insert(0, str(REPO))  # run from a checkout without installing it
    # proselab.api too, so that importing the decoding code does not count as loading
    import torch

    import proselab
    from proselab.api import load

    t_import = time.perf_counter() - t0
    trained = ""
    if args.run is None:
        if not args.data.is_file():
            sys.exit(f"{args.data} does not exist; pass --data path/to/tinyshakespeare/input.txt or --run DIR")
        print(f"no --run given: training the nanogpt-cpu preset on {args.data} first ...", flush=True)
        args.run, secs = train_run(args.data)
        trained = f" (trained by this script in {secs:.0f} s)"
    t_load, gen = timed(load, args.run, "cpu")
    t_first, _ = timed(run_proselab, gen)
    startup = t_import + t_load + t_first
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; proselab {proselab.__version__}; "
          f"run {args.run}{trained}")
    cfg = gen.model.config
    print(f"model: gpt {cfg.n_layer}x{cfg.n_head}x{cfg.n_embd}, block {cfg.block_size}, vocab {cfg.vocab_size}, "
          f"{gen.model.num_params() / 1e6:.2f} M params, {next(gen.model.parameters()).dtype}")
    print(f"job: {NUM_SAMPLES} samples x {MAX_NEW_TOKENS} new tokens, temperature {TEMPERATURE}, top_k {TOP_K}, "
          f"start {START!r}; {args.reps} alternated reps after a warm-up", flush=True)

    times, samples = alternate(gen, args.reps)

    ps, ng = statistics.median(times["proselab"]), statistics.median(times["nanogpt"])
    ratios = [b / a for a, b in zip(times["proselab"], times["nanogpt"])]  # each rep's pair ran back to back
    ratio = statistics.median(ratios)
    tokens = NUM_SAMPLES * MAX_NEW_TOKENS
    print()
    print("| side | generation s (median) | all reps s | tokens/s | vs nanoGPT loop |")
    print("|---|---:|---|---:|---:|")
    print(f"| proselab `complete(num_return_sequences=10)`, KV cache, batch 10 | {ps:.2f} | "
          f"{', '.join(f'{t:.2f}' for t in times['proselab'])} | {tokens / ps:,.0f} | {ng / ps:.1f}x |")
    print(f"| nanoGPT `generate` loop (re-implemented), no cache, batch 1 x 10 | {ng:.2f} | "
          f"{', '.join(f'{t:.2f}' for t in times['nanogpt'])} | {tokens / ng:,.0f} | 1.0x |")
    print()
    print(f"load (`proselab.load`): {t_load:.2f} s; import torch + proselab: {t_import:.2f} s; "
          f"first (cold) proselab call: {t_first:.2f} s")
    print(f"start-up included (import + load + first call): {startup:.2f} s, against nanoGPT's "
          f"{NANOGPT_SAMPLE_WALL} s quoted from the issue (not side by side): {NANOGPT_SAMPLE_WALL / startup:.1f}x")
    met = "met" if ratio >= TARGET_SPEEDUP else "NOT met"
    print(f"generation itself: proselab {ratio:.1f}x faster than nanoGPT's loop, side by side (median of the "
          f"reps' ratios {', '.join(f'{x:.1f}' for x in ratios)}; target >= {TARGET_SPEEDUP:.0f}x: {met})")
    total, step, slide = step_share(gen)
    print(f"where proselab's time goes (one more call, {total:.2f} s): model.step {step / total:.0%} "
          f"({step / MAX_NEW_TOKENS * 1e3:.2f} ms per step of 10 rows; window slides {slide / total:.0%}), "
          f"sampling, text and bookkeeping {1 - step / total:.0%}")
    print(f"proselab sample 1 begins: {samples['proselab'][0][:60]!r}")
    print(f"nanoGPT   sample 1 begins: {samples['nanogpt'][0][:60]!r}")


if __name__ == "__main__":
    main()
