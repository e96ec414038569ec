"""Subcommands that decode a run: generate, chat, serve, eval, attention; and the generation flags
they share (one per GenerationConfig field)."""

from __future__ import annotations

import argparse
import json
import re
import sys

from .classify import add_zero_shot, eval_labels
from .common import CLIError, no_extra, positive_int, unescape


def _add_generation_options(g: argparse.ArgumentParser) -> None:
    """A flag for every GenerationConfig field (--top-p, --num-beams, --stop, ...), default: the run's."""
    import dataclasses

    from ..config import GenerationConfig

    opts = g.add_argument_group("generation (defaults: the run's config.json)")
    comments = _field_comments(GenerationConfig)
    for f in dataclasses.fields(GenerationConfig):
        flag = "--" + f.name.replace("_", "-")
        kind, help_ = str(f.type), comments.get(f.name, f"generation.{f.name}").replace("%", "%%")
        if f.name == "temperature":
            help_ += "; 0 = greedy, as in OpenAI's API"
        if f.name == "stop":
            opts.add_argument(flag, action="append", metavar="TEXT",
                              help=r"a string that ends the text, not returned (repeatable; \n and \t understood)")
        elif f.name == "eos_token_id":
            opts.add_argument(flag, type=int, action="append", metavar="ID", help="end-of-sequence id (repeatable)")
        elif f.name == "suppress_tokens":
            opts.add_argument(flag, type=int, action="append", metavar="ID", help="a token id never generated (repeatable)")
        elif f.name == "logit_bias":
            opts.add_argument(flag, action="append", metavar="ID=BIAS",
                              help="add BIAS (-100 to 100) to the logit of token ID (repeatable; OpenAI's logit_bias)")
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


def _add_draft(p: argparse.ArgumentParser) -> None:
    p.add_argument("--draft", metavar="RUN", help="speculative decoding: a smaller run of the same kind and "
                   "vocabulary (a GPT, or a seq2seq Transformer; a distilled student) proposes tokens the run checks "
                   "several at a time; greedy output is the run's own (in float32), samples keep the run's "
                   "distribution")
    p.add_argument("--num-draft-tokens", type=int, default=5, metavar="N",
                   help="the draft's tokens a round to start with (default 5; adapted as it goes)")


def _field_comments(cls) -> dict[str, str]:
    """Each field's ``# comment`` in the dataclass source: the one place options are described."""
    import inspect

    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+):.*?#\s*(.+)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _gen_overrides(args: argparse.Namespace) -> dict:
    import dataclasses

    from ..config import GenerationConfig
    from ..config.values import coerce

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
            v = [unescape(x) for x in v]
        elif f.name == "logit_bias":
            v = coerce("--logit-bias", v, dict[int, float])
        out[f.name] = v
    if args.greedy:
        out["do_sample"] = False
    return out


def cmd_generate(args: argparse.Namespace, extra: list[str]) -> int:
    from ..api import load
    from ..decoding import json_safe

    no_extra(extra)
    gen = load(args.run, device=args.device, dtype=args.dtype, draft=args.draft, num_draft_tokens=args.num_draft_tokens)
    over = _gen_overrides(args)
    if args.max_length is not None:
        over["max_length"] = args.max_length
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
        print(json.dumps(json_safe({"prompt": args.prompt, "completions": completions}), ensure_ascii=False))
        return 0
    cfg = gen.generation_config(**{k: v for k, v in over.items() if k != "max_length"})  # needs the prompt
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


CHAT_HELP = "type a message and Enter; /help lists the commands; Ctrl-C stops a reply; Ctrl-D or /quit leaves"
CHAT_COMMANDS = """commands:
  /help          this list
  /reset         forget the conversation and start over (the --system message stays)
  /quit, /exit   leave (so do Ctrl-D, and Ctrl-C at the prompt)
Ctrl-C during a reply stops it; the text so far stays in the conversation as the reply.
A message that starts with / is a command; start it with // to send one / instead."""


