"""Text corpora for language modelling: built-in corpora, .txt files and directories of them."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from .files import DatasetError, items, read_text
from .sources import source_files

_C0_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f]")  # every C0 control but \t and \n (\r is gone by then)
_TRAILING_BLANKS = re.compile(r"[ \t]+$", re.MULTILINE)


def clean_text(text: str) -> str:
    """Normalize text: NFC, ``\\n`` line endings, no trailing spaces or tabs, no C0 controls but ``\\t``/``\\n``."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _C0_CONTROLS.sub("", text)
    text = _TRAILING_BLANKS.sub("", text)
    return unicodedata.normalize("NFC", text)


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
    docs = []
    for name, path in source_files(spec, "text"):
        text = read_text(path, encoding_errors)
        docs.append((name, clean_text(text) if clean else text))
    if not any(text.strip() for _, text in docs):
        raise DatasetError(f"the corpus is empty: {', '.join(items(spec))} holds no text but whitespace")
    return docs
