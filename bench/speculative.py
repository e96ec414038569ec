"""Speculative decoding: tokens/s of a run decoding greedily alone and with a draft, in turn.

For each prompt and round, the run decodes ``--max-new-tokens`` greedily alone, then with
``--draft`` proposing (``proselab.load(run, draft=...)``), alternating so that both see the
same machine state; the sequences are compared token for token (identical in float32; in
bfloat16 a K-token pass rounds differently from K one-token steps, so a near-tie may go the
other way). The script also counts the run's passes
(start, step, extend) and the tokens each extend checked, so the acceptance is measured, not
guessed.

    OMP_NUM_THREADS=1 taskset -c 0 python bench/speculative.py --run RUN --draft DRAFT \\
        --prompts-from ../shared/data/tinyshakespeare/input.txt

A seq2seq Transformer run and its draft (a distilled student) translate ``--sources-from``'s
first ``--prompts`` sources (a TSV of pairs) to their natural end instead:

    OMP_NUM_THREADS=1 taskset -c 0 python bench/speculative.py --run TEACHER --draft STUDENT \
        --sources-from ../shared/data/bible-en-es/dev.short.tsv --prompts 64

``--synthetic GPT2_TOKENIZER_DIR`` needs no runs: a GPT-2-small-shaped model with random weights
(124M) decodes with a random 1-layer draft (what speculation costs when the draft is useless)
and with a draft that is always right at a real cost (the run's blocks 1-11 are made to add
nothing, and the draft is its block 0 with the same embeddings and head: the most a 1-layer
draft of that width can gain); one extend of K tokens is also timed against one step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import proselab
from proselab.api import DTYPES, Generator
from proselab.config import Config, ModelConfig
from proselab.models import build_model
from proselab.tokenizers import load_tokenizer


class Passes:
    """Counts a model's decoding passes by wrapping its bound methods."""

    def __init__(self, model):
        self.starts = self.steps = self.extends = self.extended = 0
        for name in ("start", "step", "extend"):
            setattr(model, name, self._wrap(name, getattr(model, name)))

    def _wrap(self, name, fn):
        def counted(*args):
            if name == "extend":
                self.extends += 1
                self.extended += args[0].size(1)
            else:
                setattr(self, name + "s", getattr(self, name + "s") + 1)
            return fn(*args)
        return counted


def prompts_from(path: Path, n: int, length: int) -> list[str]:
    """``n`` prompts of ``length`` characters, from evenly spaced places of a text."""
    text = path.read_text(encoding="utf-8")
    step = max(1, (len(text) - length) // n)
    return [text[i * step : i * step + length] for i in range(n)]


def run_pair(plain: Generator, spec: Generator, prompts: list, max_new: int, rounds: int, force: bool = True) -> dict:
    """Both ways in turn, ``rounds`` times; ``force``: exactly ``max_new`` tokens each (a text to
    continue), else to the end of the sequence (a source to translate)."""
    lengths = {"max_new_tokens": max_new, **({"min_new_tokens": max_new} if force else {})}
    passes = Passes(spec.model)
    times = {"plain": [], "speculative": []}
    tokens = 0
    for r in range(rounds):
        for label, gen in (("plain", plain), ("speculative", spec)) if r % 2 == 0 else (("speculative", spec),
                                                                                          ("plain", plain)):
            start, outs = time.perf_counter(), []
            for p in prompts:
                outs.append(gen.complete(p, do_sample=False, **lengths)[0].tokens)
            times[label].append(time.perf_counter() - start)
            if label == "plain":
                want, tokens = outs, sum(map(len, outs))
            else:
                got = outs
        same = [a == b for a, b in zip(got, want)]  # float32: all; bf16 rounds a K-token pass differently
        first = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None) for a, b in zip(got, want)]
    passes_per_round = (passes.starts + passes.steps + passes.extends) / rounds
    speeds = {k: [tokens / t for t in v] for k, v in times.items()}
    ratios = [a / b for a, b in zip(times["plain"], times["speculative"])]
    return {"tokens": tokens, "plain_tok_s": speeds["plain"], "spec_tok_s": speeds["speculative"],
            "ratio_median": statistics.median(ratios), "ratios": ratios,
            "tokens_per_pass": tokens / passes_per_round,
            "drafts_per_extend": passes.extended / max(passes.extends, 1),
            "identical": f"{sum(same)}/{len(same)}" + ("" if all(same) else f" (first difference at token "
                                                         f"{min(i for i in first if i is not None)})")}


