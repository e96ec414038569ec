"""A time-boxed run: does a schedule that follows ``train.max_time`` beat one that follows
``max_iters``?

The bible-en-es preset on bible-en-es short, trained for the same wall-clock budget twice with
``--train.max_iters=100000`` (more than the budget reaches), as a user asking for "20 minutes of
training" would: once with ``train.decay_by_time=false`` (the cosine decay runs to step 100,000,
so the learning rate stays near its peak, as every run did before the option existed), once
with ``true`` (the peak, then a cosine to min_lr over the budget's last fifth). The two train
at the same time, each on its own core with one thread (the same minutes, so a machine that
drifts treats both alike). Each run's kept weights (best quick val loss) are then scored on the
dev pairs with beam search (5 beams): BLEU and chrF.

    python bench/time_budget.py --data ../shared/data/bible-en-es --minutes 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from proselab.evaluation import evaluate_pairs
from proselab.training import train


def run(name: str, label: str, data: Path, out: Path, seconds: float, by_time: bool, core: int) -> dict:
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    start = time.perf_counter()
    result = train("bible-en-es", {
        "data.dataset": str(data / "train.short.tsv"), "data.val_dataset": str(data / "dev.short.tsv"),
        "train.out_dir": str(out / name), "train.overwrite": True, "train.progress": False,
        "train.max_time": seconds, "train.max_iters": 100_000, "train.decay_by_time": by_time})
    wall = time.perf_counter() - start
    scores = evaluate_pairs(out / name, str(data / "dev.short.tsv"), num_beams=5)
    return {"row": label, "steps": result.step, "val_loss": result.val_loss, "bleu": scores["bleu"],
            "chrf": scores["chrf"], "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="a directory with train.short.tsv and dev.short.tsv")
    p.add_argument("--minutes", type=float, default=20.0, help="the training budget of each run")
    p.add_argument("--out", default="runs/bench-time-budget", type=Path)
    args = p.parse_args()
    variants = [("by-steps", "decay by steps (to max_iters=100000)", False), ("by-time", "decay by the time budget", True)]
    cores = sorted(os.sched_getaffinity(0))
    assert len(cores) >= 2, "the two runs need a core each"
    # spawn: each child starts its own torch, pinned to one core before it computes anything
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(run, name, label, args.data, args.out, args.minutes * 60, by_time, core)
                for (name, label, by_time), core in zip(variants, cores)]
        rows = [job.result() for job in jobs]
    print(json.dumps(rows, indent=1))
    print(f"\n| {args.minutes:g}-minute budget | steps | final val loss | dev BLEU (beam 5) | dev chrF |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['steps']:,} | {r['val_loss']:.3f} | {r['bleu']:.2f} | {r['chrf']:.2f} |")


if __name__ == "__main__":
    main()
