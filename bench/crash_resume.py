"""kill -9 a training run at random instants, half of them inside a checkpoint's save, then
resume it: every trial must end in an exact resume (the same final weights, bit for bit, and the
same train losses as the uninterrupted run) or a clear refusal (exit status 2, one line); none
in a silent mix of two checkpoints.

The run is issue 16's probe: a tiny `shakespeare-char-gpt` (2 layers x 64, block 64, batch 8,
200 steps), with an eval and a checkpoint every 10 steps so that saves are frequent. Each trial
starts the run with `proselab train` and kills it (SIGKILL): the even trials after a random
delay, the odd ones ("in a save") 0-5 ms after the first sight of a save's pending or temporary
file that follows a random delay. Then it runs `proselab train --resume`, or, when the run is
refused as having no checkpoint yet (or was killed before it created its directory), the first
command again, as the refusal says to do. Every process uses one thread, so the runs are
deterministic on one machine.

    python bench/crash_resume.py --data ../shared/data/tinyshakespeare/input.txt --trials 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ARGS = ["--model.n_layer=2", "--model.n_embd=64", "--model.n_head=4", "--model.block_size=64",
        "--train.batch_size=8", "--train.max_iters=200", "--train.eval_interval=10", "--train.eval_iters=4",
        "--train.progress=false", "--train.final_eval=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def command(data: Path, out: Path) -> list[str]:
    return ["proselab", "train", "shakespeare-char-gpt", "--data", str(data), "--out", str(out), *ARGS]


def in_a_save(run: Path) -> bool:
    try:
        return any(e.name.endswith((".pending", ".tmp")) for e in os.scandir(run))
    except FileNotFoundError:
        return False


def kill_at(cmd: list[str], run: Path, delay: float, wait_for_save: bool, jitter: float) -> str:
    """Start ``cmd``, SIGKILL it after ``delay`` s (then, if ``wait_for_save``, ``jitter`` s after
    the first sight of a save in progress); what the kill interrupted."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.perf_counter() + delay
    while time.perf_counter() < deadline and proc.poll() is None:
        time.sleep(0.005)
    while wait_for_save and proc.poll() is None and not in_a_save(run):
        time.sleep(0.0005)
    if wait_for_save:
        time.sleep(jitter)
    if proc.poll() is not None:
        return "finished before the kill"
    saving = in_a_save(run)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return "in a save" if saving else "between saves"


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def train_losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train_loss"] for r in records if "train_loss" in r}


def trial(i: int, data: Path, out: Path, reference: Path, seconds: float, rng: random.Random) -> dict:
    run = out / f"trial-{i:02d}"
    shutil.rmtree(run, ignore_errors=True)
    wait_for_save = i % 2 == 1
    delay = rng.uniform(2.0, seconds * 0.9)
    jitter = rng.uniform(0.0, 0.005)  # a save of this model takes a few milliseconds
    killed = kill_at(command(data, run), run, delay, wait_for_save, jitter)
    left = sorted(p.name for p in run.iterdir()) if run.exists() else []
    resume = subprocess.run(["proselab", "train", "--resume", str(run), "--train.progress=false"], env=ENV,
                            capture_output=True, text=True)
    how = "resume"
    if resume.returncode == 2 and ("no checkpoint yet" in resume.stderr or "does not exist" in resume.stderr):
        how = "restart (killed before the first checkpoint)"
        resume = subprocess.run(command(data, run), env=ENV, capture_output=True, text=True)
    when = f"in-save after {delay:.1f}s + {jitter * 1000:.0f} ms" if wait_for_save else f"random after {delay:.1f}s"
    row = {"trial": i, "kill": when, "killed": killed,
           "left": left, "how": how, "rc": resume.returncode}
    if resume.returncode == 0:
        exact = same_weights(run / "last.safetensors", reference / "last.safetensors") and \
            train_losses(run) == train_losses(reference)
        row["outcome"] = "exact" if exact else "SILENT MISMATCH"
        row["left after"] = [p.name for p in run.iterdir() if p.name.startswith(".")]  # stale files: none
    else:
        lines = resume.stderr.strip().splitlines()
        clear = resume.returncode == 2 and len(lines) == 1 and lines[0].startswith("proselab: error:")
        row["outcome"] = "clear refusal" if clear else "UNCLEAR FAILURE"
        row["message"] = resume.stderr.strip()[-300:]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="the tiny-shakespeare text (input.txt)")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench-crash", type=Path)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    reference = args.out / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(command(args.data, reference), env=ENV, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    print(f"uninterrupted run: {seconds:.1f} s", flush=True)
    rng = random.Random(args.seed)
    rows = []
    for i in range(args.trials):
        row = trial(i, args.data, args.out, reference, seconds, rng)
        print(json.dumps(row), flush=True)
        rows.append(row)
    tally: dict[str, int] = {}
    for row in rows:
        tally[row["outcome"]] = tally.get(row["outcome"], 0) + 1
    print(json.dumps({"trials": len(rows), **tally, "killed in a save": sum(r["killed"] == "in a save" for r in rows)}))


if __name__ == "__main__":
    main()
