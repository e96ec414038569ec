"""From a ``data.dataset`` spec to files: the one resolver, and the one format detection.

A spec is an item or a list of items; an item is a built-in dataset (``NAME``, or
``NAME:SPLIT`` for one of its splits), a file, or a directory (its files of the kind's
suffixes, recursively, sorted). Each reader asks ``source_files(spec, kind)`` for its files;
``data_format`` picks the reader when ``data.format`` is auto.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from . import builtin
from .files import DatasetError, dir_files, first_json_line, items, not_found


@dataclass(frozen=True)
class _Kind:
    """How one reader's files are found, and what its errors say."""

    empty: str  # data.dataset is empty
    suffixes: tuple[str, ...]  # the files of a directory it reads
    in_dir: str  # a directory has none of them
    other_kind: str  # a built-in of another kind: {item}, {kind}, {fmt}, {names}
    what: str  # what a built-in of this kind is called ("built-in pairs dataset")
    bad_file: str = ""  # a file of another suffix: {path}; "" = any file is read as this kind


KINDS = {
    "text": _Kind(
        empty="data.dataset is empty; name a built-in dataset or .txt files",
        suffixes=(".txt",), in_dir="data.dataset takes .txt files or folders of them",
        other_kind="'{item}' is {kind} ({fmt}), not a text corpus; for language modelling name a text dataset "
                   "or .txt files",
        what="built-in dataset",
    ),
    "chat": _Kind(
        empty="data.dataset is empty; name a built-in chat dataset or .jsonl files",
        suffixes=(".jsonl",), in_dir="supervised fine-tuning reads .jsonl examples",
        other_kind="'{item}' is {kind}, not a chat dataset; supervised fine-tuning reads .jsonl examples or a chat "
                   "dataset ({fmt} trains on '{item}' instead)",
        what="built-in chat dataset",
        bad_file="'{path}' is not a .jsonl file; supervised fine-tuning reads .jsonl files of examples "
                 "(one JSON object per line); plain text is for language modelling (data.format=text)",
    ),
    "pairs": _Kind(
        empty="data.dataset is empty; name a built-in pairs dataset or .tsv/.jsonl files",
        suffixes=(".tsv", ".jsonl"), in_dir="sentence pairs are read from those",
        other_kind="'{item}' is {kind} ({fmt}), not sentence pairs; seq2seq training reads .tsv/.jsonl pairs or a "
                   "pairs dataset ({names})",
        what="built-in pairs dataset",
        bad_file="'{path}' is neither a .tsv nor a .jsonl file; sentence pairs are 'source<TAB>target' .tsv lines "
                 'or {{"src": str, "tgt": str}} .jsonl lines',
    ),
    "labels": _Kind(
        empty="data.dataset is empty; name a built-in labelled dataset or .csv/.tsv/.jsonl files",
        suffixes=(".csv", ".tsv", ".jsonl"), in_dir="labelled texts are read from those",
        other_kind="'{item}' is {kind} ({fmt}), not labelled texts; classifiers read .csv/.tsv/.jsonl files with a "
                   "text and a label column, or a labelled dataset ({names})",
        what="built-in labelled dataset",
        bad_file="'{path}' is not a .csv, .tsv or .jsonl file; labelled texts are rows with a text and a label "
                 "column (data.text_column, data.label_column)",
    ),
}


def _builtin_file(item: str, kind: str) -> Path:
    name, _, split = item.partition(":")
    info = builtin.DATASETS[name]
    if info.kind != kind:
        what, fmt = builtin.KINDS[info.kind]
        raise DatasetError(KINDS[kind].other_kind.format(item=name, kind=what, fmt=fmt,
                                                         names=", ".join(builtin.names(kind))))
    split = split or "train"
    if split not in info.splits:
        raise DatasetError(f"'{name}' has no split '{split}'; its splits: {', '.join(info.splits)} (as {name}:SPLIT)")
    builtin.fetch(name)
    return info.path(split)


def _known(kind: str) -> list[str]:
    """The built-in names of a kind, with NAME:SPLIT for datasets of several splits."""
    out = builtin.names(kind)
    for name in builtin.names(kind):
        splits = builtin.DATASETS[name].splits
        out += [f"{name}:{split}" for split in splits] if len(splits) > 1 else []
    return out


def source_files(spec: str | Path | list[str], kind: str) -> list[tuple[str, Path]]:
    """The ``(name, path)`` of every file a spec names, for a reader of ``kind`` (text, chat, pairs).

    A built-in dataset is fetched first and named by its name; a file by its path.

    Raises:
        DatasetError: the spec is empty, an item is neither a built-in of this kind nor an
            existing file or directory (with the closest name), or a file has the wrong suffix.
    """
    k = KINDS[kind]
    found = items(spec)
    if not found:
        raise DatasetError(k.empty)
    files: list[tuple[str, Path]] = []
    for item in found:
        if item.partition(":")[0] in builtin.DATASETS:
            files.append((item, _builtin_file(item, kind)))
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            files += [(str(p), p) for p in dir_files(path, k.suffixes, k.in_dir)]
        elif path.is_file():
            if k.bad_file and path.suffix.lower() not in k.suffixes:
                raise DatasetError(k.bad_file.format(path=path))
            files.append((str(path), path))
        else:
            raise not_found(item, _known(kind), k.what)
    return files


