"""Is prepacking worth it for a small model? Sampling from a run with and without it, alternated.

    python bench/prepack_small.py RUN [--reps N] [--min-packed N]

Generates 10 x 300 tokens (temperature 0.8, top_k 200, seed 0) from RUN with two copies of
its model: one decoded with PROSELAB_PREPACK=0 (plain nn.Linear), one with prepacking on.
``--min-packed 1`` packs every layer, whatever its size (the default is proselab's own
threshold, ``proselab.models.prepack.MIN_PACKED``). Prints the median seconds of each.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing it


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run directory, e.g. one bench/sample_speed.py trained")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--min-packed", type=int, default=None, help="pack layers with at least this many weights")
    args = p.parse_args(argv)

    import proselab
    from proselab.config import GenerationConfig
    from proselab.decoding import generate
    from proselab.models import prepack

    if args.min_packed is not None:
        prepack.MIN_PACKED = args.min_packed
    gen = proselab.load(args.run)
    models = {"plain": copy.deepcopy(gen.model), "prepacked": copy.deepcopy(gen.model)}
    cfg = GenerationConfig(max_new_tokens=300, temperature=0.8, top_k=200, num_return_sequences=10, seed=0)
    prompt = [gen.tokenizer.encode("\n")]
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.reps + 1):  # the first round warms up
        for name, model in models.items():
            os.environ["PROSELAB_PREPACK"] = "0" if name == "plain" else "1"
            start = time.perf_counter()
            generate(model, prompt, cfg)
            times[name].append(time.perf_counter() - start)
    packed = sum(isinstance(m, prepack.PrepackedLinear) for m in models["prepacked"].modules())
    print(f"min_packed={prepack.MIN_PACKED}: {packed} layers packed; median of {args.reps} reps: " + ", ".join(
        f"{k} {statistics.median(v[1:]):.3f} s" for k, v in times.items()))


if __name__ == "__main__":
    main()
