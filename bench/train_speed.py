"""Training and perplexity-evaluation speed of a GPT-2-124M-shaped model: proselab against transformers, same weights.

    python bench/train_speed.py [--reps N] [--steps N] [--eval-batches N] [--warmup N] [--quick] [--profile]

The defaults take ~6-8 minutes on 2 cores (a float32 training step is 15-30 s); ``--quick``
(one round) ~4, and ``--profile`` adds ~2.

The models: a transformers ``GPT2LMHeadModel`` (12 layers x 12 heads x 768, vocab 50257,
n_positions 1024, gelu_new, tied head, dropout 0; random weights, seed 0) is saved with
``save_pretrained`` to a temporary directory (with GPT-2's tokenizer files, which the import
needs), and proselab's model is loaded from that directory with
``proselab.runs.load_run``, the real import path (``proselab/interop/gpt2.py``). So both hold the
same weights, checked tensor by tensor. Each (library, precision) pair trains its own deep
copy, with its own optimizer, so four models in all.

The data: 4 fixed random batches of 8 x 257 token ids (seed 0) for training, cycled, and 4
more (seed 1) for evaluation; inputs are a window's first 256 ids, targets its last 256.

A training step is: forward with the targets, backward, ``clip_grad_norm_(params, 1.0)``,
AdamW step, ``zero_grad(set_to_none=True)``, in the order of proselab's training loop.
proselab computes its loss as ``model(x, y)``. transformers gets
``model(input_ids=x, labels=y, shift_labels=y, use_cache=False)``: ``shift_labels`` is
transformers' own argument for labels that are already shifted, so its loss covers the
same 8 x 256 targets (``labels=x`` would shift them and drop the last one of every row), and
``use_cache=False`` spares it the DynamicCache it otherwise builds in training mode too.
Both losses are the mean cross-entropy over float32 logits; proselab's gpt computes it
with ``models.layers.head_loss`` (the head and the loss in one pass, logits never stored in
float32), transformers from its full logits. The optimizer for both is
AdamW with lr 1e-4, betas (0.9, 0.99) and weight decay 0.1 on matrices only:
``proselab.training.make_optimizer`` for proselab, and the same parameter groups in a
``torch.optim.AdamW(..., fused=True)`` for transformers (plain AdamW if fused fails; the
run prints which each got).

Evaluation is a perplexity pass: eval mode, ``torch.no_grad``, one 8 x 256 batch, mean
cross-entropy, the same calls as above (``proselab.evaluation.evaluate_tokens`` also calls
``model(x, y)``).

Precision: float32, and bf16 autocast (``torch.autocast("cpu", dtype=torch.bfloat16)``,
float32 weights) for both libraries. proselab's trainer picks bf16 autocast on a CPU with
avx512_bf16 or amx_bf16 (``pick_dtype("auto")``, as on this machine) and uses it for its
final val pass; ``proselab.evaluate`` runs float32. transformers runs float32 unless told
otherwise. So the table gives same-precision ratios, and a last line compares the defaults:
proselab's bf16 training step against transformers' float32 one.

Timing: every step and every eval batch is timed alone with ``perf_counter``. First
``--warmup`` training steps and one eval batch of every configuration, untimed. Then
``--reps`` rounds; in each, every configuration trains ``--steps`` steps, then every
configuration evaluates ``--eval-batches`` batches, the configurations' order reversed
every other round, so the machine's drift hits all of them. The table gives medians
over all timed steps; tokens/s = 8 x 256 / that median. As proselab's trainer does on CPU,
the process keeps freed heap memory (``training.keep_freed_memory``); that applies to both.

Checks: all four models train on the same batches from the same weights, so the
libraries' loss trajectories (warm-up steps included) and eval losses must agree: within
1e-3 in float32 (rounding only: Conv1D's addmm against nn.Linear) and 1e-2 in bf16 (the
two round activations differently; a quick run differed by 2e-4). The differences are
printed, and asserted after the table. ``--profile`` adds one training step of each
configuration under torch.profiler: the top operators by self CPU time.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPT2_FILES = REPO.parent / "shared" / "data" / "gpt2-tokenizer"  # vocab.json + merges.txt

B, T, VOCAB = 8, 256, 50257
N_BATCHES = 4  # distinct batches, cycled
LR, WEIGHT_DECAY, GRAD_CLIP = 1e-4, 0.1, 1.0
TARGET = 1.5  # x transformers, training and evaluation
TOL = {"float32": 1e-3, "bfloat16": 1e-2}  # loss agreement between the libraries
LIBS, DTYPES = ("proselab", "transformers"), ("float32", "bfloat16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3, help="timed rounds over all configurations (default: %(default)s)")
    p.add_argument("--steps", type=int, default=1, help="timed training steps per configuration per round "
                   "(default: %(default)s)")
    p.add_argument("--eval-batches", type=int, default=1, help="timed eval batches per configuration per round "
                   "(default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed training steps per configuration first "
                   "(default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, 1 step, 1 eval batch")
    p.add_argument("--profile", action="store_true", help="then profile one training step of each configuration")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.steps, args.eval_batches = 1, 1, 1
    if min(args.reps, args.steps, args.eval_batches) < 1 or args.warmup < 0:
        p.error("--reps, --steps and --eval-batches must be >= 1, --warmup >= 0")
    return args


def build_models(tmp: Path):
    """transformers' GPT2LMHeadModel, saved to ``tmp``, and proselab's model imported from there."""
    import torch
    import transformers

    from proselab.runs import load_run
    from proselab.interop.gpt2 import CONV1D
    from proselab.tokenizers import train_tokenizer

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                                  activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(cfg)
    hf.save_pretrained(tmp)
    if (GPT2_FILES / "vocab.json").is_file():
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(GPT2_FILES / name, tmp / name)
    else:  # any tokenizer within the vocabulary will do: the benchmark feeds token ids
        train_tokenizer("char", ["abcdefghijklmnopqrstuvwxyz .,\n"]).save(tmp / "tokenizer.json")
    ours, _, _ = load_run(tmp)
    hf_sd, our_sd = hf.state_dict(), ours.state_dict()
    assert set(hf_sd) == set(our_sd), f"parameter names differ: {set(hf_sd) ^ set(our_sd)}"
    for name, t in hf_sd.items():
        assert torch.equal(our_sd[name], t.t() if name.endswith(CONV1D) else t), f"{name} differs after the import"
    assert ours.lm_head.weight is ours.transformer.wte.weight, "proselab's head is not tied"
    return ours, hf


def make_optimizers(model, lib: str):
    """AdamW as proselab's trainer builds it; the same groups and settings for transformers."""
    import torch

    from proselab.config import TrainConfig
    from proselab.training import make_optimizer

    t = TrainConfig(lr=LR, weight_decay=WEIGHT_DECAY)  # betas (0.9, 0.99), proselab's defaults
    if lib == "proselab":
        return make_optimizer(model, t, torch.device("cpu"))
    params = list(model.parameters())  # the tied head appears once
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": t.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2))


