"""Labelled texts for classifiers: CSV and TSV files with a header row, JSONL objects, and the
built-in labelled datasets (``tweets-sentiment``); one label per text.

The text and label columns (or keys) are ``data.text_column`` and ``data.label_column``. A bad
row (no text, no label, a wrong number of fields) is an error naming ``file:line``, or with
``data.bad_lines=skip`` it is left out and counted.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from .files import (
    DatasetError,
    DatasetWarning,
    items,
    json_object,
    json_type,
    read_text,
)
from .sources import source_files

_SKIP_HINT = "data.bad_lines=skip skips such rows"
_SHOWN = 3  # bad-row locations a skip warning names


@dataclass(frozen=True)
class Row:
    text: str
    label: str
    where: str  # file:line, for messages about this row


def _columns(path: Path, header: list[str], text_column: str, label_column: str) -> tuple[int, int]:
    names = [h.strip() for h in header]
    for column, setting in ((text_column, "data.text_column"), (label_column, "data.label_column")):
        if column not in names:
            raise DatasetError(f"{path}: no column '{column}' (its columns: {', '.join(names) or 'none'}); "
                               f"set {setting} to the column that holds the {setting.split('.')[1].split('_')[0]}")
    return names.index(text_column), names.index(label_column)


def _table_rows(path: Path, text: str, columns: tuple[str, str]):
    """(line, text, label) of each data row of a CSV/TSV text; ValueError in place of a bad row."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="," if path.suffix.lower() == ".csv" else "\t")
    header = next(reader, None)
    if header is None:
        return
    t, lab = _columns(path, header, *columns)
    while True:
        line = reader.line_num + 1  # where the row starts: a quoted field may span lines
        fields = next(reader, None)
        if fields is None:
            return
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            yield line, ValueError(f"has {len(fields)} fields, the header has {len(header)}")
            continue
        yield line, (fields[t], fields[lab])


def _jsonl_rows(path: Path, text: str, columns: tuple[str, str]):
    # Split on \n only: str.splitlines would also split at U+2028, which JSON allows raw inside strings.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json_object(line, "a labelled text")
            for key in columns:
                if key not in obj:
                    raise ValueError(f'has no "{key}" (set data.text_column / data.label_column to its keys)')
            value, label = obj[columns[0]], obj[columns[1]]
            if not isinstance(value, str):
                raise ValueError(f'"{columns[0]}" must be a string, got {json_type(value)}')
            if isinstance(label, bool) or not isinstance(label, (str, int)):
                raise ValueError(f'"{columns[1]}" must be a string or an integer, got {json_type(label)}')
            yield lineno, (value, str(label))
        except ValueError as e:
            yield lineno, e


def _check(text: str, label: str) -> tuple[str, str]:
    text, label = text.strip(), label.strip()
    if not text:
        raise ValueError("the text is empty")
    if not label:
        raise ValueError("has no label")
    return text, label


def _read_file(path: Path, columns: tuple[str, str], bad_lines: str, encoding_errors: str) -> tuple[list[Row], int]:
    text = read_text(path, encoding_errors)
    parse = _jsonl_rows if path.suffix.lower() == ".jsonl" else _table_rows
    rows, bad = [], []
    for lineno, got in parse(path, text, columns):
        try:
            if isinstance(got, ValueError):
                raise got
            rows.append(Row(*_check(*got), f"{path}:{lineno}"))
        except ValueError as e:
            if bad_lines == "error":
                raise DatasetError(f"{path}:{lineno}: {e}; {_SKIP_HINT}") from None
            bad.append((lineno, str(e)))
    if bad:
        where = ", ".join(f"{path}:{n}" for n, _ in bad[:_SHOWN]) + (", ..." if len(bad) > _SHOWN else "")
        warnings.warn(f"{path}: skipped {len(bad)} bad row{'s' if len(bad) > 1 else ''} ({where}); "
                      f"the first: {bad[0][1]}", DatasetWarning, stacklevel=3)
    return rows, len(bad)


def load_labelled(spec: str | Path | list[str], text_column: str = "text", label_column: str = "label",
                  bad_lines: str = "error", encoding_errors: str = "strict") -> tuple[list[Row], int]:
    """Load labelled texts (both sides stripped; blank rows skipped).

    Args:
        spec: a built-in labelled dataset (``tweets-sentiment`` is its train split,
            ``tweets-sentiment:test`` a named split), a ``.csv``, ``.tsv`` or ``.jsonl`` file, a
            directory of them (recursively, sorted), or a list of these.
        text_column, label_column: the column names (a CSV/TSV header) or JSONL keys; a JSONL
            label may be a string or an integer.
        bad_lines: error (stop at the first bad row) or skip (leave it out and warn once per file).
        encoding_errors: strict or replace, for bytes that are not UTF-8.

    Returns:
        The rows in order (text, label and ``file:line``), and the number of bad rows skipped.
    """
    if bad_lines not in ("error", "skip"):
        raise DatasetError(f"data.bad_lines must be error or skip, got '{bad_lines}'")
    rows: list[Row] = []
    skipped = 0
    for _, path in source_files(spec, "labels"):
        got, bad = _read_file(path, (text_column, label_column), bad_lines, encoding_errors)
        rows += got
        skipped += bad
    if not rows:
        why = f"all {skipped} rows are bad" if skipped else "it holds no rows"
        raise DatasetError(f"no labelled texts in {', '.join(items(spec))}: {why}")
    return rows, skipped
