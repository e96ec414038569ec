"""`proselab distill-data`: a teacher's outputs as training data for a student (sequence-level
knowledge distillation): decoded pairs from a seq2seq teacher, or a corpus sampled from a
language model."""

from __future__ import annotations

import argparse
import sys

from .common import CLIError, no_extra, unescape

SEQ2SEQ_FLAGS = ("n_best", "num_beams", "length_penalty")  # meaningless when sampling a corpus
LM_FLAGS = ("prompt", "seed", "temperature", "top_k", "top_p")  # meaningless when decoding pairs


def cmd_distill_data(args: argparse.Namespace, extra: list[str]) -> int:
    from ..distill.data import sample_corpus, sequence_kd_pairs

    no_extra(extra)
    decode = args.pairs is not None or args.sources is not None
    if [args.pairs, args.sources, args.num_samples].count(None) != 2:
        raise CLIError("give --pairs FILE or --sources FILE (decode its sources with a seq2seq teacher), or "
                       "--num-samples N (sample a corpus from a language-model teacher): one of the three")
    unused = LM_FLAGS if decode else SEQ2SEQ_FLAGS
    given = [f for f in unused if getattr(args, f) is not None]
    if given:
        other = "--num-samples" if decode else "--pairs or --sources"
        raise CLIError(f"--{given[0].replace('_', '-')} applies with {other} only")
    over = {k: getattr(args, k) for k in ("num_beams", "max_new_tokens", "length_penalty", "temperature", "top_k",
                                          "top_p") if getattr(args, k) is not None}
    common = dict(out=args.out, batch_size=args.batch_size, overwrite=args.overwrite, device=args.device)
    try:
        if decode:
            res = sequence_kd_pairs(args.teacher, args.pairs, n_best=1 if args.n_best is None else args.n_best,
                                    bad_lines=args.bad_lines, sources=args.sources, **common, **over)
            what = f"{res['pairs']:,} pairs from {res['sources']:,} sources"
        else:
            prompt = None if args.prompt is None else unescape(args.prompt)
            res = sample_corpus(args.teacher, num_samples=args.num_samples, prompt=prompt,
                                seed=0 if args.seed is None else args.seed, **common, **over)
            what = f"{res['samples']:,} samples ({res['bytes']:,} bytes)"
    except KeyboardInterrupt:
        print(f"{args.out} holds every batch finished so far; run the same command again to continue", file=sys.stderr)
        raise
    resumed = f", resumed after {res['resumed_from']:,}" if res["resumed_from"] else ""
    print(f"{what} in {args.out}{resumed} ({res['seconds']:.1f} s this run)", file=sys.stderr)
    return 0


def add_distill_data(sub) -> None:
    """`proselab distill-data TEACHER --pairs FILE | --num-samples N --out FILE`."""
    d = sub.add_parser("distill-data", help="sequence-level knowledge distillation: decode training sources with a "
                                            "seq2seq teacher, or sample a corpus from a language model, for a "
                                            "student to train on (resumable)")
    d.add_argument("teacher", help="the teacher's run directory")
    d.add_argument("--pairs", help="seq2seq teacher: .tsv/.jsonl pairs (or a pairs dataset) whose sources to decode")
    d.add_argument("--sources", help="seq2seq teacher: a text file of sources with no references, one a line (text "
                                     "only the teacher can turn into training pairs)")
    d.add_argument("--num-samples", type=int, metavar="N", help="language-model teacher: texts to sample")
    d.add_argument("--out", required=True, help="pairs: a .tsv or .jsonl file; samples: a .txt file. Re-running the "
                                                "same command resumes it (see OUT.progress.json)")
    d.add_argument("--overwrite", action="store_true", help="replace an --out this command did not write")
    d.add_argument("--batch-size", type=int, default=64, help="sources or samples decoded together (default 64)")
    g = d.add_argument_group("generation (defaults: the teacher's config.json; --pairs decodes greedily)")
    g.add_argument("--max-new-tokens", type=int, help="tokens per output, at most")
    g.add_argument("--num-beams", type=int, help="--pairs: beam search with this many beams (Kim & Rush use 5)")
    g.add_argument("--length-penalty", type=float, help="--pairs: beam score = log-prob / length ** this")
    g.add_argument("--n-best", type=int, help="--pairs: write the K best beams of each source (K <= --num-beams)")
    g.add_argument("--prompt", help=r"--num-samples: text every sample starts with (\n understood; default: the "
                                    "beginning-of-sequence token, or a newline)")
    g.add_argument("--seed", type=int, help="--num-samples: the corpus's seed (default 0): the same command, the "
                                            "same corpus")
    g.add_argument("--temperature", type=float, help="--num-samples: sampling temperature")
    g.add_argument("--top-k", type=int, help="--num-samples: keep the k most likely tokens")
    g.add_argument("--top-p", type=float, help="--num-samples: nucleus sampling mass")
    d.add_argument("--bad-lines", default="error", choices=["error", "skip"],
                   help="--pairs: stop at a malformed line (error), or leave it out (skip)")
    d.add_argument("--device", default="auto")
    d.set_defaults(func=cmd_distill_data)
