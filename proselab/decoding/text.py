"""Incremental detokenization: each generated token's text, as soon as it is safe to show.

A TextTracker follows one sequence. Its deltas add up to exactly ``final_text`` of all the
tokens (the whole decode, cut before the earliest stop string), and it holds back two kinds
of text until they are certain:

- the start of a character: byte-level BPE splits characters across tokens, and a decode
  that ends inside one ends with U+FFFD;
- a suffix that may become a stop string once more tokens come.

Decoding uses the prefix/read offsets of text-generation-inference and vLLM: each push
decodes a short window of recent tokens from a character boundary and diffs it against what
that window already gave, so the work per token stays constant and decoders that treat the
first token of a slice specially still join up. Stop strings are searched in the new text
and the few characters held before it, never in the whole text.
"""

from __future__ import annotations

from collections.abc import Sequence

_FFFD = "\ufffd"  # what a byte-level decode gives for bytes that are not (yet) a whole character
_MAX_WINDOW = 16  # tokens in the decode window before looking for a boundary inside a U+FFFD run


def _check_stop(stop: str | Sequence[str]) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop strings must be non-empty strings, got {s!r}")
    return stops


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string starts in ``text`` (whichever is listed first), or None."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits, default=None)


def _partial_stop(text: str, stops: Sequence[str], longest: int) -> int:
    """Length of the longest suffix of ``text`` that is the start of a stop string."""
    for k in range(min(len(text), longest - 1), 0, -1):
        if any(len(s) > k and text.endswith(s[:k]) for s in stops):
            return k
    return 0


def final_text(tokenizer, ids: Sequence[int], stop: str | Sequence[str] = ()) -> str:
    """The text of a finished sequence: ``ids`` decoded, cut before the earliest stop string.

    This is the non-streaming definition a TextTracker's deltas add up to.
    """
    text = tokenizer.decode(ids)
    cut = find_stop(text, _check_stop(stop))
    return text if cut is None else text[:cut]


class TextTracker:
    """Turns one sequence's generated tokens into text deltas that are safe to stream.

    Args:
        tokenizer: a proselab Tokenizer (anything with ``decode(ids) -> str``).
        stop: strings that end the sequence; the text is cut before the earliest one.
    """

    def __init__(self, tokenizer, stop: str | Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = _check_stop(stop)
        self._longest = max(map(len, self.stop), default=0)
        self._ids: list[int] = []
        # The window is ids[_prefix:]; both offsets sit on character boundaries, _prefix one
        # boundary behind _read so the window always starts with a token of context.
        self._prefix = self._read = 0
        self._sent = 0  # characters of the window's decode already passed to the stop check
        self._held = ""  # checked text that may still be the start of a stop string
        self._out: list[str] = []
        self._stopped = self._finished = False

    @property
    def text(self) -> str:
        """Everything returned so far by push and finish."""
        if len(self._out) > 1:
            self._out[:] = ["".join(self._out)]
        return self._out[0] if self._out else ""

    @property
    def stopped(self) -> bool:
        """Whether a stop string was found; the text ends just before it."""
        return self._stopped

    @property
    def tokens(self) -> list[int]:
        """The ids pushed so far (the tracker's own list: don't modify it)."""
        return self._ids

    def push(self, token_id: int) -> str:
        """Add one generated token; return the new text that is now safe to show (maybe "")."""
        assert not self._stopped, "push() after a stop string ended the sequence"
        assert not self._finished, "push() after finish()"
        self._ids.append(int(token_id))
        return self._emit(self._decode_new(final=False))

    def finish(self) -> str:
        """End the sequence without a stop: return all the text still held back. Idempotent."""
        if self._stopped or self._finished:
            return ""
        self._finished = True
        out = self._emit(self._decode_new(final=True))
        if not self._stopped and self._held:
            out += self._held
            self._out.append(self._held)
            self._held = ""
        return out

    def _decode_new(self, final: bool) -> str:
        """The window's text not passed on yet, minus a last character that may be incomplete."""
        ids, n = self._ids, len(self._ids)
        window = self.tokenizer.decode(ids[self._prefix:])
        # A byte-level decode turns an incomplete last character into one U+FFFD, and more bytes
        # change nothing before it (Rust's from_utf8_lossy, as Python's "replace", substitutes
        # maximal subparts), so only that one character waits; a genuine U+FFFD comes out with
        # the next character, or at finish.
        end = len(window) - 1 if window.endswith(_FFFD) and not final else len(window)
        new = window[self._sent:end]
        self._sent = max(self._sent, end)
        if end == len(window):  # ids end on a character boundary with all their text out
            if self._read > self._prefix:
                self._sent = len(self.tokenizer.decode(ids[self._read:]))
                self._prefix = self._read
            self._read = n
        elif n - self._prefix > _MAX_WINDOW:
            self._move_window(window)
        return new

    def _move_window(self, window: str) -> None:
        """Start the window at a recent character boundary, when a run of U+FFFD kept it from moving.

        Tokens that each end inside a character leave no boundary to move to; the window then
        grows until one comes, which is slower but still exact.
        """
        ids, n = self._ids, len(self._ids)
        for m in range(n - 1, max(self._read, n - 4), -1):
            head = self.tokenizer.decode(ids[self._prefix:m])
            # Split inside a character, the halves decode to more U+FFFD than the whole.
            if len(head) <= self._sent and head + self.tokenizer.decode(ids[m:]) == window:
                self._sent -= len(head)
                self._prefix = self._read = m
                return

    def _emit(self, new: str) -> str:
        if not new:
            return ""
        # A stop string that ends in ``new`` starts in it or in the held text before it,
        # which is shorter than the longest stop string.
        text = self._held + new
        cut = find_stop(text, self.stop)
        if cut is not None:
            out, self._held, self._stopped = text[:cut], "", True
        else:
            keep = _partial_stop(text, self.stop, self._longest)
            out, self._held = text[: len(text) - keep], text[len(text) - keep:]
        if out:
            self._out.append(out)
        return out
