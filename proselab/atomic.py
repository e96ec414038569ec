"""Atomic file writes: write to a temporary name in the same directory, then rename.

A reader (or a run killed mid-write) sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import glob
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # name the file the user asked for, not the temporary one
        raise type(e)(e.errno, f"cannot write there ({e.strerror})", str(path)) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; runs and caches are shared artifacts
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(path: str | Path) -> None:
    """Make the renames in a directory durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stale_temporaries(directory: str | Path, names: Iterable[str]) -> list[Path]:
    """The temporaries ``atomic_path`` left beside ``names`` in ``directory`` when a process was
    killed while writing them."""
    directory = Path(directory)
    return [tmp for name in names for tmp in directory.glob(f".{glob.escape(name)}.*.tmp")]
