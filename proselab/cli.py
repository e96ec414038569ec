"""`proselab` / `python -m proselab`: thin subcommands over the Python API.

User mistakes (bad config, missing file, not a run directory, ...) print one line and exit
with status 2; set PROSELAB_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


def _overrides(extra: list[str]) -> list[str]:
    """Turn ``--train.lr=3e-4`` / ``--train.lr 3e-4`` leftovers into ``train.lr=3e-4`` items."""
    out, i = [], 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or "." not in item.split("=", 1)[0]:
            raise CLIError(f"unrecognized argument '{item}' (config overrides look like --train.lr=3e-4)")
        if "=" in item:
            out.append(item[2:])
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            out.append(f"{item[2:]}={extra[i + 1]}")
            i += 1
        else:
            raise CLIError(f"override '{item}' needs a value, e.g. {item}=VALUE")
        i += 1
    return out


def _no_extra(extra: list[str]) -> None:
    """Commands other than train and demo take no config overrides."""
    if extra:
        raise CLIError(f"unrecognized arguments: {' '.join(extra)}")


def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from .training import train

    if args.config and args.config.startswith("--"):  # argparse takes "--a.b=[x, y]" (a space) for a positional
        args.config, extra = None, [args.config, *extra]
    overrides = _overrides(extra)
    if args.out:
        overrides.append(f"train.out_dir={args.out}")
    if args.data:
        overrides.append(f"data.dataset={args.data}")
    if args.resume:
        overrides += ["train.init_from=resume", f"train.out_dir={args.resume}"]
    result = train(args.config, overrides)
    _report_training(result)
    return EXIT_INTERRUPTED if result.interrupted else 0


def _report_training(result) -> None:
    if result.interrupted:
        print(f"interrupted at step {result.step}; checkpoint saved. Resume with: "
              f"proselab train --resume {result.run_dir}", file=sys.stderr)
        return
    val = f"val loss {result.val_loss:.4f} (full pass)" if result.val_loss is not None else ""
    if result.val_scores:
        val += f", greedy BLEU {result.val_scores['bleu']:.2f} chrF {result.val_scores['chrf']:.2f}"
    print(f"trained {result.step} steps, {result.tokens_per_sec:,.0f} tokens/s; {val}")
    print(f"run saved to {result.run_dir}  (loss curves: {result.run_dir / 'loss.png'})")


def _add_generation_options(g: argparse.ArgumentParser) -> None:
    """A flag for every GenerationConfig field (--top-p, --num-beams, --stop, ...), default: the run's."""
    import dataclasses

    from .config import GenerationConfig

    opts = g.add_argument_group("generation (defaults: the run's config.json)")
    comments = _field_comments(GenerationConfig)
    for f in dataclasses.fields(GenerationConfig):
        flag = "--" + f.name.replace("_", "-")
        kind, help_ = str(f.type), comments.get(f.name, f"generation.{f.name}").replace("%", "%%")
        if f.name == "stop":
            opts.add_argument(flag, action="append", metavar="TEXT",
                              help=r"a string that ends the text, not returned (repeatable; \n and \t understood)")
        elif f.name == "eos_token_id":
            opts.add_argument(flag, type=int, action="append", metavar="ID", help="end-of-sequence id (repeatable)")
        elif f.name == "early_stopping":
            opts.add_argument(flag, choices=["true", "false", "never"], help=help_)
        elif f.name == "num_return_sequences":
            opts.add_argument(flag, "--num-samples", type=int, dest=f.name, help="sequences per prompt")
        elif kind == "bool":
            opts.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            opts.add_argument(flag, type=float if "float" in kind else int, help=help_)
    opts.add_argument("--greedy", action="store_true", help="argmax decoding (= --no-do-sample)")


def _add_dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="the weights' dtype for decoding (default auto: as saved); bfloat16 is faster on CPUs "
                        "with AMX and on GPUs, and its tokens can differ from float32's")