def loss_of(lib: str, model, x, y):
    """Mean cross-entropy of predicting y (B, T) from x (B, T), a float32 scalar."""
    if lib == "proselab":
        return model(x, y)[1]
    return model(input_ids=x, labels=y, shift_labels=y, use_cache=False).loss  # y already shifted


def autocast(dtype: str):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16" else nullcontext()


def train_step(lib: str, dtype: str, model, opt, x, y) -> float:
    import torch

    with autocast(dtype):
        loss = loss_of(lib, model, x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def eval_batch(lib: str, dtype: str, model, x, y) -> float:
    import torch

    with torch.no_grad(), autocast(dtype):
        return loss_of(lib, model, x, y).item()


class Runner:
    """One (library, dtype) configuration: its model copy, optimizer, and what it measured."""

    def __init__(self, lib: str, dtype: str, model):
        self.lib, self.dtype, self.model = lib, dtype, model.train()
        self.opt = make_optimizers(model, lib)
        self.steps_done = 0
        self.train_losses: list[float] = []  # every step, warm-up included
        self.eval_losses: list[float] = []  # every eval batch, warm-up included
        self.train_s: list[float] = []  # timed steps only
        self.eval_s: list[float] = []

    def train(self, n: int, data, timed: bool) -> None:
        for _ in range(n):
            x, y = data[self.steps_done % len(data)]
            start = time.perf_counter()
            loss = train_step(self.lib, self.dtype, self.model, self.opt, x, y)
            if timed:
                self.train_s.append(time.perf_counter() - start)
            self.train_losses.append(loss)
            self.steps_done += 1

    def evaluate(self, n: int, data, timed: bool) -> None:
        self.model.eval()
        for _ in range(n):
            x, y = data[len(self.eval_losses) % len(data)]
            start = time.perf_counter()
            loss = eval_batch(self.lib, self.dtype, self.model, x, y)
            if timed:
                self.eval_s.append(time.perf_counter() - start)
            self.eval_losses.append(loss)
        self.model.train()


def make_batches(seed: int):
    """N_BATCHES (x, y) pairs of (B, T) token ids: a 257-token window's first and last 256."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    windows = torch.randint(0, VOCAB, (N_BATCHES, B, T + 1), generator=gen)  # (N, B, T + 1)
    return [(w[:, :-1].contiguous(), w[:, 1:].contiguous()) for w in windows]


def measure(runners: dict, train_data, eval_data, args) -> None:
    configs = list(runners)
    print(f"warm-up: {args.warmup} training step(s) and 1 eval batch per configuration ...", flush=True)
    for c in configs:
        runners[c].train(args.warmup, train_data, timed=False)
        runners[c].evaluate(1, eval_data, timed=False)
    print(f"{len(configs)} configurations x {args.reps} rounds x ({args.steps} training steps + "
          f"{args.eval_batches} eval batches) ...", flush=True)
    for r in range(args.reps):
        order = configs if r % 2 == 0 else configs[::-1]
        for c in order:
            runners[c].train(args.steps, train_data, timed=True)
        for c in order:
            runners[c].evaluate(args.eval_batches, eval_data, timed=True)
        print(f"  round {r + 1}: " + ", ".join(
            f"{lib[:4]} {dt[:4]} train {statistics.median(runners[lib, dt].train_s[-args.steps:]) * 1e3:,.0f} ms "
            f"eval {statistics.median(runners[lib, dt].eval_s[-args.eval_batches:]) * 1e3:,.0f} ms"
            for lib, dt in configs), flush=True)


def print_table(runners: dict) -> None:
    print(f"| job | dtype | library | ms (median) | all timed ms | tokens/s | vs transformers | target >= {TARGET}x |")
    print("|---|---|---|---:|---|---:|---:|---|")
    for job, attr in (("train step", "train_s"), ("eval batch", "eval_s")):
        for dt in DTYPES:
            ref = statistics.median(getattr(runners["transformers", dt], attr))
            for lib in LIBS:
                times = getattr(runners[lib, dt], attr)
                med = statistics.median(times)
                ratio = ref / med
                verdict = ("met" if ratio >= TARGET else "NOT met") if lib == "proselab" else ""
                print(f"| {job} | {dt} | {lib} | {med * 1e3:,.0f} | {', '.join(f'{t * 1e3:,.0f}' for t in times)} "
                      f"| {B * T / med:,.0f} | {ratio:.2f}x | {verdict} |")


def print_checks(runners: dict) -> list[str]:
    """Print the loss comparisons; return the failures."""
    failures = []
    for dt in DTYPES:
        ours, hf = runners["proselab", dt], runners["transformers", dt]
        d_train = max(abs(a - b) for a, b in zip(ours.train_losses, hf.train_losses))
        d_eval = max(abs(a - b) for a, b in zip(ours.eval_losses, hf.eval_losses))
        print(f"{dt}: training loss over {len(ours.train_losses)} steps, proselab "
              f"{ours.train_losses[0]:.5f} -> {ours.train_losses[-1]:.5f}, transformers {hf.train_losses[0]:.5f} -> "
              f"{hf.train_losses[-1]:.5f}, max |difference| {d_train:.2e}; eval loss (last) proselab "
              f"{ours.eval_losses[-1]:.5f}, transformers {hf.eval_losses[-1]:.5f}, max |difference| over "
              f"{len(ours.eval_losses)} batches {d_eval:.2e} (tolerance {TOL[dt]:g})")
        if max(d_train, d_eval) > TOL[dt]:
            failures.append(f"{dt}: losses differ by {max(d_train, d_eval):.2e} > {TOL[dt]:g}")
    return failures


def print_defaults(runners: dict) -> None:
    ours = statistics.median(runners["proselab", "bfloat16"].train_s)
    hf = statistics.median(runners["transformers", "float32"].train_s)
    ratio = hf / ours
    print(f"defaults, training: proselab (bf16 autocast, pick_dtype('auto') here) {ours * 1e3:,.0f} ms/step against "
          f"transformers (float32) {hf * 1e3:,.0f} ms/step: {ratio:.2f}x (target >= {TARGET}x: "
          f"{'met' if ratio >= TARGET else 'NOT met'})")
    ours = statistics.median(runners["proselab", "bfloat16"].eval_s)
    hf = statistics.median(runners["transformers", "float32"].eval_s)
    print(f"defaults, evaluation: proselab's trainer val pass (bf16) against transformers (float32): {hf / ours:.2f}x; "
          f"proselab.evaluate runs float32, so the float32 row is its comparison")


def profile_steps(runners: dict, train_data, rows: int = 12) -> None:
    """One training step of each configuration under torch.profiler: top operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    for (lib, dt), r in runners.items():
        x, y = train_data[0]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            train_step(lib, dt, r.model, r.opt, x, y)
            wall = time.perf_counter() - start
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        print(f"\n{lib} {dt}: one training step under the profiler, {wall * 1e3:,.0f} ms")
        print("| op | calls | self CPU ms | share |")
        print("|---|---:|---:|---:|")
        for e in events[:rows]:
            print(f"| {e.key} | {e.count} | {e.self_cpu_time_total / 1e3:,.1f} | {e.self_cpu_time_total / total:.0%} |")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))  # run from a checkout without installing it
    import torch
    import transformers

    from proselab.training import keep_freed_memory

    keep_freed_memory()
    transformers.utils.logging.set_verbosity_error()  # its loss_type notice, once per model
    transformers.utils.logging.disable_progress_bar()  # save_pretrained's shard bar
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="proselab-train-speed-") as tmp:
        ours, hf = build_models(Path(tmp))
    base = {"proselab": ours, "transformers": hf}
    runners = {(lib, dt): Runner(lib, dt, copy.deepcopy(base[lib])) for dt in DTYPES for lib in LIBS}
    del ours, hf, base
    fused = {lib: runners[lib, "float32"].opt.defaults.get("fused") for lib in LIBS}
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads; "
          f"models built and imported in {time.perf_counter() - start:.1f} s; "
          f"{sum(p.numel() for p in runners['proselab', 'float32'].model.parameters()) / 1e6:.1f} M params; "
          f"AdamW fused: " + ", ".join(f"{lib} {bool(f)}" for lib, f in fused.items()))
    attn = runners["transformers", "float32"].model.config._attn_implementation
    print(f"batch {B} x {T} tokens; transformers attention: {attn}")
    train_data, eval_data = make_batches(0), make_batches(1)
    start = time.perf_counter()
    measure(runners, train_data, eval_data, args)
    print(f"measured in {time.perf_counter() - start:.0f} s")
    print()
    print_table(runners)
    print()
    failures = print_checks(runners)
    print_defaults(runners)
    if args.profile:
        profile_steps(runners, train_data)
    assert not failures, "; ".join(failures)


if __name__ == "__main__":
    main()
