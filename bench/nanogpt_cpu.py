"""nanoGPT's CPU config trained through ``proselab.train``, then a char-LSTM given the same time.

    python bench/nanogpt_cpu.py [--data PATH] [--out DIR] [--compile | --no-compile]
                                [--dtype auto|float32|bfloat16] [--skip-lstm] [--cold]

The GPT run is the ``nanogpt-cpu`` preset as it is (nanoGPT's README config: char-level tiny
shakespeare, first 90% train / last 10% val, 4 layers x 4 heads x 128, block 64, batch 12,
2000 steps, lr 1e-3 -> 1e-4 cosine after 100 warmup steps, AdamW (0.9, 0.99), weight decay
0.1, grad clip 1.0, dropout 0), with only the data path, run directory and progress bar
overridden; ``--compile`` and ``--dtype`` override the preset's engine knobs. The LSTM run is
the ``shakespeare-char-lstm`` preset on the same file, stopped by ``train.max_time`` after as
many seconds of training as the GPT took.

Timings:
  wall   the whole ``proselab.train()`` call: loading and tokenizing the corpus (or reading the
         token cache), building the model, torch.compile warm-up, the quick val estimates and
         checkpoints every 250 steps, the final estimate and checkpoint, the full val pass
         and loss.png.
  train  training steps only (``TrainResult.train_time``): the loop less its evals and
         checkpoints. The compile warm-up happens inside the first step, so it is included;
         ``steady`` is the time per step after the first 10.

Caches: by default the usual ones, so a second run skips tokenization (proselab's token cache,
$PROSELAB_CACHE or ~/.cache/proselab) and most of torch.compile's work (inductor's cache,
$TORCHINDUCTOR_CACHE_DIR or /tmp/torchinductor_$USER). ``--cold`` points both at fresh
temporary directories, to measure a first run on a new machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"

# quoted from the issue, not re-measured here: nanoGPT's train.py with this config on this machine
NANOGPT_WALL, NANOGPT_VAL = 110.0, 1.8857


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="tiny shakespeare input.txt (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="directory for the two run directories (default: a temp dir)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the GPT (default: the preset's train.compile)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default=None,
                   help="the GPT's autocast dtype (default: the preset's train.dtype)")
    p.add_argument("--skip-lstm", action="store_true", help="train only the GPT")
    p.add_argument("--cold", action="store_true", help="fresh token and torch.compile caches, as on a first run")
    return p.parse_args(argv)


def final_estimate(run_dir: Path) -> float:
    """The quick val estimate (20 random batches, nanoGPT's estimate_loss) logged at the last step."""
    from proselab.plots import read_metrics

    return [r["val_loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "val_loss" in r][-1]


def steady_step_time(run_dir: Path, result, tokens_per_step: int) -> float:
    """Seconds per step after the first log window (which holds the compile warm-up)."""
    from proselab.plots import read_metrics

    first = next(r for r in read_metrics(run_dir / "metrics.jsonl") if "tokens_per_sec" in r)
    first_window = first["step"] * tokens_per_step / first["tokens_per_sec"]
    return (result.train_time - first_window) / max(result.step - first["step"], 1)


def run(preset: str, overrides: dict) -> tuple[object, float]:
    import proselab

    start = time.perf_counter()
    result = proselab.train(preset, overrides)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.data.is_file():
        sys.exit(f"{args.data} does not exist; pass --data path/to/tinyshakespeare/input.txt")
    if args.cold:  # before torch is imported: inductor reads its cache location once
        os.environ["PROSELAB_CACHE"] = tempfile.mkdtemp(prefix="proselab-cache-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cache-")
    sys.path.insert(0, str(REPO))  # run from a checkout without installing it
    import torch

    from proselab.config import load_config

    out = args.out or Path(tempfile.mkdtemp(prefix="proselab-bench-"))
    common = {"data.dataset": str(args.data), "train.progress": False, "train.overwrite": True}
    gpt_over = {**common, "train.out_dir": str(out / "nanogpt-cpu")}
    if args.compile is not None:
        gpt_over["train.compile"] = args.compile
    if args.dtype is not None:
        gpt_over["train.dtype"] = args.dtype
    cfg = load_config("nanogpt-cpu", gpt_over)
    tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * cfg.model.block_size

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; data {args.data}; runs in {out}")
    print(f"caches: {'fresh (--cold)' if args.cold else 'the usual ones (warm after a first run)'}")
    print(f"gpt: nanogpt-cpu, dtype={cfg.train.dtype}, compile={cfg.train.compile} ...", flush=True)
    gpt, gpt_wall = run("nanogpt-cpu", gpt_over)
    rows = [("gpt 4x4x128 (nanogpt-cpu)", gpt, gpt_wall, final_estimate(gpt.run_dir),
             steady_step_time(gpt.run_dir, gpt, tokens_per_step))]

    if not args.skip_lstm:
        lstm_over = {**common, "train.out_dir": str(out / "shakespeare-char-lstm"), "train.max_time": gpt.train_time}
        lcfg = load_config("shakespeare-char-lstm", lstm_over)
        print(f"lstm: shakespeare-char-lstm, dtype={lcfg.train.dtype}, max_time={gpt.train_time:.1f} s ...", flush=True)
        lstm, lstm_wall = run("shakespeare-char-lstm", lstm_over)
        ltok = lcfg.train.batch_size * lcfg.train.grad_accum * lcfg.model.block_size
        rows.append(("lstm 2x128 (shakespeare-char-lstm)", lstm, lstm_wall, final_estimate(lstm.run_dir),
                     steady_step_time(lstm.run_dir, lstm, ltok)))

    print()
    print(f"| {'model':<34} | steps | wall s | train s | steady ms/step | tokens/s "
          "| val loss (full split) | val est (20 batches) |")
    print(f"|{'-' * 36}|------:|-------:|--------:|---------------:|---------:"
          "|----------------------:|---------------------:|")
    for name, r, wall, est, steady in rows:
        print(f"| {name:<34} | {r.step:>5} | {wall:>6.1f} | {r.train_time:>7.1f} | {steady * 1e3:>14.1f} | "
              f"{r.tokens_per_sec:>8,.0f} | {r.val_loss:>21.4f} | {est:>20.4f} |")
    print(f"| {'nanoGPT train.py (from the issue)':<34} |  2000 | {NANOGPT_WALL:>6.1f} | {'':>7} | {'':>14} | "
          f"{'':>8} | {'':>21} | {NANOGPT_VAL:>20.4f} |")
    print()
    print(f"gpt vs nanoGPT: {NANOGPT_WALL / gpt_wall:.2f}x faster in wall time (target >= 2.75x, i.e. <= 40 s); "
          f"full-split val loss {gpt.val_loss:.4f} (target <= 1.88)")


if __name__ == "__main__":
    main()