def synthetic(tokenizer_dir: Path, max_new: int, rounds: int, n_prompts: int, dtype: str) -> tuple[list, list]:
    """A GPT-2-small-shaped run (random weights): the cost of checking K tokens in one extend
    against one step, and decoding with a useless draft (a random 1-layer model)."""
    tok = load_tokenizer(tokenizer_dir)

    def gen(**kw) -> Generator:
        cfg = Config()
        cfg.model = ModelConfig(family="gpt", vocab_size=tok.vocab_size, dropout=0.0, **kw)
        model = build_model(cfg.model).eval()
        return Generator(model if dtype == "auto" else model.to(DTYPES[dtype]), tok, cfg)

    torch.manual_seed(0)
    big = gen(n_layer=12, n_head=12, n_embd=768, block_size=1024)  # GPT-2 small's shape
    twin = gen(n_layer=12, n_head=12, n_embd=768, block_size=1024)  # the same weights, its passes counted
    twin.model.load_state_dict(big.model.state_dict())
    prompts = [[int(i) for i in torch.randint(0, tok.vocab_size, (16,))] for _ in range(n_prompts)]
    draft = gen(n_layer=1, n_head=2, n_embd=64, block_size=1024)
    rows = [("a random 1 x 64 model", run_pair(big, twin.use_draft(draft, 5), prompts, max_new, rounds))]
    # a draft that is always right at a real cost: blocks 1-11 of the run add nothing (their output
    # projections are zero, so each block is the identity, at the full cost), and the draft is block 0
    # with the same embeddings, final norm and head (45M weights against 124M)
    with torch.no_grad():
        for block in list(big.model.transformer.h)[1:]:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
    twin.model.load_state_dict(big.model.state_dict())
    right = gen(n_layer=1, n_head=12, n_embd=768, block_size=1024)
    right.model.load_state_dict({k: v for k, v in big.model.state_dict().items() if not k.startswith("transformer.h.")
                                 or k.startswith("transformer.h.0.")})
    rows.append(("block 0 of a run whose other blocks add nothing (always right)",
                 run_pair(big, twin.use_draft(right, 5), prompts, max_new, rounds)))
    return rows, extend_costs(big.model, prompts[0], rounds)


@torch.no_grad()
def extend_costs(model, prompt: list[int], rounds: int, ks=(1, 2, 4, 6, 8, 12)) -> list[tuple[int, float, float]]:
    """(K, ms of a step, ms of an extend of K tokens), in turn after the same 64-token context:
    what one pass checking K drafts costs against the one step it replaces."""
    from proselab.models.prepack import prepack_for_cpu

    prepack_for_cpu(model)
    context = torch.tensor([prompt * (64 // len(prompt) + 1)])[:, :64]
    out = []
    for k in ks:
        step_ms, ext_ms = [], []
        for _ in range(rounds * 3):
            _, state = model.start(context)
            t0 = time.perf_counter()
            model.step(torch.tensor([1]), state)
            step_ms.append(1e3 * (time.perf_counter() - t0))
            _, state = model.start(context)
            t0 = time.perf_counter()
            model.extend(torch.ones(1, k, dtype=torch.long), state)
            ext_ms.append(1e3 * (time.perf_counter() - t0))
        out.append((k, statistics.median(step_ms), statistics.median(ext_ms)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path)
    p.add_argument("--draft", type=Path)
    p.add_argument("--prompts-from", type=Path, help="a text to cut prompts from")
    p.add_argument("--sources-from", type=Path, help="seq2seq runs: a TSV of pairs whose sources are translated")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--prompt-chars", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--num-draft-tokens", type=int, default=5)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="the weights' dtype, as load's")
    p.add_argument("--synthetic", type=Path, metavar="GPT2_TOKENIZER_DIR",
                   help="random GPT-2-small-shaped runs with GPT-2's tokenizer (vocab.json + merges.txt)")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), dtype {args.dtype}", flush=True)
    rows, costs = [], []
    if args.synthetic:
        rows, costs = synthetic(args.synthetic, args.max_new_tokens, args.rounds, args.prompts, args.dtype)
    else:
        if not (args.run and args.draft and (args.prompts_from or args.sources_from)):
            p.error("give --run, --draft and --prompts-from or --sources-from (or --synthetic)")
        plain = proselab.load(args.run, device="cpu", dtype=args.dtype)
        spec = proselab.load(args.run, device="cpu", dtype=args.dtype, draft=args.draft,
                             num_draft_tokens=args.num_draft_tokens)
        if args.sources_from:
            lines = args.sources_from.read_text(encoding="utf-8").splitlines()
            prompts = [line.split("\t")[0] for line in lines if line.strip()][: args.prompts]
        else:
            prompts = prompts_from(args.prompts_from, args.prompts, args.prompt_chars)
        rows = [(str(args.draft), run_pair(plain, spec, prompts, args.max_new_tokens, args.rounds,
                                           force=not args.sources_from))]
    print("\n| draft | tokens | plain tok/s (rounds) | speculative tok/s (rounds) | ratio (median) | "
          "tokens per pass of the run | drafts per extend | sequences identical |\n|---|---:|---|---|---:|---:|---:|---|")
    for label, r in rows:
        print(f"| {label} | {r['tokens']} | {', '.join(f'{v:.1f}' for v in r['plain_tok_s'])} | "
              f"{', '.join(f'{v:.1f}' for v in r['spec_tok_s'])} | {r['ratio_median']:.2f}x | "
              f"{r['tokens_per_pass']:.2f} | {r['drafts_per_extend']:.2f} | {r['identical']} |")
    if costs:
        print("\n| K | step (ms, median) | extend of K tokens (ms, median) | extend / step |\n|---:|---:|---:|---:|")
        for k, step_ms, ext_ms in costs:
            print(f"| {k} | {step_ms:.1f} | {ext_ms:.1f} | {ext_ms / step_ms:.2f} |")


if __name__ == "__main__":
    main()
