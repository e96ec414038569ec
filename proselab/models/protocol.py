"""The Decoder protocol: the only thing ``proselab.decoding`` may call on a model.

Every family (rnn, seq2seq, gpt) implements ``start``, ``step`` and ``reorder``, so greedy,
sampling and beam search are written once. State is explicit and travels through the calls;
no module hides decoding state in itself.

Ownership rule: ``step`` may update the state it is given in place (the GPT writes into a
preallocated KV cache) and returns the state to use next; the caller must not reuse the state
it passed in. ``reorder`` returns a fresh state and leaves its input untouched, so a state can
be forked (beams, num_return_sequences) and each copy stepped independently.

Optionally a model also has ``merge(states) -> state``: one state whose rows are the rows of
``states`` in order, each decoding exactly as it did alone. The server's continuous batching
uses it to let new requests join a running batch; a model without it is served in static
batches. ``insert(state, rows, new) -> state`` (optional too) puts the rows of ``new`` in
place of rows ``rows`` of ``state`` (consumed, like ``step``'s), which lets a request take a
finished one's place without the copy of every row a merge makes; the server falls back to
merge and reorder. ``step_start(tokens, state, batch)`` (optional) is ``step`` and ``start``
in one forward pass, so the server prefills joining requests while it steps the others.
``reorder_(state, index)`` (optional) is ``reorder`` consuming its input (like ``step``), free
to reuse its buffers; beam search, which never goes back to a state it reordered, uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

State = Any  # family-specific: the RNN's hidden state, the GPT's KVCache, the encoder memory


@dataclass
class Prompt:
    """A batch of language-model prompts of different lengths, left-padded to one width.

    Left padding puts every row's last token in the last column, so one step feeds them all.
    """

    idx: Tensor  # (B, T) token ids; padded positions hold any valid id (they are masked)
    mask: Tensor | None = None  # (B, T) bool, True on real tokens; None = no padding
    max_new_tokens: int | None = None  # a hint for sizing caches; None = unknown

    @property
    def lengths(self) -> Tensor:
        """(B,) real tokens per row."""
        if self.mask is None:
            return self.idx.new_full((self.idx.size(0),), self.idx.size(1))
        return self.mask.sum(1)


def memory_rows(index: Tensor, group: int, n_memory: int) -> tuple[int, Tensor | None]:
    """How an encoder-decoder's memory follows ``reorder(state, index)`` without copying it.

    Decoder row r reads encoder-memory row ``r // group``. Beam search tiles each source K
    times and then only reorders within a source's K rows, so the rows keep coming in equal,
    source-ordered groups: the memory (encoder states, cross-attention keys and values) stays
    as it is, one row per source, and only ``group`` changes. Any other index (rows dropped,
    mixed across sources) needs the memory rows gathered.

    Returns:
        (new group, None) when the memory can stay, or (1, the memory rows to gather (B',)).
    """
    src = index // group
    rows = index.numel()
    if rows and rows % n_memory == 0 and torch.equal(
            src, torch.arange(n_memory, device=src.device).repeat_interleave(rows // n_memory)):
        return rows // n_memory, None
    return 1, src


def insert_by_merge(model, state: Any, rows: Tensor, new: Any, batch_size: int) -> Any:
    """``insert`` for any model with ``merge`` and ``reorder``: the rows of ``new`` put in place
    of rows ``rows`` (R,) of ``state`` (``batch_size`` rows), by merging and then reordering
    (a copy of every row)."""
    index = torch.arange(batch_size, device=rows.device)
    index[rows] = batch_size + torch.arange(rows.numel(), device=rows.device)
    return model.reorder(model.merge([state, new]), index)


@runtime_checkable
class Decoder(Protocol):
    def start(self, batch: Any) -> tuple[Tensor, State]:
        """Encode the source / prefill the prompt.

        Args:
            batch: for language models a Prompt, or a LongTensor idx (B, T) of prompt tokens
                (the same as a Prompt without padding); for encoder-decoders a Seq2SeqBatch
                (the decoder starts from its bos token).

        Returns:
            logits (B, V) for the first new token, and the state to pass to ``step``.
        """
        ...

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """Feed one token per row.

        Args:
            tokens: (B,) the tokens chosen after the last logits.
            state: the state returned by ``start``, ``step`` or ``reorder`` (consumed).

        Returns:
            logits (B, V) for the next token, and the new state.
        """
        ...

    def reorder(self, state: State, index: Tensor) -> State:
        """Select, reorder or repeat batch rows of a state (index_select along the batch).

        Args:
            state: a state of batch size B.
            index: (B',) LongTensor of rows in [0, B).

        Returns:
            a new state of batch size B' whose row i is row ``index[i]`` of ``state``.
        """
        ...