NOT_UTF8 = re.compile("[\ud800-\udfff]")  # a lone surrogate: what surrogateescape reads a byte that is not UTF-8 as


def cmd_chat(args: argparse.Namespace, extra: list[str], read=input) -> int:
    from ..api import load

    no_extra(extra)
    gen = load(args.run, device=args.device, dtype=args.dtype, draft=args.draft, num_draft_tokens=args.num_draft_tokens)
    over = _gen_overrides(args)
    if not gen.is_seq2seq:  # a seq2seq run answers the last message; a GPT must be tuned for chat
        gen.chat_prompt([{"role": "user", "content": ""}], 0)  # refuse a run that is not a chat model, up front
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict] = []
    if read is input and hasattr(sys.stdin, "reconfigure"):
        # a byte that is not UTF-8 becomes a lone surrogate (skipped below), not a decode error
        # that would end the chat and lose the lines read with it
        sys.stdin.reconfigure(errors="surrogateescape")
    print(CHAT_HELP, file=sys.stderr)
    while True:
        try:
            text = read("> ")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D, or Ctrl-C at the prompt: leave, as a shell does
            print(file=sys.stderr)
            return 0
        if NOT_UTF8.search(text):
            print("(not sent: the message is not UTF-8 text; set the terminal or the input to UTF-8)", file=sys.stderr)
            continue
        command = _chat_command(text)
        if command == "/quit":
            return 0
        if command == "/reset":
            history = []
            print("(conversation reset)", file=sys.stderr)
        if command is not None or not text.strip():
            continue
        if text.lstrip().startswith("//"):
            text = text.lstrip()[1:]
        history.append({"role": "user", "content": text})
        reply, stopped = _chat_reply(gen, system + history, over)
        if stopped and not reply:  # stopped before a word: as if the message had not been sent
            history.pop()
        else:
            history.append({"role": "assistant", "content": reply})


def _chat_command(text: str) -> str | None:
    """The command ``text`` is (/quit, /reset; /help and unknown ones are answered here), or
    None for a message. An unknown command is not sent to the model: it is almost always a typo."""
    words = text.split()
    if not words or not words[0].startswith("/") or words[0].startswith("//"):
        return None
    name = words[0].lower()
    if name in ("/quit", "/exit"):
        return "/quit"
    if name == "/help":
        print(CHAT_COMMANDS, file=sys.stderr)
    elif name != "/reset":
        print(f"unknown command {name} (not sent); /help lists the commands, and // starts a message with /",
              file=sys.stderr)
    return name


def _chat_reply(gen, messages: list[dict], over: dict) -> tuple[str, bool]:
    """Stream the reply to ``messages``; Ctrl-C stops it. Returns the text shown and whether it was stopped."""
    parts: list[str] = []
    deltas = gen.chat_stream(messages, **over)
    try:
        for d in deltas:
            sys.stdout.write(d.text)
            sys.stdout.flush()
            parts.append(d.text)
    except KeyboardInterrupt:
        deltas.close()  # the engine's generator, wherever the interrupt left it
        sys.stdout.write("\n")
        print("(reply stopped)", file=sys.stderr)
        return "".join(parts), True
    sys.stdout.write("\n")
    return "".join(parts), False


