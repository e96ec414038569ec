"""What attention and Transformers buy: four seq2seq models, one CPU budget each, on bible-en-es.

Rows: an RNN encoder-decoder without attention (the decoder sees only the encoder's final
state), the same with Bahdanau (additive) attention, with Luong (general) attention (the
three are the bible-en-es-rnn preset with model.attention set), and a Transformer (the
bible-en-es preset). Each trains for the same wall-clock budget on the same data and tokenizer
(a joint byte-level BPE), then decodes the dev set greedily and with 5 beams. Reported: dev
BLEU and chrF (sacrebleu), and beam-search decoding speed in sentences/s (batches of 64).

The step count is fixed from a short timed run first, so each model's learning-rate schedule
ends with its budget (a run cut off mid-schedule never reaches its low learning rate).

    python bench/attention_table.py --data ../shared/data/bible-en-es --minutes 20

--data is a directory with train.short.tsv and dev.short.tsv (--full: train.tsv, dev.tsv).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from proselab.evaluation import evaluate_pairs
from proselab.training import train

# Each row is a preset (proselab/configs) with its own settings; only the budget differs.
ROWS = {
    "rnn-none": ("bible-en-es-rnn", {"model.attention": "none"}),
    "rnn-bahdanau": ("bible-en-es-rnn", {"model.attention": "bahdanau"}),
    "rnn-luong": ("bible-en-es-rnn", {}),  # the preset: Luong (general) attention
    "transformer": ("bible-en-es", {}),
}
BENCH = {"train.progress": False}


def _steps_for(budget: float, preset: str, overrides: dict, out: Path) -> int:
    """Optimizer steps that fit ``budget`` seconds, from the time of 30 steps (after 10 warm-up ones)."""
    probe = {**overrides, "train.out_dir": str(out), "train.overwrite": True, "train.eval_interval": 10_000,
             "train.final_eval": False, "train.eval_bleu_samples": 0, "train.eval_iters": 1}
    warm = train(preset, {**probe, "train.max_iters": 10})
    timed = train(preset, {**probe, "train.max_iters": 40})
    per_step = (timed.train_time - warm.train_time) / 30
    return max(50, int(budget / per_step))


def run_row(name: str, data: Path, full: bool, minutes: float, out_root: Path, eval_only: bool = False) -> dict:
    suffix = "" if full else ".short"
    preset, row = ROWS[name]
    overrides = {**BENCH, **row, "data.dataset": str(data / f"train{suffix}.tsv"),
                 "data.val_dataset": str(data / f"dev{suffix}.tsv")}
    run = out_root / name
    if eval_only:  # the run trained before: its figures from metrics.jsonl
        final = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if "final_val_loss" in ln][-1]
        result = argparse.Namespace(step=final["step"], train_time=float("nan"), val_loss=final["final_val_loss"])
    else:
        steps = _steps_for(minutes * 60, preset, overrides, out_root / f"{name}-probe")
        result = train(preset, {**overrides, "train.out_dir": str(run), "train.overwrite": True,
                                "train.max_iters": steps, "train.max_time": minutes * 60,
                                "train.eval_interval": max(1, steps // 4)})
    dev = str(data / f"dev{suffix}.tsv")
    greedy = evaluate_pairs(run, dev, out=run / "dev.greedy.txt", metrics=("bleu", "chrf"))
    beam = evaluate_pairs(run, dev, out=run / "dev.beam5.txt", metrics=("bleu", "chrf"), num_beams=5)
    return {"row": name, "steps": result.step, "train_minutes": round(result.train_time / 60, 1),
            "val_loss": round(result.val_loss, 3), "greedy_bleu": round(greedy["bleu"], 2),
            "greedy_chrf": round(greedy["chrf"], 2), "beam5_bleu": round(beam["bleu"], 2),
            "beam5_chrf": round(beam["chrf"], 2), "beam5_sent_per_sec": round(beam["sentences_per_sec"], 1),
            "greedy_sent_per_sec": round(greedy["sentences_per_sec"], 1), "bleu_signature": beam["bleu_signature"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="directory with train[.short].tsv and dev[.short].tsv")
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per row (default 20)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--full", action="store_true", help="train.tsv/dev.tsv instead of the .short files")
    ap.add_argument("--out", type=Path, default=Path("runs/attention_table"))
    ap.add_argument("--eval-only", action="store_true", help="decode and score the runs already in --out")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in args.rows.split(","):
        start = time.perf_counter()
        rows.append(run_row(name, args.data, args.full, args.minutes, args.out, args.eval_only))
        rows[-1]["wall_minutes"] = round((time.perf_counter() - start) / 60, 1)
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nbible-en-es {'full' if args.full else 'short'}, {args.minutes:g} min of training per row, "
          f"{torch.get_num_threads()} threads; dev BLEU / chrF (sacrebleu), beam decoding batched by 64\n")
    print("| model | steps | val loss | greedy BLEU | greedy chrF | beam-5 BLEU | beam-5 chrF | beam-5 sent/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['row']} | {r['steps']} | {r['val_loss']} | {r['greedy_bleu']} | {r['greedy_chrf']} | "
              f"{r['beam5_bleu']} | {r['beam5_chrf']} | {r['beam5_sent_per_sec']} |")
    print(f"\nBLEU signature: {rows[0]['bleu_signature']}")


if __name__ == "__main__":
    main()
