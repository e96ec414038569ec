"""The leaf of the data package: reading a user's files and saying what is wrong with them.

Every reader (text, pairs, examples) decodes files through ``decode`` and reports a bad file or
line as a DatasetError that names ``file`` or ``file:line``; nothing here knows a data kind.
"""

from __future__ import annotations

import difflib
import json
import re
import warnings
from pathlib import Path

_BAD_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape decodes an invalid byte to


class DatasetError(ValueError):
    """A dataset name, path or file supplied by the user cannot be used."""


class DatasetWarning(UserWarning):
    """Text was loaded, but changed on the way (e.g. bytes that are not UTF-8 were replaced)."""


class DataError(ValueError):
    """The data cannot be used as configured (too short, empty split, ...)."""


def items(spec: str | Path | list[str]) -> list[str]:
    """A ``data.dataset`` spec (one item or a list of them) as a list of strings."""
    return [str(spec)] if isinstance(spec, (str, Path)) else [str(s) for s in spec]


def decode(path: Path, data: bytes, errors: str) -> str:
    """The UTF-8 text of a file's bytes (a BOM dropped).

    Args:
        path: the file, for messages.
        data: its bytes.
        errors: strict (a non-UTF-8 byte is a DatasetError naming its byte offset) or replace
            (substitute U+FFFD and warn with a DatasetWarning saying how many bytes).
    """
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
        warnings.warn(f"{path}: replaced {replaced} bytes that are not UTF-8 with U+FFFD", DatasetWarning, stacklevel=4)
    return text


def read_text(path: Path, errors: str = "strict") -> str:
    """A file's text (see ``decode``)."""
    return decode(path, path.read_bytes(), errors)


def dir_files(path: Path, suffixes: tuple[str, ...], why: str) -> list[Path]:
    """The files under ``path`` (recursively, sorted) whose suffix is one of ``suffixes``, in any
    case; a DatasetError that says ``why`` when there are none."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise DatasetError(f"directory '{path}' has no {' or '.join(suffixes)} files; {why}")
    return files


def not_found(item: str, names: list[str], what: str) -> DatasetError:
    """``item`` is neither one of the built-in ``names`` (a ``what``) nor a path."""
    match = difflib.get_close_matches(item, names, n=1)
    hint = f"; did you mean the built-in dataset '{match[0]}'?" if match else f"; {what}s: {', '.join(names)}"
    return DatasetError(f"data.dataset: '{item}' is neither a {what} nor an existing file or directory{hint}")


def json_type(value) -> str:
    """The JSON name of a parsed value's type, for messages."""
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def json_object(line: str, what: str) -> dict:
    """One JSONL line that must hold a JSON object (``what``: "an example", "a pair");
    ValueError says why it does not."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"a JSON {json_type(obj)} is not {what}")
    return obj


def key_list(obj: dict) -> str:
    """The first few keys of a JSON object, for saying what a line holds instead."""
    return ", ".join(f'"{k}"' for k in list(obj)[:5]) or "none"


def first_json_line(path: Path) -> object:
    """The first non-blank line of a JSONL file, parsed; None when it cannot be read or parsed.
    Format detection peeks with it, so it never raises."""
    try:
        with open(path, "rb") as f:
            line = next((ln for ln in f if ln.strip()), b"").decode("utf-8", "replace").lstrip("\ufeff")
        return json.loads(line)
    except (OSError, ValueError):
        return None
