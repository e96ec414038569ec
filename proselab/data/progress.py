"""Progress on stderr for the steps that can take seconds: training a tokenizer, tokenizing data,
fetching a dataset, evaluation passes and decoding, exports.

A bar draws only once its step has run ``DELAY`` seconds, so a step that ends sooner prints
nothing. A step that cannot count (one call into the Rust tokenizer trainer, pip) gets a line
with a running clock instead (``working``). ``showing(False)`` silences everything inside it:
the training loop's ``train.progress=false``. Under torchrun only rank 0 shows progress.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

DELAY = 1.0  # seconds a step runs before its bar appears
TICK = 0.5  # seconds between redraws of a bar that gets no update, so its clock keeps running

_showing: ContextVar[bool] = ContextVar("proselab_progress", default=True)
T = TypeVar("T")


def is_main_process() -> bool:
    """False on the processes other than rank 0 of a torchrun launch (one report, not one per rank)."""
    return os.environ.get("RANK", "0") == "0"


def enabled() -> bool:
    """Whether this process shows progress here."""
    return _showing.get() and is_main_process()


@contextmanager
def showing(on: bool) -> Iterator[None]:
    """Show progress inside this block only if ``on`` (and it is shown around it)."""
    token = _showing.set(on and _showing.get())
    try:
        yield
    finally:
        _showing.reset(token)


def _tick(bar, done: threading.Event) -> None:
    """Redraw ``bar`` every TICK seconds once DELAY has passed: it appears, and its clock runs,
    even while one long call gives it no update."""
    if done.wait(DELAY):
        return
    while not done.is_set():
        bar.refresh()
        bar.last_print_t = time.time()  # so close() knows the bar was drawn and ends its line
        done.wait(TICK)


@contextmanager
def bar(desc: str, total: float | None = None, unit: str = "it", leave: bool = True, counted: bool = True):
    """A tqdm bar on stderr for a step that may take seconds (drawn after DELAY seconds).

    Args:
        desc: what the step is doing ("tokenizing pairs").
        total: the count it reaches (None: unknown).
        unit: what is counted; counts of chars are shown scaled (5.4M).
        leave: keep the finished bar's line (False inside a training run, whose bar stays).
        counted: False shows only ``desc`` and the time so far, for a step that cannot count.
    """
    from tqdm.auto import tqdm

    fmt = None if counted else "{desc}: {elapsed}"
    b = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "char", leave=leave, delay=DELAY,
             disable=not enabled(), dynamic_ncols=True, bar_format=fmt)
    done = threading.Event()
    ticker = threading.Thread(target=_tick, args=(b, done), daemon=True)
    if not b.disable:
        ticker.start()
    try:
        yield b
    finally:
        done.set()
        if ticker.is_alive():
            ticker.join()
        b.close()


def working(desc: str):
    """A line saying what a step that cannot count its progress does, with its time so far."""
    return bar(desc, counted=False)


def iterate(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it",
            leave: bool = True) -> Iterator[T]:
    """``items``, one bar step per item."""
    with bar(desc, total, unit, leave) as b:
        for item in items:
            yield item
            b.update()


def size(chars: int) -> str:
    """A text's size for a message: 830 chars, 1.5M chars."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if chars >= scale:
            return f"{chars / scale:.1f}{suffix} chars"
    return f"{chars} chars"