# --- format detection (data.format=auto)


def _is_pair_jsonl(path: Path) -> bool:
    """Whether the first non-blank line of a .jsonl file is a JSON object with a "src" key."""
    obj = first_json_line(path)
    return isinstance(obj, dict) and "src" in obj


def _is_pair_item(item: str) -> bool:
    name = item.partition(":")[0]
    if name in builtin.DATASETS:  # an unknown split still counts: load_pairs then lists the splits
        return builtin.DATASETS[name].kind == "pairs"
    path = Path(item).expanduser()
    if path.is_dir():
        return any(p.suffix.lower() == ".tsv" or (p.suffix.lower() == ".jsonl" and _is_pair_jsonl(p))
                   for p in path.rglob("*") if p.is_file())
    suffix = path.suffix.lower()
    return path.is_file() and (suffix == ".tsv" or suffix == ".jsonl" and _is_pair_jsonl(path))


def _is_example_item(item: str) -> bool:
    name = item.partition(":")[0]
    if name in builtin.DATASETS:
        return builtin.DATASETS[name].kind == "chat"
    path = Path(item).expanduser()
    if path.is_dir():
        return any(path.rglob("*.jsonl")) and not any(path.rglob("*.txt"))
    return path.is_file() and path.suffix.lower() == ".jsonl"


def is_pair_spec(spec: str | Path | list[str]) -> bool:
    """Whether ``spec`` names sentence pairs: every item is a built-in pairs dataset (with an
    optional ``:split``), an existing ``.tsv`` file, a ``.jsonl`` file whose first non-blank line
    is a JSON object with a ``"src"`` key (fine-tuning examples have ``"prompt"`` or
    ``"messages"``), or a directory holding ``.tsv`` files or such ``.jsonl`` files."""
    found = items(spec)
    return bool(found) and all(_is_pair_item(item) for item in found)


def is_example_spec(spec: str | Path | list[str]) -> bool:
    """Whether ``spec`` names fine-tuning examples: every item is a built-in chat dataset, an
    existing ``.jsonl`` file, or a directory holding ``.jsonl`` files and no ``.txt`` files."""
    found = items(spec)
    return bool(found) and all(_is_example_item(item) for item in found)


def _has_columns(path: Path, columns: tuple[str, str]) -> bool:
    """Whether a .csv/.tsv header or a .jsonl file's first object names both columns."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        obj = first_json_line(path)
        return isinstance(obj, dict) and all(c in obj for c in columns)
    if suffix not in (".csv", ".tsv"):
        return False
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            header = next(csv.reader(f, delimiter="," if suffix == ".csv" else "\t"), [])
    except OSError:
        return False
    return all(c in [h.strip() for h in header] for c in columns)


def _is_label_item(item: str, columns: tuple[str, str]) -> bool:
    name = item.partition(":")[0]
    if name in builtin.DATASETS:
        return builtin.DATASETS[name].kind == "labels"
    path = Path(item).expanduser()
    if path.is_dir():
        return any(p.is_file() and (p.suffix.lower() == ".csv" or _has_columns(p, columns)) for p in path.rglob("*"))
    # only classifiers read .csv: one without the columns gets the reader's error naming the columns it has
    return path.is_file() and (path.suffix.lower() == ".csv" or _has_columns(path, columns))


def is_label_spec(spec: str | Path | list[str], text_column: str = "text", label_column: str = "label") -> bool:
    """Whether ``spec`` names labelled texts: every item is a built-in labelled dataset, a .csv
    file, a .tsv file whose header or a .jsonl file whose first object has both columns, or a
    directory holding such files."""
    found = items(spec)
    return bool(found) and all(_is_label_item(item, (text_column, label_column)) for item in found)


def data_format(dcfg) -> str:
    """``text``, ``sft``, ``pairs`` or ``labels``: ``data.format``, where auto means labels for
    files with the text and label columns and labelled datasets, pairs for other .tsv files,
    {"src", "tgt"} JSONL and pair datasets, sft for other .jsonl files and chat datasets, else text."""
    if dcfg.format != "auto":
        return dcfg.format
    if is_label_spec(dcfg.dataset, dcfg.text_column, dcfg.label_column):
        return "labels"
    if is_pair_spec(dcfg.dataset):
        return "pairs"
    return "sft" if is_example_spec(dcfg.dataset) else "text"
