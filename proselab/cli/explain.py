"""`proselab explain RUN`: how sure a model was of each token, where it looked, and which input
tokens drove its output or its label, as explanation.{json,html,png} in a directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import no_extra, positive_int


def cmd_explain(args: argparse.Namespace, extra: list[str]) -> int:
    from ..api import load
    from ..decoding import json_safe

    no_extra(extra)
    gen = load(args.run, device=args.device)
    over = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    expl = gen.explain(args.text, args.prompt, args.method, target=args.target, samples=args.samples,
                       top_k=args.top_k, seed=args.seed, part=args.part, **over)
    paths = expl.save(args.out, title=f"{Path(args.run).name}: {args.method}")
    if args.json:
        print(json.dumps(json_safe(expl.to_dict()), ensure_ascii=False))
        return 0
    print(_summary(expl))
    print(f"written to {paths['html']} (and {paths['json'].name}, {paths['png'].name})")
    return 0


def _summary(expl) -> str:
    """A line or two for the terminal: the headline numbers of the explanation."""
    if expl.method == "tokens":
        d, worst = expl.details, min(expl.output, key=lambda t: t["prob"])
        return (f"{d['tokens']} tokens scored: {d['bits_per_token']:.2f} bits per token (perplexity "
                f"{d['perplexity']:.4g}); least expected: {worst['text']!r} (p = {worst['prob']:.4f}, "
                f"rank {worst['rank']})")
    if expl.method == "attention":
        w = expl.attention["weights"]
        return f"attention of {len(w)} layer(s) x {len(w[0])} head(s) over {len(expl.attention['cols'])} tokens"
    ranked = sorted(zip(expl.context, expl.attributions), key=lambda p: -abs(p[1]))[:5]
    top = ", ".join(f"{t['text']!r} {v:+.3g}" for t, v in ranked)
    return f"{expl.method} attributions of {expl.target}: {top}"


def add_explain(sub) -> None:
    """`proselab explain RUN --text|--prompt --method ... --out DIR`."""
    e = sub.add_parser("explain", help="explain a run on a text: each token's probability, attention per layer and "
                                       "head, or input attributions (integrated gradients, Shapley, LIME)")
    e.add_argument("run", help="run directory")
    e.add_argument("--text", help="the text to score (a language model: after --prompt), or a classifier's text")
    e.add_argument("--prompt", help="what the model reads first: a language model's prompt (without --text, its "
                                    "greedy continuation is explained), a seq2seq run's source")
    e.add_argument("--method", default="tokens", choices=["tokens", "attention", "ig", "shapley", "lime"],
                   help="tokens: probability, surprisal, rank and alternatives of each token (default); attention: "
                        "per layer and head; ig: integrated gradients; shapley, lime: perturbation attributions")
    e.add_argument("--target", help="ig/shapley/lime: a classifier's label (default: the predicted one), or the index "
                                    "or text of one output token (default: the whole output's log-probability)")
    e.add_argument("--samples", type=int, help="ig: integration steps (50); shapley: permutations (20), each costing a "
                                               "forward pass per input token; lime: perturbed texts (200); at most "
                                               "100,000 forward passes in all")
    e.add_argument("--part", default="cross", choices=["cross", "encoder", "decoder"],
                   help="attention of a seq2seq Transformer: cross (each output token over the source, default), "
                        "encoder or decoder self-attention; every layer and head")
    e.add_argument("--top-k", type=positive_int, default=5, help="tokens: alternatives shown per token (default 5)")
    e.add_argument("--max-new-tokens", type=positive_int, help="tokens generated when there is no --text (default 20)")
    e.add_argument("--seed", type=int, default=0, help="shapley/lime sampling seed (default 0)")
    e.add_argument("--out", default="explanation", help="directory for explanation.json/.html/.png "
                                                        "(default ./explanation)")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print the explanation as one JSON object")
    e.set_defaults(func=cmd_explain)
