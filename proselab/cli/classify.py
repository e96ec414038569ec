"""Subcommands for classifiers: classify texts, and score a classifier on labelled texts
(``proselab eval RUN --labels FILE``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..zeroshot import DEFAULT_TEMPLATE, Prompting
from .common import CLIError, no_extra, positive_int, unescape


def cmd_classify(args: argparse.Namespace, extra: list[str]) -> int:
    from ..api import load

    no_extra(extra)
    if (args.text is None) == (args.file is None):
        raise CLIError("give --text TEXT (repeatable) or --file FILE (one text a line)")
    if args.file is not None:
        path = Path(args.file)
        if not path.is_file():
            raise CLIError(f"--file {path} does not exist")
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise CLIError(f"--file {path} holds no text (one text a line)")
    else:
        texts = args.text
    gen = load(args.run, device=args.device)
    results = gen.classify(texts, batch_size=args.batch_size, **zero_shot_options(args))
    for text, r in zip(texts, results):
        if args.json:
            print(json.dumps({"text": text, "label": r.label, "probs": r.probs}, ensure_ascii=False))
        else:
            print(f"{r.label}\t{r.probs[r.label]:.3f}\t{text}")
    return 0


def zero_shot_options(args: argparse.Namespace) -> dict:
    """classes, template and verbalizers for ``Generator.classify`` from --classes, --template, --verbalizer."""
    if args.classes is None:
        if args.verbalizer or args.template is not None or not args.calibrate:
            raise CLIError("--template, --verbalizer and --no-calibrate are for zero-shot classification: give "
                           "--classes too")
        return {}
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    template = unescape(args.template) if args.template is not None else DEFAULT_TEMPLATE
    verbalizers = [unescape(v) for v in args.verbalizer] if args.verbalizer else None
    return {"classes": classes, "template": template, "verbalizers": verbalizers, "calibrate": args.calibrate}


def add_zero_shot(p: argparse.ArgumentParser) -> None:
    z = p.add_argument_group("zero-shot classification with a language model run (no training)")
    z.add_argument("--classes", metavar="A,B,...", help="the class names, comma-separated; each is scored by the "
                                                       "likelihood of its verbalisation after the prompt")
    z.add_argument("--template", help="the prompt, with {text} where each text goes (default '{text}\\n'; \\n and "
                                      "\\t understood), e.g. 'Tweet: {text}\\nSentiment:'")
    z.add_argument("--verbalizer", action="append", metavar="TEXT",
                   help="what follows the prompt for each class, in --classes order (repeatable; default: the names)")
    z.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                   help="subtract each class's score after the content-free text 'N/A' (default on; Zhao et al. 2021)")


def eval_labels(args: argparse.Namespace) -> int:
    """``proselab eval RUN --labels FILE``: accuracy, macro-F1 and each label's scores."""
    from ..evaluation import evaluate_labels

    if args.report is not None and args.out is not None:
        raise CLIError("--labels --report DIR writes confusion.png and mistakes.jsonl into DIR, beside the report: "
                       "leave out --out")
    out = Path(args.report or args.out or args.run)
    options = zero_shot_options(args)
    prompting = Prompting(**options) if options else None
    res = evaluate_labels(args.run, args.labels, out_dir=None if args.report else out, batch_size=args.batch_size,
                          bad_lines=args.bad_lines, prompting=prompting, report=args.report,
                          columns=(args.text_column, args.label_column) if prompting else None)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"accuracy {res['accuracy']:.4f}  macro-F1 {res['macro_f1']:.4f}  ({res['texts']:,} texts, "
          f"{res['texts_per_sec']:,.0f} texts/s)")
    print(f"{'label':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for name, s in res["per_label"].items():
        print(f"{name[:20]:<20} {s['precision']:>9.4f} {s['recall']:>9.4f} {s['f1']:>9.4f} {s['support']:>8}")
    if res["skipped"]:
        print(f"note: {res['skipped']} rows were left out (bad rows or unknown labels)", file=sys.stderr)
    print(f"confusion matrix in {out / 'confusion.png'}; the most confident mistakes in {out / 'mistakes.jsonl'}")
    if "report" in res:
        print(f"error analysis in {res['report']} (and report.json beside it)")
    return 0


def add_classify(sub) -> None:
    """`proselab classify RUN --text|--file`."""
    c = sub.add_parser("classify", help="label texts with a classifier run, or zero-shot with a language model run "
                                        "(one line each: label, probability, text)")
    c.add_argument("run", help="a classifier run, or a language model run with --classes")
    c.add_argument("--text", action="append", help="a text to classify (repeatable)")
    c.add_argument("--file", help="a file of texts, one a line")
    c.add_argument("--json", action="store_true", help="one JSON object a line: text, label and every label's probability")
    c.add_argument("--batch-size", type=positive_int, default=64, help="texts classified together (default 64)")
    c.add_argument("--device", default="auto")
    add_zero_shot(c)
    c.set_defaults(func=cmd_classify)
