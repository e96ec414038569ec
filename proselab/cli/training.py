"""Subcommands that make runs and data: train, demo, export, data."""

from __future__ import annotations

import argparse
import json
import sys

from .common import EXIT_INTERRUPTED, config_overrides, no_extra, train_arguments
from .config import presets_epilog


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from ..training import train

    config, overrides = train_arguments(args, extra)
    result = train(config, overrides)
    _report_training(result)
    return EXIT_INTERRUPTED if result.interrupted else 0


def _report_training(result) -> None:
    from ..data.progress import is_main_process

    if not is_main_process():  # under torchrun every process returns a result: rank 0 reports it
        return
    if result.interrupted:
        print(f"interrupted at step {result.step}; checkpoint saved. Resume with: "
              f"proselab train --resume {result.run_dir}", file=sys.stderr)
        return
    val = f"val loss {result.val_loss:.4f} (full pass)" if result.val_loss is not None else ""
    if "bleu" in result.val_scores:
        val += f", greedy BLEU {result.val_scores['bleu']:.2f} chrF {result.val_scores['chrf']:.2f}"
    if "accuracy" in result.val_scores:
        val += f", accuracy {result.val_scores['accuracy']:.4f} macro-F1 {result.val_scores['macro_f1']:.4f}"
    print(f"trained {result.step} steps, {result.tokens_per_sec:,.0f} tokens/s; {val}")
    print(f"run saved to {result.run_dir}  (loss curves: {result.run_dir / 'loss.png'})")


DEMO_PROMPTS = ["ROMEO:\n", "To be, or not", "KING HENRY:\n"]


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    from ..api import load
    from ..training import train

    overrides = config_overrides(extra) + [f"train.out_dir={args.out}", "train.overwrite=true"]
    if args.max_iters:
        overrides.append(f"train.max_iters={args.max_iters}")
    print("proselab demo: a character-level GPT on the complete works of Shakespeare", file=sys.stderr)
    result = train("demo", overrides)
    _report_training(result)
    if result.interrupted:
        return EXIT_INTERRUPTED
    gen = load(result.run_dir)
    for i, prompt in enumerate(DEMO_PROMPTS):  # a seed per prompt: one shared seed makes samples echo each other
        print("\n" + "=" * 60)
        print(prompt + gen.generate(prompt, max_new_tokens=300, seed=i))
    print("=" * 60)
    print(f"\nnext: proselab generate {result.run_dir} --prompt 'JULIET:' --num-samples 3")
    return 0


def cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    from ..runs import export_hf

    no_extra(extra)
    out = export_hf(args.run, args.out)
    kind = json.loads((out / "config.json").read_text(encoding="utf-8")).get("model_type", "gpt2")
    names = {"gpt2": ("GPT-2", "AutoModelForCausalLM"), "marian": ("Marian", "AutoModelForSeq2SeqLM"),
             "bart": ("BART", "AutoModelForSeq2SeqLM"), "t5": ("T5", "AutoModelForSeq2SeqLM")}
    name, auto = names.get(kind, (kind, "AutoModel"))
    print(f"wrote a Hugging Face {name} checkpoint to {out}; load it with "
          f"transformers.{auto}.from_pretrained('{out}')")
    return 0


def cmd_data(args: argparse.Namespace, extra: list[str]) -> int:
    from ..data import builtin

    no_extra(extra)
    if args.data_cmd == "fetch":
        path = builtin.fetch(args.name, source=args.source)
        print(f"{args.name}: {path}")
        return 0
    if args.data_cmd == "reverse":
        from ..data.pairs import write_reverse_task

        sizes = {"train_size": args.train_size, "dev_size": args.dev_size, "test_size": args.test_size}
        paths = write_reverse_task(args.out_dir, **sizes, min_len=args.min_len, max_len=args.max_len, seed=args.seed)
        for split, path in paths.items():
            print(f"{split}: {path}")
        return 0
    rows = builtin.list_datasets()
    print(f"{'name':<16} {'kind':<6} {'splits':<15} {'cached':<7} description")
    for r in rows:
        cached = "yes" if r.get("cached") else "no"
        splits = "/".join(r.get("splits", ("train",)))
        print(f"{r['name']:<16} {r.get('kind', 'text'):<6} {splits:<15} {cached:<7} {r.get('description', '')}")
    print(f"\ncache: {builtin.cache_dir()}  (set PROSELAB_CACHE to move it)")
    print("a pairs dataset's split is chosen as NAME:SPLIT (e.g. aclsum:dev); NAME alone is its train split")
    return 0


