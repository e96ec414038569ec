"""Pretrained encoder-decoder shapes: proselab against transformers, same weights, one run.

    python bench/pretrained_seq2seq.py [--rounds N] [--new-tokens N] [--quick] [--only marian|bart]
                                       [--jobs greedy,beam,train] [--batches 1,16] [--dtypes float32,bfloat16]

Run it pinned, one thread: ``OMP_NUM_THREADS=1 taskset -c 0 nice python bench/pretrained_seq2seq.py``.

Two shapes, random weights: Marian as opus-mt-en-es (6 + 6 layers, d_model 512, 8 heads, ffn
2048, vocab 65,001, shared embeddings, SiLU, a final logits bias) and BART-base (6 + 6, 768,
12 heads, ffn 3072, vocab 50,265, learned positions, GELU). ``transformers`` builds each model
from its config with seed 0 (dropout 0, as proselab imports it), saves it to a temp directory,
and both sides load that directory: ``AutoModelForSeq2SeqLM.from_pretrained`` and proselab's
``interop.load_hf_model`` (what ``proselab.load`` runs on a Hugging Face directory, without
the tokenizer files these random checkpoints do not have). So the weights are identical.

The jobs, at batch 1 and 16, sources of 30 random ids (seed 0, no padding; the same tensors
for both sides):

  greedy, beam 5   ``--new-tokens`` (32) tokens each: proselab ``decoding.generate(model,
                   Seq2SeqBatch(src, mask), GenerationConfig(...))``, transformers
                   ``model.generate(input_ids, attention_mask, ...)``. The length is forced on
                   both sides with min_new_tokens = max_new_tokens (eos is held back), so every
                   row and beam does the same number of steps; no forced bos/eos, no banned
                   tokens, length_penalty 1, early_stopping False. tokens/s = batch x new tokens
                   / the whole call (encoder included); beams are not counted as tokens.
  train            one fine-tuning step on batch 16 x 64 tokens (source 64, target 64):
                   zero_grad, forward with the loss (teacher forcing), backward, AdamW
                   (lr 1e-5, torch's default foreach implementation) on every parameter, in
                   train mode. tokens/s = 16 x 64 target tokens / the step.

dtypes: float32; bfloat16 as a model cast (``.to(torch.bfloat16)``, weights and all) for
decoding, and as CPU autocast (``torch.autocast("cpu", torch.bfloat16)`` around the forward,
float32 weights and optimizer) for the training step. Each side gets the same treatment.

These machines drift by 30% from one minute to the next, so each configuration runs its two
sides back to back (A B, then B A in the next round), ``--rounds`` times after warm-up calls (a
4-token decode; two training steps);
the ratio column is the median of the per-round ratios proselab / transformers (> 1 = proselab
faster), and the tok/s columns are medians. Greedy and beam tokens are compared in float32
(bf16 rounds differently in the two libraries).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SHAPES = {
    "marian": dict(vocab_size=65001, d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                   decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=512,
                   pad_token_id=65000, eos_token_id=0, decoder_start_token_id=65000, scale_embedding=True,
                   activation_function="swish", share_encoder_decoder_embeddings=True),
    "bart": dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024,
                 pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, scale_embedding=False,
                 activation_function="gelu"),
}
NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
SRC_LEN, TRAIN_SHAPE, BEAMS = 30, (16, 64), 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="timed A/B rounds per configuration (default: %(default)s)")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated per row (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a tiny budget to try the script: 1 round, 4 new tokens, "
                   "a 2 x 16 training batch")
    p.add_argument("--only", choices=sorted(SHAPES), default=None, help="one shape only")
    p.add_argument("--jobs", default="greedy,beam,train", help="comma-separated subset of greedy,beam,train")
    p.add_argument("--batches", default="1,16", help="decoding batch sizes (default: %(default)s)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="default: %(default)s")
    return p.parse_args(argv)


def build(shape: str, directory: Path):
    """transformers' model (seed 0) saved to ``directory``, and both sides loaded from it."""
    import torch
    import transformers

    from proselab.interop import load_hf_model

    config_class = transformers.MarianConfig if shape == "marian" else transformers.BartConfig
    torch.manual_seed(0)
    model = transformers.AutoModelForSeq2SeqLM.from_config(config_class(**SHAPES[shape], **NO_DROPOUT))
    model.save_pretrained(str(directory))
    del model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(directory)).eval()
    ours, _ = load_hf_model(directory)
    return ours.eval(), hf


def run_proselab(model, src, mask, beams: int, n: int, eos: int) -> list[list[int]]:
    from proselab.config import GenerationConfig
    from proselab.data.batch import Seq2SeqBatch
    from proselab.decoding import generate

    cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=beams, eos_token_id=eos,
                           length_penalty=1.0, early_stopping=False)
    return [g.tokens for g in generate(model, Seq2SeqBatch(src, mask), cfg)]


