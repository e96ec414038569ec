"""The GPT's decoding state (``KVCache``) and the operations on its rows that do not need the
model: select (beams, compaction), merge and insert (a server's batch), trimming and shifting
the slots, and writing a re-prefilled window."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class KVCache:
    """The GPT's decoding state: a static cache of keys and values per layer and row.

    Slots [0, length) are in use and the rest is scratch space. Each row's tokens are the
    contiguous slots where ``mask`` is True, ending at slot length - 1; slots before them are
    left padding, tokens that slid out of the window, or an earlier request's (a server's
    batch). A new token goes to slot ``length`` in every row. The buffers start as large as the
    prompt plus the expected new tokens and grow by doubling (up to 1.5 windows), so short
    generations do not pay for a full window.
    """

    k: Tensor  # (n_layer, B, nh, capacity, hs) keys, written in place
    v: Tensor  # (n_layer, B, nh, capacity, hs) values
    idx: Tensor  # (B, capacity) the token in each slot, kept to re-prefill a row when it slides
    mask: Tensor  # (B, capacity) bool, True on the row's tokens
    pos: Tensor  # (B,) tokens in each row's window = the position of its next token
    length: int  # slots in use
    padded: bool  # some slot in [0, length) is masked: attention needs the mask

    @property
    def capacity(self) -> int:
        return self.k.size(3)


def empty(shape: tuple[int, int, int, int, int], dtype: torch.dtype, device: torch.device) -> KVCache:
    """A cache of ``shape`` (n_layer, B, nh, capacity, hs) with no slot in use."""
    B, capacity = shape[1], shape[3]
    return KVCache(k=torch.empty(shape, dtype=dtype, device=device), v=torch.empty(shape, dtype=dtype, device=device),
                   idx=torch.zeros(B, capacity, dtype=torch.long, device=device),
                   mask=torch.zeros(B, capacity, dtype=torch.bool, device=device),
                   pos=torch.zeros(B, dtype=torch.long, device=device), length=0, padded=False)


def select(state: KVCache, index: Tensor) -> KVCache:
    """Rows ``index`` (B',) of the cache, as a new KVCache."""
    return KVCache(k=state.k.index_select(1, index), v=state.v.index_select(1, index),
                   idx=state.idx.index_select(0, index), mask=state.mask.index_select(0, index),
                   pos=state.pos.index_select(0, index), length=state.length, padded=state.padded)


def reorder_rows_(buffers: tuple[Tensor, ...], index: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Row i of each (L, B, nh, capacity, hs) buffer becomes its row index[i], in place, for
    slots [0, n) only and only where index[i] != i; returns those rows and their sources,
    each (R,). Beam search keeps most beams where they were, and the slots past n are scratch.
    Indexing, not index_select / index_copy_: on the strided view of the used slots, those
    first copy all of it to a contiguous tensor (4x slower on BART-base's cache)."""
    changed = (index != torch.arange(index.numel(), device=index.device)).nonzero().squeeze(1)  # (R,)
    src = index[changed]
    if changed.numel():
        for buf in buffers:
            used = buf[:, :, :, :n]  # a view into buf; the gather happens before the write
            used[:, changed] = used[:, src]
    return changed, src


def select_(state: KVCache, index: Tensor) -> KVCache:
    """``select`` in place, for as many rows as there are (beam search's reorder): see
    ``reorder_rows_``."""
    if index.numel() != state.idx.size(0):
        return select(state, index)
    changed, src = reorder_rows_((state.k, state.v), index, state.length)
    if changed.numel():
        state.idx[changed], state.mask[changed], state.pos[changed] = state.idx[src], state.mask[src], state.pos[src]
    return state


def merge(states: list[KVCache], min_capacity: int = 0) -> KVCache:
    """One cache holding the rows of ``states`` in order, with at least ``min_capacity`` slots.

    Rows are right-aligned: a cache with fewer slots in use goes to the right of the new one,
    its rows left-padded (masked), so every row's next token still goes to slot ``length``.
    Positions and masks are per row, so each row decodes exactly as before.
    """
    n = max(s.length for s in states)
    B = sum(s.idx.size(0) for s in states)
    first = states[0]
    capacity = max(max(s.capacity for s in states), min_capacity)
    out = empty((first.k.size(0), B, first.k.size(2), capacity, first.k.size(4)), first.k.dtype, first.k.device)
    # the padding slots are masked, but attention still multiplies their values by a zero
    # weight: uninitialised memory holding a NaN would turn the row's output into NaN
    out.k[:, :, :, :n].zero_()
    out.v[:, :, :, :n].zero_()
    r = 0
    for s in states:
        b, off = s.idx.size(0), n - s.length
        out.k[:, r : r + b, :, off:n] = s.k[:, :, :, : s.length]
        out.v[:, r : r + b, :, off:n] = s.v[:, :, :, : s.length]
        out.idx[r : r + b, off:n], out.mask[r : r + b, off:n] = s.idx[:, : s.length], s.mask[:, : s.length]
        out.pos[r : r + b] = s.pos
        r += b
    out.length, out.padded = n, not bool(out.mask[:, :n].all())
    return out


def insert(state: KVCache, rows: Tensor, new: KVCache) -> KVCache:
    """Put the rows of ``new`` into rows ``rows`` (R,) of ``state``, replacing them (requests
    taking the places of finished ones in a running batch).

    Each new row is right-aligned to end at slot ``length`` - 1, as in ``merge``, and its slots
    before that are masked; only those rows' slots are written, in place. The new rows must
    fit: ``new.length <= state.length``.
    """
    n, m = state.length, new.length
    assert m <= n, f"{m} new slots do not fit before slot {n}: merge instead"
    for buf, src in ((state.k, new.k), (state.v, new.v)):
        buf[:, rows, :, n - m : n] = src[:, :, :, :m].to(buf.dtype)
    state.mask[rows] = False
    state.idx[rows, n - m : n], state.mask[rows, n - m : n] = new.idx[:, :m], new.mask[:, :m]
    state.pos[rows] = new.pos
    state.padded = not bool(state.mask[:, :n].all())
    return state


def shift(state: KVCache, k: int) -> KVCache:
    """Drop slots [0, k), which no row uses, moving the rest to the left (in place)."""
    n = state.length
    m = n - k
    for buf in (state.k, state.v):
        buf[:, :, :, :m] = buf[:, :, :, k:n].clone()
    state.idx[:, :m], state.mask[:, :m] = state.idx[:, k:n].clone(), state.mask[:, k:n].clone()
    state.mask[:, m:] = False
    state.length, state.padded = m, not bool(state.mask[:, :m].all())
    return state


def truncate(state: KVCache, k: int) -> KVCache:
    """Forget every row's last ``k`` tokens (in place): the draft tokens a speculative step
    rejected. Their slots become scratch space again."""
    if k:
        n = state.length - k
        assert n >= 0 and bool(state.mask[:, n : state.length].all()), "truncate: the last slots are not all tokens"
        state.mask[:, n : state.length] = False
        state.length, state.pos = n, state.pos - k
    return state


def trim(state: KVCache) -> KVCache:
    """Drop the leading slots no row uses once they are half the cache or more.

    Attention reads every slot in [0, length), masked or not. In a batch whose rows come and
    go (``insert``, ``select``), the slots before the oldest row's first token are dead
    weight; dropping them when they reach half of ``length`` costs one copy of the live half
    at most every length / 2 steps.
    """
    n = state.length
    if not state.padded or n < 32:
        return state
    used = state.mask[:, :n].any(0)  # (n,)
    first = int(used.int().argmax()) if bool(used.any()) else n
    if 2 * first >= n:
        return shift(state, first)
    return state


def write_window(state: KVCache, rows: Tensor, window: Tensor, fresh: KVCache) -> None:
    """Rows ``rows`` now hold only ``window`` (R, keep), whose keys and values ``fresh`` holds
    from slot 0: written over their last ``keep`` slots in use, the slots before masked."""
    n, keep = state.length - 1, window.size(1)
    s = n - keep + 1  # the window's slots: [s, n]
    state.k[:, rows, :, s : n + 1], state.v[:, rows, :, s : n + 1] = fresh.k, fresh.v
    state.idx[rows, s : n + 1] = window
    state.mask[rows, :s], state.mask[rows, s : n + 1] = False, True
    state.pos[rows] = keep
    state.padded = not bool(state.mask[:, : state.length].all())