TRAIN_EXAMPLES = """
without a preset, train uses the defaults: a small character-level GPT (4 x 128, 1,500 steps)
that trains in minutes on a laptop CPU. `proselab config [PRESET] [overrides]` prints the
resolved config, every field with its comment; any field is an override: --section.field=value.

examples:
  proselab train --data my_corpus.txt --out runs/mine
  proselab train shakespeare-char-gpt --data books/ --out runs/books
  proselab train my_config.yaml --train.lr=3e-4 --model.n_layer=8
  proselab train --resume runs/mine --train.max_iters=3000
"""


def add_train(sub) -> None:
    """`proselab train`: a config or preset plus overrides; --help lists the presets."""
    t = sub.add_parser("train", help="train a model (YAML config or preset, plus --section.field=value overrides)",
                       epilog=presets_epilog("presets (in proselab/configs/):") + "\n" + TRAIN_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("config", nargs="?", help="a YAML file or a preset name (listed below; default: none)")
    t.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its last checkpoint")
    t.add_argument("--out", metavar="RUN", help="run directory to write (= --train.out_dir)")
    t.add_argument("--data", metavar="PATH", help="text file/dir or built-in dataset (= --data.dataset)")
    t.set_defaults(func=cmd_train)


def add_export(sub) -> None:
    """`proselab export RUN OUT`."""
    x = sub.add_parser("export", help="write a run as a Hugging Face checkpoint (transformers, vLLM, ...): a gpt run as "
                          "GPT-2, a seq2seq run fine-tuned from Marian, BART or T5 in that layout")
    x.add_argument("run", help="run directory")
    x.add_argument("out", help="output directory (new or empty)")
    x.set_defaults(func=cmd_export)


def add_demo(sub) -> None:
    """`proselab demo`."""
    d = sub.add_parser("demo", help="train a small character GPT on Shakespeare and print samples")
    d.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    d.add_argument("--max-iters", type=int, help="optimizer steps (default from the demo preset)")
    d.set_defaults(func=cmd_demo)


def add_data(sub) -> None:
    """`proselab data list|fetch|reverse`."""
    da = sub.add_parser("data", help="built-in datasets: list, fetch; the synthetic reverse task")
    dsub = da.add_subparsers(dest="data_cmd", required=True, metavar="ACTION")
    dsub.add_parser("list", help="list built-in datasets and whether they are cached")
    f = dsub.add_parser("fetch", help="download (or copy in) a built-in dataset")
    f.add_argument("name")
    f.add_argument("--from", dest="source", metavar="PATH", help="a local file to use as this dataset")
    r = dsub.add_parser("reverse", help="write the synthetic reverse task (seq2seq pairs) as train/dev/test.tsv")
    r.add_argument("out_dir", metavar="OUT_DIR", help="directory to write train.tsv, dev.tsv and test.tsv into")
    r.add_argument("--train-size", type=int, default=50000, metavar="N", help="training pairs (default 50000)")
    r.add_argument("--dev-size", type=int, default=1000, metavar="N", help="dev pairs (default 1000)")
    r.add_argument("--test-size", type=int, default=1000, metavar="N", help="test pairs (default 1000)")
    r.add_argument("--min-len", type=int, default=1, metavar="N", help="fewest tokens in a sequence (default 1)")
    r.add_argument("--max-len", type=int, default=25, metavar="N", help="most tokens in a sequence (default 25)")
    r.add_argument("--seed", type=int, default=42, metavar="N", help="the same seed writes the same files (default 42)")
    da.set_defaults(func=cmd_data)
