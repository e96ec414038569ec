"""Sentence pairs for seq2seq training (translation, summarization, dialogue).

``load_pairs`` reads ``(source, target)`` pairs from ``.tsv`` files (``source<TAB>target`` per
line), ``.jsonl`` files (``{"src": str, "tgt": str}`` per line), directories of them, and the
built-in pairs datasets (``aclsum``, ``chitchat-pairs``), each split chosen as ``NAME:SPLIT``
(a bare name is its train split). ``write_reverse_task`` writes the synthetic reverse task,
the smallest test of a seq2seq model.
"""

from __future__ import annotations

import os
import random
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..atomic import atomic_path
from .files import (
    DatasetError,
    DatasetWarning,
    items,
    json_object,
    json_type,
    key_list,
    read_text,
)
from .sources import source_files

_SHAPE = {
    ".tsv": "expected one 'source<TAB>target' pair per line, exactly one tab, neither side empty",
    ".jsonl": 'expected one {"src": str, "tgt": str} object per line, neither side empty',
}
_SKIP_HINT = "data.bad_lines=skip skips such lines"
_SHOWN = 3  # bad-line locations a skip warning names
REVERSE_SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _side(value: str, which: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"{which} is empty")
    return value


def _tsv_pair(line: str) -> tuple[str, str]:
    fields = line.split("\t")
    if len(fields) == 1:
        raise ValueError("has no tab between source and target")
    if len(fields) > 2:  # splitting at the first tab could shift text from source to target: refuse to guess
        raise ValueError(f"has {len(fields) - 1} tabs, so where the source ends is ambiguous")
    return _side(fields[0], "the source"), _side(fields[1], "the target")


def _jsonl_pair(line: str) -> tuple[str, str]:
    obj = json_object(line, "a pair")
    for key in ("src", "tgt"):
        if key not in obj:
            raise ValueError(f'has no "{key}" (keys: {key_list(obj)})')
        if not isinstance(obj[key], str):
            raise ValueError(f'"{key}" must be a string, got {json_type(obj[key])}')
    return _side(obj["src"], '"src"'), _side(obj["tgt"], '"tgt"')


def _read_file(path: Path, bad_lines: str, encoding_errors: str) -> tuple[list[tuple[str, str]], int]:
    """The pairs in one file and how many bad lines were skipped (bad_lines=skip warns once per file)."""
    suffix = path.suffix.lower()
    parse = _tsv_pair if suffix == ".tsv" else _jsonl_pair
    text = read_text(path, encoding_errors)
    pairs, bad = [], []
    # Split on \n only: str.splitlines would also split at U+2028 and friends, which texts may hold.
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip() and not (suffix == ".tsv" and "\t" in line):  # a lone tab is an empty pair
            continue
        try:
            pairs.append(parse(line))
        except ValueError as e:
            if bad_lines == "error":
                raise DatasetError(f"{path}:{lineno}: {e}; {_SHAPE[suffix]}; {_SKIP_HINT}") from None
            bad.append((lineno, str(e)))
    if bad:
        where = ", ".join(f"{path}:{n}" for n, _ in bad[:_SHOWN]) + (", ..." if len(bad) > _SHOWN else "")
        warnings.warn(f"{path}: skipped {len(bad)} malformed line{'s' if len(bad) > 1 else ''} ({where}); "
                      f"the first: {bad[0][1]}", DatasetWarning, stacklevel=3)
    return pairs, len(bad)


