"""The Decoder protocol: the only thing ``proselab.decoding`` may call on a model.

Every family (rnn, seq2seq, gpt) implements ``start``, ``step`` and ``reorder``, so greedy,
sampling and beam search are written once. State is explicit and travels through the calls;
no module hides decoding state in itself.

Ownership rule: ``step`` may update the state it is given in place (the GPT writes into a
preallocated KV cache) and returns the state to use next; the caller must not reuse the state
it passed in. ``reorder`` returns a fresh state and leaves its input untouched, so a state can
be forked (beams, num_return_sequences) and each copy stepped independently.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

State = Any  # family-specific: the RNN's hidden state, the GPT's KVCache, the encoder memory


@runtime_checkable
class Decoder(Protocol):
    def start(self, batch: Any) -> tuple[Tensor, State]:
        """Encode the source / prefill the prompt.

        Args:
            batch: for language models, a LongTensor idx (B, T) of prompt tokens.

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
