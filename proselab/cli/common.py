"""What every subcommand shares: the one-line error, exit codes, config overrides."""

from __future__ import annotations

import re

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


def config_overrides(extra: list[str]) -> list[str]:
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


def no_extra(extra: list[str]) -> None:
    """Commands other than train and demo take no config overrides."""
    if extra:
        raise CLIError(f"unrecognized arguments: {' '.join(extra)}")


def unescape(text: str) -> str:
    """--stop '\\n\\n' means two newlines: shells make real ones awkward to type."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)
