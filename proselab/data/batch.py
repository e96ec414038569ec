"""What a batch is: the model inputs, the targets and how many real tokens they hold.

Every kind of training data yields ``Batch``es and every model takes ``batch.inputs`` and
``batch.targets`` in its one loss path, ``forward(inputs, targets)``; targets equal to
``IGNORE_INDEX`` (padding, prompts) take no loss. A classifier's targets are one label id per text.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index


@dataclass
class Seq2SeqBatch:
    """A batch for an encoder-decoder: source ids (right-padded) and, in training, the
    teacher-forced decoder inputs (bos + target, right-padded)."""

    src: Tensor  # (B, S) source token ids; padding positions hold any valid id
    mask: Tensor  # (B, S) bool, True on real source tokens (every row has at least one)
    tgt: Tensor | None = None  # (B, T) decoder inputs for training; None when decoding
    max_new_tokens: int | None = None  # a hint for sizing caches; None = unknown

    def to(self, device, non_blocking: bool = False) -> Seq2SeqBatch:
        tgt = None if self.tgt is None else self.tgt.to(device, non_blocking=non_blocking)
        return Seq2SeqBatch(self.src.to(device, non_blocking=non_blocking),
                            self.mask.to(device, non_blocking=non_blocking), tgt, self.max_new_tokens)

    def repeat_interleave(self, n: int) -> Seq2SeqBatch:
        """Each row n times in a row (num_return_sequences)."""
        tgt = None if self.tgt is None else self.tgt.repeat_interleave(n, 0)
        return Seq2SeqBatch(self.src.repeat_interleave(n, 0), self.mask.repeat_interleave(n, 0), tgt,
                            self.max_new_tokens)

    def __len__(self) -> int:
        return self.src.size(0)


@dataclass
class Batch:
    """One batch of training or evaluation data."""

    inputs: Tensor | Seq2SeqBatch | TextBatch  # (B, T) token ids, an encoder-decoder's sources and decoder
    # inputs, or a classifier's texts
    targets: Tensor  # (B, T) the token to predict at each position (IGNORE_INDEX: no loss), or (B,) label ids
    tokens: int  # real (unpadded) input tokens, for throughput

    def to(self, device, non_blocking: bool = False) -> Batch:
        return Batch(self.inputs.to(device, non_blocking=non_blocking),
                     self.targets.to(device, non_blocking=non_blocking), self.tokens)


@dataclass
class TextBatch:
    """Texts for a classifier: token ids padded on the right, and which are real."""

    idx: Tensor  # (B, T) token ids; padding positions hold id 0
    mask: Tensor  # (B, T) bool, True on real tokens (every row has at least one)

    def to(self, device, non_blocking: bool = False) -> TextBatch:
        return TextBatch(self.idx.to(device, non_blocking=non_blocking), self.mask.to(device, non_blocking=non_blocking))

    def __len__(self) -> int:
        return self.idx.size(0)
