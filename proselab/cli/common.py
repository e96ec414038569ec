"""What every subcommand shares: the one-line error, exit codes, config overrides, and the
"did you mean" for an option that does not exist."""

from __future__ import annotations

import argparse
import difflib
import re

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


class UnknownArgument(CLIError):
    """An argument the command has no option for. ``main`` knows the command's options and
    turns this into an error naming the closest one (``with_hint``)."""

    def __init__(self, arg: str, otherwise: str = "", candidates: list[str] | None = None):
        self.arg = arg  # the first unrecognized argument, as typed
        self.otherwise = otherwise  # what to say when no option is close
        self.candidates = candidates or []  # names the command takes besides its options (config keys)
        super().__init__(f"unrecognized argument '{arg}'{otherwise}")

    def with_hint(self, options: list[str]) -> CLIError:
        """The one-line error, with the closest of ``options`` and the candidates when one is close."""
        close = closest_option(self.arg, options + self.candidates)
        return CLIError(f"unrecognized argument '{self.arg}'" + (f"; did you mean '{close}'?" if close else self.otherwise))


# other tools' names for proselab's options (OpenAI's max_tokens, transformers' max_length)
SYNONYMS = {"max-tokens": "max-new-tokens", "max-length": "max-new-tokens", "n": "num-samples"}


def _normal(option: str) -> str:
    # --top_p, --Top-P and -top-p all mean --top-p: argparse's spelling is dashes, lower case
    return option.split("=", 1)[0].lstrip("-").replace("_", "-").lower()


def closest_option(arg: str, options: list[str]) -> str | None:
    """The option in ``options`` that ``arg`` most likely misspells (difflib), or None.

    Underscores and dashes are the same letter here (``--max_new_tokens`` is
    ``--max-new-tokens``), and a dotted config key also matches by its field name alone
    (``--max_iters`` is ``--train.max_iters``).
    """
    if not arg.startswith("-") or not options:
        return None  # a stray word is not a misspelled option
    word = _normal(arg)
    by_name = {_normal(o): o for o in options}
    by_field = {n.rsplit(".", 1)[-1]: o for n, o in by_name.items() if "." in n}
    for table in (by_name, by_field):
        if word in table:
            return table[word]
    if SYNONYMS.get(word) in by_name:
        return by_name[SYNONYMS[word]]
    for table in (by_name, by_field):
        match = difflib.get_close_matches(word, list(table), n=1, cutoff=0.6)
        if match:
            return table[match[0]]
    return None


def subcommand_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Every option string of the (sub)command ``args`` was parsed by, e.g. ``proselab data reverse``'s.

    argparse keeps a parser's actions and its subcommands' parsers in ``_actions``; it has no
    public accessor for them.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return subcommand_options(chosen, args)
    return [s for action in parser._actions for s in action.option_strings if s.startswith("--")]


def config_overrides(extra: list[str]) -> list[str]:
    """Turn ``--train.lr=3e-4`` / ``--train.lr 3e-4`` leftovers into ``train.lr=3e-4`` items."""
    out, i = [], 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or "." not in item.split("=", 1)[0]:
            from ..config import all_keys

            raise UnknownArgument(item, " (config overrides look like --train.lr=3e-4)",
                                  candidates=["--" + k for k in all_keys()])
        if "=" in item:
            out.append(item[2:])
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            out.append(f"{item[2:]}={extra[i + 1]}")
            i += 1
        else:
            raise CLIError(f"override '{item}' needs a value, e.g. {item}=VALUE")
        i += 1
    return out


def train_arguments(args: argparse.Namespace, extra: list[str]) -> tuple[str | None, list[str]]:
    """The config (preset or YAML) and dotted overrides of a `train`-style command line:
    --out, --data and --resume as their config keys, after the ``--section.field`` ones."""
    config = args.config
    if config and config.startswith("--"):  # argparse takes "--a.b=[x, y]" (a space) for a positional
        config, extra = None, [config, *extra]
    overrides = config_overrides(extra)
    if args.out:
        overrides.append(f"train.out_dir={args.out}")
    if args.data:
        overrides.append(f"data.dataset={args.data}")
    if args.resume:
        overrides += ["train.init_from=resume", f"train.out_dir={args.resume}"]
    return config, overrides


def no_extra(extra: list[str]) -> None:
    """Commands other than train and demo take no config overrides."""
    if extra:
        first = next((e for e in extra if e.startswith("-")), extra[0])  # `--top_p 0.9`: the option, not its value
        raise UnknownArgument(first, " (--help lists the options)")


def unescape(text: str) -> str:
    """--stop '\\n\\n' means two newlines: shells make real ones awkward to type."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def positive_int(text: str) -> int:
    """An argparse type for counts that must be >= 1 (a batch size of 0 failed deep in range())."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
