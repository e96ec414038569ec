"""`proselab config`: the config `proselab train` would use, as YAML with every field explained."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import textwrap
import warnings
from pathlib import Path
from typing import Any

import yaml

from ..config import SECTIONS, Config, all_keys, describe_presets, explicit_keys, field_docs, load_config, section_doc
from ..config.checks import unused_options
from .common import train_arguments

COMMENT_COLUMN = 40  # comments start here, or two spaces after a longer line


def cmd_config(args: argparse.Namespace, extra: list[str]) -> int:
    config, overrides = train_arguments(args, extra)  # a train command line works here as it is
    source = " ".join([config or "(no preset)", *(f"--{o}" for o in overrides)])
    print(render_config(resolve(config, overrides), source=source), end="")
    return 0


def resolve(config: str | None, overrides: list[str]) -> Config:
    """What `proselab train` resolves: fine-tuning and resuming read a run (and import torch), so
    only they go through the training module."""
    cfg = load_config(config, overrides)
    if cfg.train.init_from == "scratch":
        return cfg
    if cfg.train.init_from != "resume" and not Path(cfg.train.init_from).expanduser().is_dir():
        # a recipe's later step (tweets-sentiment-gpt) names a run that an earlier step writes; a
        # Hugging Face model id is not downloaded just to show a config
        warnings.warn(f"train.init_from '{cfg.train.init_from}' is not a local directory (yet): shown without what "
                      "fine-tuning takes from it (architecture, tokenizer, learning rate)", stacklevel=2)
        return cfg
    from ..training import resolve_config

    return resolve_config(config, overrides)


def render_config(cfg: Config, source: str = "(no preset)") -> str:
    """``cfg`` as YAML that `proselab train FILE` reads back, each field with its comment.

    Fields the model does not read (an rnn's cell for a gpt) that nothing set are written
    commented out: read back, they would count as set, and training warns about each option
    set for a model that ignores it.
    """
    source = source.replace("\r", "\\r").replace("\n", "\\n")  # it goes on one comment line
    lines = [f"# proselab config {source}: the resolved config. Train with it:",
             "#   proselab train THIS.yaml [--section.field=value ...]"]
    unread = _unread(cfg)
    if unread:
        lines.append("# A line like '# name: value' is a field this model does not read; uncomment it to set it.")
    for section in SECTIONS:
        doc = section_doc(section)
        lines += ["", f"{section}:" + (f"  # {doc}" if doc else "")]
        lines += _section_lines(section, getattr(cfg, section), unread)
    return "\n".join(lines) + "\n"


def _unread(cfg: Config) -> set[str]:
    """The dotted keys that nothing set and that ``cfg``'s model does not read."""
    explicit = explicit_keys(cfg)
    return {key for key in all_keys() if key not in explicit and unused_options(cfg, {key})}


def _section_lines(section: str, values: Any, unread: set[str]) -> list[str]:
    docs = field_docs(section)
    out = []
    for f in dataclasses.fields(values):
        doc = docs.get(f.name)
        out += [f"  # {h}" for h in (doc.heading if doc else ())]
        line = f"{f.name}: {_yaml_value(getattr(values, f.name))}"
        line = f"  # {line}" if f"{section}.{f.name}" in unread else f"  {line}"
        if doc and doc.comment:
            line = f"{line.ljust(COMMENT_COLUMN - 2)}  # {doc.comment}"
        out.append(line)
    return out


class _OneLineDumper(yaml.SafeDumper):
    """Writes text with line breaks double-quoted with escapes ("\\n"), so every value fits on its
    field's line beside the comment (generation.stop often holds newlines)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    breaks = any(c in value for c in "\n\r\x85\u2028\u2029")  # what YAML counts as line breaks
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if breaks else None)


_OneLineDumper.add_representer(str, _represent_str)


def _yaml_value(value: Any) -> str:
    """One value as YAML on one line: a list in flow style, text quoted only where YAML needs it."""
    text = yaml.dump([value], Dumper=_OneLineDumper, default_flow_style=True, allow_unicode=True, width=1 << 30)
    assert text.count("\n") == 1, f"{value!r} took more than one line of YAML"
    return text.strip()[1:-1]  # the flow list [value] around it


def presets_epilog(intro: str) -> str:
    """Every preset with its one-line description, wrapped to the terminal, for a command's --help."""
    width = max(60, shutil.get_terminal_size().columns - 2)
    presets = describe_presets()
    name_width = max(map(len, presets)) + 2
    lines = [intro]
    for name, description in presets.items():
        wrapped = textwrap.wrap(description or "(no description)", width - 2 - name_width, break_on_hyphens=False)
        lines.append(f"  {name.ljust(name_width)}{wrapped[0]}")
        lines += [" " * (2 + name_width) + rest for rest in wrapped[1:]]
    return "\n".join(lines)


def add_config(sub) -> None:
    """`proselab config [PRESET_OR_YAML] [--section.field=value ...]`."""
    epilog = presets_epilog("presets (in proselab/configs/):") + textwrap.dedent("""

        examples:
          proselab config                                   # the defaults: what `proselab train --data FILE` uses
          proselab config demo --train.max_iters=500 > my.yaml && proselab train my.yaml
          proselab config --data my_corpus.txt --model.n_layer=6      # the flags of `proselab train` work here
        """)
    c = sub.add_parser("config", help="print the resolved config (defaults, a preset or a YAML file, plus "
                       "overrides) as YAML with every field explained",
                       description="Print the config `proselab train` would use with the same arguments\n"
                       "(--section.field=value overrides included) as YAML, with a comment on every field.\n"
                       "The output is a config file: save it, edit it, train with it.",
                       epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("config", nargs="?", help="a YAML file or a preset name (default: the built-in defaults)")
    c.add_argument("--resume", metavar="RUN", help="show the config resuming RUN would use")
    c.add_argument("--out", metavar="RUN", help="= --train.out_dir, as for train")
    c.add_argument("--data", metavar="PATH", help="= --data.dataset, as for train")
    c.set_defaults(func=cmd_config)
