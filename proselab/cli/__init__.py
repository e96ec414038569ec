"""`proselab` / `python -m proselab`: thin subcommands over the Python API.

User mistakes (bad config, missing file, not a run directory, ...) print one line and exit
with status 2; set PROSELAB_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from . import classify, config, decoding, distill, explain, training
from .classify import cmd_classify
from .common import EXIT_INTERRUPTED, EXIT_USAGE, CLIError, UnknownArgument, subcommand_options
from .decoding import cmd_attention, cmd_chat, cmd_eval, cmd_generate, cmd_serve
from .explain import cmd_explain
from .training import cmd_data, cmd_demo, cmd_export, cmd_train

__all__ = ["CLIError", "build_parser", "cmd_attention", "cmd_chat", "cmd_classify", "cmd_data", "cmd_demo", "cmd_eval",
           "cmd_explain", "cmd_export", "cmd_generate", "cmd_serve", "cmd_train", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="proselab", description="Text generation from RNNs to GPT.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for add in (training.add_train, config.add_config, decoding.add_generate, decoding.add_chat, decoding.add_serve,
                decoding.add_eval, distill.add_distill_data, classify.add_classify, decoding.add_attention,
                explain.add_explain, training.add_export, training.add_demo, training.add_data):
        add(sub)  # in the order `proselab --help` lists them
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"proselab: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning  # one readable line, not a source location
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        try:
            return args.func(args, extra)
        except UnknownArgument as e:  # a misspelled option: name the closest one this command has
            raise e.with_hint(subcommand_options(parser, args)) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CLIError, ValueError, OSError) as e:  # OSError: a file that cannot be read or written, a full disk
        if os.environ.get("PROSELAB_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"proselab: error: {msg}", file=sys.stderr)
        return EXIT_USAGE


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