def cmd_serve(args: argparse.Namespace, extra: list[str]) -> int:
    from ..server import ServeConfig, serve

    no_extra(extra)
    serve(ServeConfig(run=args.run, host=args.host, port=args.port, api_key=args.api_key, max_batch=args.max_batch,
                      max_queue=args.max_queue, max_prompt_tokens=args.max_prompt_tokens, max_tokens=args.max_tokens,
                      model_name=args.model_name, device=args.device, threads=args.threads, dtype=args.dtype,
                      timeout_keep_alive=args.timeout_keep_alive, timeout_header=args.timeout_header,
                      timeout_body=args.timeout_body, limit_concurrency=args.limit_concurrency, draft=args.draft,
                      num_draft_tokens=args.num_draft_tokens))
    return 0


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    from ..evaluation import evaluate

    no_extra(extra)
    if sum(x is not None for x in (args.data, args.pairs, args.labels)) != 1:
        raise CLIError("give --data TEXT (a language model's perplexity), --pairs FILE (a seq2seq run's "
                       "BLEU, chrF and ROUGE) or --labels FILE (a classifier's accuracy and macro-F1)")
    if args.pairs is not None:
        return _eval_pairs(args)
    if args.labels is not None:
        return eval_labels(args)
    res = evaluate(args.run, args.data, encoding_errors=args.encoding_errors, report=args.report)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"tokens {res['tokens']:,}  chars {res['chars']:,}")
    print(f"loss {res['loss']:.4f} nats/token  perplexity {res['perplexity']:.3f}")
    print(f"bits per token {res['bits_per_token']:.4f}  bits per char {res['bits_per_char']:.4f}")
    if res["unknown_tokens"]:
        print(f"note: {res['unknown_tokens']} tokens were unknown to the vocabulary (mapped to <unk>)")
    _said_report(res)
    return 0


def _said_report(res: dict) -> None:
    if "report" in res:
        print(f"error analysis in {res['report']} (and report.json beside it)")


def _eval_pairs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..evaluation import evaluate_pairs
    from ..interop.hub import is_hub_id

    over = _gen_overrides(args)
    # beside the run; a model id's snapshot is the Hugging Face cache's, not a place for outputs
    out = args.out or ("hypotheses.txt" if is_hub_id(args.run) else str(Path(args.run) / "hypotheses.txt"))
    res = evaluate_pairs(args.run, args.pairs, out=out, metrics=tuple(args.metrics.split(",")),
                         batch_size=args.batch_size, report=args.report, **over)
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
    _said_report(res)
    return 0


def cmd_attention(args: argparse.Namespace, extra: list[str]) -> int:
    from ..api import load
    from ..plots import plot_attention, plot_attention_grid

    no_extra(extra)
    gen = load(args.run, device=args.device)
    amap = gen.attention(args.src, **_gen_overrides(args))
    if amap.layers is not None:  # a GPT: every layer and head, over the text itself
        path = plot_attention_grid(amap.layers, amap.tgt_tokens, amap.src_tokens, args.out, title=args.src[:60])
        print(f"attention of {amap.layers.size(0)} layers x {amap.layers.size(1)} heads over {len(amap.src_tokens)} "
              f"tokens written to {path}")
        return 0
    path = plot_attention(amap.weights, amap.src_tokens, amap.tgt_tokens, args.out,
                          title=f"{args.src[:60]} -> {amap.text[:60]}")
    print(amap.text)
    print(f"attention map ({len(amap.tgt_tokens)} generated x {len(amap.src_tokens)} source tokens) written to {path}")
    return 0


def add_generate(sub) -> None:
    """`proselab generate RUN`."""
    g = sub.add_parser("generate", help="generate text from a run")
    g.add_argument("run", help="run directory, or a Hugging Face GPT-2 checkpoint directory")
    g.add_argument("--prompt", default="\n", help="text to continue (default: a newline, like nanoGPT)")
    _add_generation_options(g)
    g.add_argument("--max-length", type=int, metavar="N",
                   help="instead of --max-new-tokens, transformers' max_length: the prompt's tokens plus the new ones "
                        "(seq2seq: the output's, counting its start token)")
    g.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="print text as it is generated (default: on in a terminal)")
    g.add_argument("--device", default="auto")
    _add_dtype(g)
    _add_draft(g)
    g.add_argument("--json", action="store_true",
                   help="print one JSON object: each completion's text, tokens, finish reason and scores")
    g.set_defaults(func=cmd_generate)


def add_chat(sub) -> None:
    """`proselab chat RUN`."""
    c = sub.add_parser("chat", help="talk to a chat fine-tuned run in the terminal (streamed replies; /help "
                                       "lists the commands)")
    c.add_argument("run", help="run directory (fine-tuned on conversations) or exported checkpoint")
    c.add_argument("--system", help="a system message that starts the conversation")
    _add_generation_options(c)
    c.add_argument("--device", default="auto")
    _add_dtype(c)
    _add_draft(c)
    c.set_defaults(func=cmd_chat)