def _field_comments(cls) -> dict[str, str]:
    """Each field's ``# comment`` in the dataclass source: the one place options are described."""
    import inspect

    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+):.*?#\s*(.+)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _unescape(text: str) -> str:
    """--stop '\\n\\n' means two newlines: shells make real ones awkward to type."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def _gen_overrides(args: argparse.Namespace) -> dict:
    import dataclasses

    from .config import GenerationConfig

    out = {}
    for f in dataclasses.fields(GenerationConfig):
        v = getattr(args, f.name, None)
        if v is None:
            continue
        if f.name == "early_stopping":
            v = v if v == "never" else v == "true"
        elif f.name == "eos_token_id" and len(v) == 1:
            v = v[0]
        elif f.name == "stop":
            v = [_unescape(x) for x in v]
        out[f.name] = v
    if args.greedy:
        out["do_sample"] = False
    return out


def cmd_generate(args: argparse.Namespace, extra: list[str]) -> int:
    from .api import load

    _no_extra(extra)
    gen = load(args.run, device=args.device, dtype=args.dtype)
    over = _gen_overrides(args)
    shown = args.prompt  # a language model's output continues the prompt; a seq2seq one stands alone
    if gen.is_seq2seq:
        if args.prompt == "\n":
            raise CLIError("this is a seq2seq run: give the source text to transform with --prompt TEXT")
        shown = ""
    if args.json:
        over.setdefault("output_scores", True)
        seqs = gen.complete(args.prompt, **over)
        completions = [{"text": g.text, "tokens": g.tokens, "finish_reason": g.finish_reason, "score": g.score,
                        "token_logprobs": g.token_logprobs} for g in seqs]
        print(json.dumps({"prompt": args.prompt, "completions": completions}, ensure_ascii=False))
        return 0
    cfg = gen.generation_config(**over)
    live = args.stream if args.stream is not None else sys.stdout.isatty()
    if live and cfg.num_beams == 1 and cfg.num_return_sequences == 1:
        sys.stdout.write(shown)
        for d in gen.stream(args.prompt, **over):
            sys.stdout.write(d.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    for i, g in enumerate(gen.complete(args.prompt, **over)):
        if i:
            print("\n" + "-" * 40)
        print(shown + g.text)
    return 0


CHAT_HELP = "type a message; /reset starts over, /quit (or Ctrl-D) leaves"


def cmd_chat(args: argparse.Namespace, extra: list[str], read=input) -> int:
    from .api import load

    _no_extra(extra)
    gen = load(args.run, device=args.device, dtype=args.dtype)
    over = _gen_overrides(args)
    if not gen.is_seq2seq:  # a seq2seq run answers the last message; a GPT must be tuned for chat
        gen.chat_prompt([{"role": "user", "content": ""}], 0)  # refuse a run that is not a chat model, up front
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict] = []
    print(CHAT_HELP, file=sys.stderr)
    while True:
        try:
            text = read("> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if text.strip() in ("/quit", "/exit"):
            return 0
        if text.strip() == "/reset":
            history = []
            print("(conversation reset)", file=sys.stderr)
            continue
        if not text.strip():
            continue
        history.append({"role": "user", "content": text})
        reply = []
        for d in gen.chat_stream(system + history, **over):
            sys.stdout.write(d.text)
            sys.stdout.flush()
            reply.append(d.text)
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(reply)})


def cmd_serve(args: argparse.Namespace, extra: list[str]) -> int:
    from .server import ServeConfig, serve

    _no_extra(extra)
    serve(ServeConfig(run=args.run, host=args.host, port=args.port, api_key=args.api_key, max_batch=args.max_batch,
                      max_queue=args.max_queue, max_prompt_tokens=args.max_prompt_tokens, max_tokens=args.max_tokens,
                      model_name=args.model_name, device=args.device, threads=args.threads, dtype=args.dtype))
    return 0


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    from .evaluation import evaluate

    _no_extra(extra)
    if (args.data is None) == (args.pairs is None):
        raise CLIError("give --data TEXT (a language model's perplexity) or --pairs FILE (a seq2seq run's "
                       "BLEU, chrF and ROUGE)")
    if args.pairs is not None:
        return _eval_pairs(args)
    res = evaluate(args.run, args.data, encoding_errors=args.encoding_errors)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"tokens {res['tokens']:,}  chars {res['chars']:,}")
    print(f"loss {res['loss']:.4f} nats/token  perplexity {res['perplexity']:.3f}")
    print(f"bits per token {res['bits_per_token']:.4f}  bits per char {res['bits_per_char']:.4f}")
    if res["unknown_tokens"]:
        print(f"note: {res['unknown_tokens']} tokens were unknown to the vocabulary (mapped to <unk>)")
    return 0


def _eval_pairs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluation import evaluate_pairs

    over = _gen_overrides(args)
    out = args.out or str(Path(args.run) / "hypotheses.txt")
    res = evaluate_pairs(args.run, args.pairs, out=out, metrics=tuple(args.metrics.split(",")),
                         batch_size=args.batch_size, **over)
    if args.json:
        print(json.dumps(res))
        return 0
    for name in ("bleu", "chrf"):
        if name in res:
            print(f"{name.upper() if name == 'bleu' else 'chrF'} {res[name]:.2f}  ({res[name + '_signature']})")
    if "rouge1" in res:
        print(f"ROUGE-1 {res['rouge1']:.2f}  ROUGE-2 {res['rouge2']:.2f}  ROUGE-L {res['rougeL']:.2f}  "
              f"({res['rouge_signature']})")
    print(f"{res['pairs']:,} pairs decoded in {res['seconds']:.1f} s ({res['sentences_per_sec']:.1f} sentences/s); "
          f"hypotheses in {out}")
    return 0


def cmd_attention(args: argparse.Namespace, extra: list[str]) -> int:
    from .api import load
    from .plots import plot_attention

    _no_extra(extra)
    gen = load(args.run, device=args.device)
    amap = gen.attention(args.src, **_gen_overrides(args))
    path = plot_attention(amap.weights, amap.src_tokens, amap.tgt_tokens, args.out,
                          title=f"{args.src[:60]} -> {amap.text[:60]}")
    print(amap.text)
    print(f"attention map ({len(amap.tgt_tokens)} generated x {len(amap.src_tokens)} source tokens) written to {path}")
    return 0


DEMO_PROMPTS = ["ROMEO:\n", "To be, or not", "KING HENRY:\n"]


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    from .api import load
    from .training import train

    if args.config and args.config.startswith("--"):  # argparse takes "--a.b=[x, y]" (a space) for a positional
        args.config, extra = None, [args.config, *extra]
    overrides = _overrides(extra) + [f"train.out_dir={args.out}", "train.overwrite=true"]
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
    from .runs import export_hf

    _no_extra(extra)
    out = export_hf(args.run, args.out)
    print(f"wrote a Hugging Face GPT-2 checkpoint to {out}; load it with "
          f"transformers.AutoModelForCausalLM.from_pretrained('{out}')")
    return 0


def cmd_data(args: argparse.Namespace, extra: list[str]) -> int:
    from .data import builtin

    _no_extra(extra)
    if args.data_cmd == "fetch":
        path = builtin.fetch(args.name, source=args.source)
        print(f"{args.name}: {path}")
        return 0
    if args.data_cmd == "reverse":
        from .data.pairs import write_reverse_task

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="proselab", description="Text generation from RNNs to GPT.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model (YAML config or preset, plus --section.field=value overrides)")
    t.add_argument("config", nargs="?", help="a YAML file or a preset name (shakespeare-char-gpt, ...)")
    t.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its last checkpoint")
    t.add_argument("--out", metavar="RUN", help="run directory to write (= --train.out_dir)")
    t.add_argument("--data", metavar="PATH", help="text file/dir or built-in dataset (= --data.dataset)")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("generate", help="generate text from a run")
    g.add_argument("run", help="run directory, or a Hugging Face GPT-2 checkpoint directory")
    g.add_argument("--prompt", default="\n", help="text to continue (default: a newline, like nanoGPT)")
    _add_generation_options(g)
    g.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="print text as it is generated (default: on in a terminal)")
    g.add_argument("--device", default="auto")
    _add_dtype(g)
    g.add_argument("--json", action="store_true",
                   help="print one JSON object: each completion's text, tokens, finish reason and scores")
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("chat", help="talk to a chat fine-tuned run in the terminal (streamed replies, /reset)")
    c.add_argument("run", help="run directory (fine-tuned on conversations) or exported checkpoint")
    c.add_argument("--system", help="a system message that starts the conversation")
    _add_generation_options(c)
    c.add_argument("--device", default="auto")
    _add_dtype(c)
    c.set_defaults(func=cmd_chat)

    s = sub.add_parser("serve", help="serve a run over HTTP: an OpenAI-compatible API and a web playground")
    s.add_argument("run", help="run directory")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only; 0.0.0.0 = all)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 (default: $PROSELAB_API_KEY)")
    s.add_argument("--max-batch", type=int, default=16, help="sequences decoded together (default 16)")
    s.add_argument("--max-queue", type=int, default=64, help="requests waiting before 429 (default 64)")
    s.add_argument("--max-prompt-tokens", type=int, help="longest prompt accepted (default: a GPT's block_size, else 1024)")
    s.add_argument("--max-tokens", type=int, help="largest max_tokens accepted (default: max(the run's, 1024))")
    s.add_argument("--model-name", help="the model id clients use (default: the run directory's name)")
    s.add_argument("--device", default="auto")
    _add_dtype(s)
    s.add_argument("--threads", type=int, default=0,
                   help="CPU threads for the model (default 0: one for a small model, whose steps are bound by "
                        "per-operation overhead, else all cores); fewer leave cores to other work")
    s.set_defaults(func=cmd_serve)

    e = sub.add_parser("eval", help="a language model's perplexity on a text, or a seq2seq run's BLEU/chrF/ROUGE on pairs")
    e.add_argument("run", help="run directory")
    e.add_argument("--data", help="text file(s) / directory / dataset name (language models)")
    e.add_argument("--pairs", help="seq2seq: .tsv or {src, tgt} .jsonl pairs, or a pair dataset like aclsum:test; "
                                   "decodes the sources (greedy unless --num-beams) and scores against the targets")
    e.add_argument("--out", help="--pairs: where to write the hypotheses (default RUN/hypotheses.txt)")
    e.add_argument("--metrics", default="bleu,chrf,rouge", help="--pairs: comma-separated bleu, chrf, rouge")
    e.add_argument("--batch-size", type=int, default=64, help="--pairs: sources decoded together (default 64)")
    e.add_argument("--encoding-errors", default="strict", choices=["strict", "replace"])
    e.add_argument("--json", action="store_true")
    _add_generation_options(e)
    e.set_defaults(func=cmd_eval)

    a = sub.add_parser("attention", help="seq2seq: draw where the model looked, as a PNG heatmap")
    a.add_argument("run", help="a seq2seq run directory (with attention)")
    a.add_argument("--src", required=True, help="the source text to transform")
    a.add_argument("--out", default="attention.png", help="the PNG to write (default attention.png)")
    _add_generation_options(a)
    a.add_argument("--device", default="auto")
    a.set_defaults(func=cmd_attention)

    x = sub.add_parser("export", help="write a gpt run as a Hugging Face GPT-2 checkpoint (transformers, vLLM, ...)")
    x.add_argument("run", help="run directory")
    x.add_argument("out", help="output directory (new or empty)")
    x.set_defaults(func=cmd_export)

    d = sub.add_parser("demo", help="train a small character GPT on Shakespeare and print samples")
    d.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    d.add_argument("--max-iters", type=int, help="optimizer steps (default from the demo preset)")
    d.set_defaults(func=cmd_demo)

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
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"proselab: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning  # one readable line, not a source location
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        return args.func(args, extra)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CLIError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
        if os.environ.get("PROSELAB_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"proselab: error: {msg}", file=sys.stderr)
        return EXIT_USAGE


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