def load_pairs(
    spec: str | Path | list[str], bad_lines: str = "error", encoding_errors: str = "strict"
) -> tuple[list[tuple[str, str]], int]:
    """Load ``(source, target)`` sentence pairs for seq2seq training.

    Blank lines are skipped, a BOM and ``\\r`` line ends are dropped, and both sides are stripped.
    A malformed line (a TSV line without exactly one tab, a JSONL line that is not a
    ``{"src": str, "tgt": str}`` object, an empty side) raises a DatasetError naming ``file:line``
    unless ``bad_lines`` is ``skip``.

    Args:
        spec: a built-in pairs dataset (``aclsum`` is its train split, ``aclsum:test`` a named
            split), a ``.tsv`` or ``.jsonl`` file, a directory (its ``*.tsv`` and ``*.jsonl``
            files, recursively, sorted), or a list of these.
        bad_lines: error (stop at the first malformed line) or skip (leave it out, and warn once
            per file with a DatasetWarning saying how many lines and where).
        encoding_errors: strict (a non-UTF-8 byte is an error naming file and byte offset) or
            replace (substitute U+FFFD and warn).

    Returns:
        The pairs in order, and the number of malformed lines skipped.
    """
    if bad_lines not in ("error", "skip"):
        raise DatasetError(f"data.bad_lines must be error or skip, got '{bad_lines}'")
    pairs: list[tuple[str, str]] = []
    skipped = 0
    for _, path in source_files(spec, "pairs"):
        got, bad = _read_file(path, bad_lines, encoding_errors)
        pairs.extend(got)
        skipped += bad
    if not pairs:
        why = f"all {skipped} non-blank lines are malformed" if skipped else "it holds no non-blank lines"
        raise DatasetError(f"no sentence pairs in {', '.join(items(spec))}: {why}")
    return pairs, skipped


def _check_reverse_args(args: dict[str, int], min_len: int, max_len: int) -> None:
    for arg, value in args.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a whole number, at least 1, got {value!r}")
    if min_len > max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len} and max_len={max_len}")


def _check_disk_space(out_dir: Path, sizes: dict[str, int], min_len: int, max_len: int) -> None:
    """Refuse sizes whose files cannot fit on the disk, before writing any."""
    per_pair = 2 * (min_len + max_len)  # a line of n symbols: 2n - 1 characters a side, a tab, a newline
    need = per_pair * sum(sizes.values())
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if need > free:
        split = max(sizes, key=sizes.get)
        raise ValueError(f"{split}_size={sizes[split]:,} (--{split}-size) would write about {need / 1e9:,.1f} GB, "
                         f"more than the {free / 1e9:,.1f} GB free in '{existing}'; ask for fewer pairs")


def _reverse_lines(rng: random.Random, n: int, min_len: int, max_len: int) -> Iterator[str]:
    for _ in range(n):
        tokens = rng.choices(REVERSE_SYMBOLS, k=rng.randint(min_len, max_len))
        yield f"{' '.join(tokens)}\t{' '.join(reversed(tokens))}\n"


def write_reverse_task(
    out_dir: str | Path,
    train_size: int = 50000,
    dev_size: int = 1000,
    test_size: int = 1000,
    min_len: int = 1,
    max_len: int = 25,
    seed: int = 42,
) -> dict[str, Path]:
    """Write the synthetic reverse task (JoeyNMT's toy task) as train.tsv, dev.tsv and test.tsv.

    Each line is ``tokens<TAB>the tokens reversed``; a token is one of 0-9 and a-z, drawn
    uniformly, and tokens are separated by single spaces; a line's length is uniform in
    ``[min_len, max_len]``. The files are streamed to disk (memory stays flat at any size) and
    written atomically; sizes whose files would not fit on the disk are refused up front.

    Args:
        out_dir: the directory to write (created if needed; existing files are replaced).
        train_size, dev_size, test_size: pairs in each file.
        min_len, max_len: the fewest and the most tokens in a source.
        seed: the same seed writes the same files; each split has its own generator, so dev and
            test do not change with train_size.

    Returns:
        ``{"train": path, "dev": path, "test": path}``.
    """
    sizes = {"train": train_size, "dev": dev_size, "test": test_size}
    args = {f"{split}_size": n for split, n in sizes.items()} | {"min_len": min_len, "max_len": max_len}
    _check_reverse_args(args, min_len, max_len)
    _check_disk_space(Path(out_dir), sizes, min_len, max_len)
    paths = {}
    for split, n in sizes.items():
        rng = random.Random(f"reverse-{seed}-{split}")  # a str seed is hashed with SHA-512: stable across runs
        paths[split] = Path(out_dir) / f"{split}.tsv"
        with atomic_path(paths[split]) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(_reverse_lines(rng, n, min_len, max_len))
            f.flush()
            os.fsync(f.fileno())
    return paths