def add_serve(sub) -> None:
    """`proselab serve RUN`."""
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
    s.add_argument("--timeout-keep-alive", type=float, default=5.0, metavar="SECONDS",
                   help="close a connection idle this long after a response (default 5)")
    s.add_argument("--timeout-header", type=float, default=10.0, metavar="SECONDS",
                   help="close a connection that has not sent a whole request line and headers this long after it "
                        "opened or began its next request (default 10)")
    s.add_argument("--timeout-body", type=float, default=30.0, metavar="SECONDS",
                   help="answer 408 to a request whose body has not all arrived this long after its headers "
                        "(default 30)")
    s.add_argument("--limit-concurrency", type=int, default=256, metavar="N",
                   help="connections served at once; a request on another one gets 503 (default 256)")
    _add_draft(s)
    s.set_defaults(func=cmd_serve)


def add_eval(sub) -> None:
    """`proselab eval RUN --data|--pairs`."""
    e = sub.add_parser("eval", help="a language model's perplexity on a text, a seq2seq run's BLEU/chrF/ROUGE on "
                                    "pairs, or a classifier's accuracy/macro-F1 on labelled texts")
    e.add_argument("run", help="run directory")
    e.add_argument("--data", help="text file(s) / directory / dataset name (language models)")
    e.add_argument("--pairs", help="seq2seq: .tsv or {src, tgt} .jsonl pairs, or a pair dataset like aclsum:test; "
                                   "decodes the sources (greedy unless --num-beams) and scores against the targets")
    e.add_argument("--labels", help="classifiers: .csv/.tsv/.jsonl labelled texts, or a labelled dataset like "
                                    "tweets-sentiment:test; writes confusion.png and mistakes.jsonl")
    e.add_argument("--out", help="--pairs: where to write the hypotheses (default RUN/hypotheses.txt); --labels: "
                                 "the directory for confusion.png and mistakes.jsonl (default RUN)")
    e.add_argument("--metrics", default="bleu,chrf,rouge", help="--pairs: comma-separated bleu, chrf, rouge")
    e.add_argument("--batch-size", type=positive_int, default=64, help="--pairs, --labels: sources or texts at once (default 64)")
    e.add_argument("--bad-lines", default="error", choices=["error", "skip"],
                   help="--labels: stop at a bad row or an unknown label (error), or leave it out (skip)")
    e.add_argument("--text-column", default="text", help="--labels with --classes: the file's text column")
    e.add_argument("--label-column", default="label", help="--labels with --classes: the file's label column")
    add_zero_shot(e)
    e.add_argument("--report", metavar="DIR",
                   help="write an error analysis there as report.html (plots beside it) and report.json: --pairs: "
                        "the worst segments by chrF, BLEU by source length, hallucination signals; --data: the "
                        "highest-loss passages; --labels: the confusion matrix and the surest mistakes")
    e.add_argument("--encoding-errors", default="strict", choices=["strict", "replace"])
    e.add_argument("--json", action="store_true")
    _add_generation_options(e)
    e.set_defaults(func=cmd_eval)


def add_attention(sub) -> None:
    """`proselab attention RUN --src TEXT`."""
    a = sub.add_parser("attention", help="draw where the model looked, as a PNG: a seq2seq run's attention over "
                                         "the source, a gpt run's self-attention per layer and head")
    a.add_argument("run", help="a seq2seq run directory (with attention), or a gpt run")
    a.add_argument("--src", "--text", dest="src", required=True,
                   help="seq2seq: the source text to transform; gpt: the text to read")
    a.add_argument("--out", default="attention.png", help="the PNG to write (default attention.png)")
    _add_generation_options(a)
    a.add_argument("--device", default="auto")
    a.set_defaults(func=cmd_attention)