def run_hf(model, src, mask, beams: int, n: int, eos: int) -> list[list[int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model.generate(input_ids=src, attention_mask=mask.long(), do_sample=False, num_beams=beams,
                             max_new_tokens=n, min_new_tokens=n, length_penalty=1.0, early_stopping=False)
    return out[:, 1:].tolist()  # after the decoder's start token


def hf_plain_generation(hf) -> None:
    """No forced bos/eos, banned words or n-gram rules from the config: the same job as proselab's."""
    g = hf.generation_config
    g.forced_bos_token_id = g.forced_eos_token_id = g.bad_words_ids = None
    g.no_repeat_ngram_size, g.num_beams, g.max_length = 0, 1, None


def train_step_fn(lib: str, model, dtype: str, batch):
    """A closure running one fine-tuning step of ``model`` (a training copy) on ``batch``."""
    import torch

    from proselab.data.batch import Seq2SeqBatch

    src, mask, tgt_in, targets = batch
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()

    def loss():
        if lib == "proselab":
            return model(Seq2SeqBatch(src, mask, tgt_in), targets)[1]
        return model(input_ids=src, attention_mask=mask.long(), decoder_input_ids=tgt_in, labels=targets).loss

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            value = loss()
        value.backward()
        opt.step()
        return float(value)

    return step


def time_pair(fns: dict, rounds: int, label: str) -> tuple[list[float], list[float]]:
    """Seconds per call of fns["proselab"] and fns["transformers"], alternating which goes first."""
    out = {"proselab": [], "transformers": []}
    for r in range(rounds):
        order = ("proselab", "transformers") if r % 2 == 0 else ("transformers", "proselab")
        for lib in order:
            start = time.perf_counter()
            fns[lib]()
            out[lib].append(time.perf_counter() - start)
        print(f"  {label} round {r + 1}: proselab {out['proselab'][-1]:.2f} s, transformers "
              f"{out['transformers'][-1]:.2f} s", flush=True)
    return out["proselab"], out["transformers"]


def bench_shape(shape: str, args, rows: list, notes: list) -> None:
    import torch

    n = args.new_tokens
    with tempfile.TemporaryDirectory(prefix=f"proselab-bench-{shape}-") as d:
        start = time.perf_counter()
        ours, hf = build(shape, Path(d))
    hf_plain_generation(hf)
    V, eos = SHAPES[shape]["vocab_size"], SHAPES[shape]["eos_token_id"]
    print(f"{shape}: {sum(p.numel() for p in hf.parameters()) / 1e6:.1f} M params, built and loaded in "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    gen = torch.Generator().manual_seed(0)
    dtypes = args.dtypes.split(",")
    jobs = args.jobs.split(",")
    models = {("proselab", "float32"): ours, ("transformers", "float32"): hf}
    # copies made before any decoding: proselab's decoding prepacks weights, which deepcopy cannot copy
    train = {"proselab": copy.deepcopy(ours), "transformers": copy.deepcopy(hf)} if "train" in jobs else {}
    if "bfloat16" in dtypes and ("greedy" in jobs or "beam" in jobs):
        models["proselab", "bfloat16"] = copy.deepcopy(ours).to(torch.bfloat16)
        models["transformers", "bfloat16"] = copy.deepcopy(hf).to(torch.bfloat16)
    for b in [int(x) for x in args.batches.split(",")]:
        src = torch.randint(3, V - 2, (b, SRC_LEN), generator=gen)
        mask = torch.ones(b, SRC_LEN, dtype=torch.bool)
        for mode, beams in (("greedy", 1), (f"beam {BEAMS}", BEAMS)):
            if mode.split()[0] not in jobs:
                continue
            for dt in dtypes:
                label = f"{shape} b{b} {mode} {dt}"
                fns = {lib: (lambda lib=lib: RUN[lib](models[lib, dt], src, mask, beams, n, eos)) for lib in RUN}
                with torch.no_grad():
                    for lib in RUN:  # warm-up
                        RUN[lib](models[lib, dt], src, mask, beams, min(n, 4), eos)
                    ps, hs = time_pair(fns, args.rounds, label)
                    if dt == "float32":
                        a = RUN["proselab"](models["proselab", dt], src, mask, beams, n, eos)
                        h = RUN["transformers"](models["transformers", dt], src, mask, beams, n, eos)
                        notes.append(f"{label}: tokens identical to transformers: {'yes' if a == h else 'NO'}")
                rows.append((label, [b * n / t for t in ps], [b * n / t for t in hs]))
    if "train" in jobs:
        B, T = (2, 16) if args.quick else TRAIN_SHAPE
        src = torch.randint(3, V - 2, (B, T), generator=gen)
        tgt = torch.randint(3, V - 2, (B, T + 1), generator=gen)
        batch = (src, torch.ones(B, T, dtype=torch.bool), tgt[:, :-1].contiguous(), tgt[:, 1:].contiguous())
        for dt in dtypes:
            fns = {lib: train_step_fn(lib, train[lib], dt, batch) for lib in train}
            for f in (*fns.values(), *fns.values()):
                f()  # warm-up, twice: allocates the optimizer state; the first steps ran slow
            label = f"{shape} b{B}x{T} train {dt}"
            ps, hs = time_pair(fns, args.rounds, label)
            rows.append((label, [B * T / t for t in ps], [B * T / t for t in hs]))
            del fns


RUN = {"proselab": run_proselab, "transformers": run_hf}


def print_table(rows: list) -> None:
    print("| shape x batch x mode x dtype | proselab tok/s | transformers tok/s | ratio (median of rounds) "
          "| per-round ratios |")
    print("|---|---:|---:|---:|---|")
    for label, ps, hs in rows:
        ratios = [p / h for p, h in zip(ps, hs)]
        print(f"| {label} | {statistics.median(ps):.1f} | {statistics.median(hs):.1f} | "
              f"{statistics.median(ratios):.2f}x | {', '.join(f'{r:.2f}' for r in ratios)} |")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.quick:
        args.rounds, args.new_tokens = 1, 4
    sys.path.insert(0, str(REPO))  # run from a checkout without installing it
    import torch
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads; "
          f"{args.rounds} rounds, {args.new_tokens} new tokens", flush=True)
    rows, notes = [], []
    for shape in SHAPES:
        if args.only in (None, shape):
            bench_shape(shape, args, rows, notes)
    print()
    print_table(rows)
    print()
    for line in notes:
        print(line)


if __name__ == "__main__":
    main()
