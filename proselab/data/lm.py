"""Language-model data: a corpus as one token stream, cut into blocks.

The corpus is tokenized once into the token cache (``cache.tokenize_to_cache``). The stream is
split by position: the first ``1 - val_fraction`` is train, the rest val (nanoGPT's
convention); a training batch is random blocks of ``block_size`` tokens, and an evaluation
pass covers every token of a split exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..chat import add_special_tokens
from ..tokenizers import Tokenizer
from .batch import IGNORE_INDEX, Batch
from .cache import content_hash, tokenize_to_cache, trained_tokenizer
from .files import DataError, items
from .labels import load_labelled
from .sources import is_label_spec
from .text import clean_text, load_texts


@dataclass
class TokenData:
    tokenizer: Tokenizer
    train: np.ndarray  # (N_train,) token ids, memory-mapped
    val: np.ndarray  # (N_val,) token ids, memory-mapped
    unknown: int  # tokens that fell back to unk (characters the vocabulary lacks)
    block_size: int  # tokens per training block
    format = "text"  # the data.format it holds

    def sample(self, split: str, rows: int, generator: torch.Generator) -> torch.Tensor:
        """Random block starts (rows,) in ``split``."""
        return sample_offsets(len(getattr(self, split)), rows, self.block_size, generator)

    def batch(self, split: str, index: torch.Tensor) -> Batch:
        """The blocks starting at ``index``: inputs and next-token targets (B, T)."""
        x, y = get_batch(getattr(self, split), index, self.block_size)
        return Batch(x, y, x.numel())

    def batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """The whole split, every token a target once (see ``eval_batches``)."""
        return eval_batches(getattr(self, split), self.block_size, batch_size)

    def num_batches(self, split: str, batch_size: int) -> int:
        """How many batches ``batches`` yields."""
        return count_eval_batches(len(getattr(self, split)), self.block_size, batch_size)


def prepare_text(dcfg, block_size: int, tokenizer: Tokenizer | None = None) -> TokenData:
    """Load the corpus of ``dcfg`` (a DataConfig; see ``corpus``), get a tokenizer (trained on
    it unless given, plus ``data.special_tokens``), tokenize and split.

    Raises:
        DataError: when a split is too short to hold one block of ``block_size + 1`` tokens.
    """
    docs = corpus(dcfg)
    content = content_hash(docs)
    tokenizer = tokenizer or trained_tokenizer(dcfg.tokenizer, dcfg.vocab_size, docs, content,
                                               tweet_placeholders=dcfg.tweet_placeholders)
    tokenizer = add_special_tokens(tokenizer, dcfg.special_tokens)
    ids, unknown = tokenize_to_cache(docs, tokenizer, content)
    n_train = int(len(ids) * (1 - dcfg.val_fraction))
    train, val = ids[:n_train], ids[n_train:]
    need = block_size + 1
    if len(train) < need or len(val) < need:
        raise DataError(
            f"the corpus has {len(ids)} tokens: {len(train)} train and {len(val)} val, but a block needs "
            f"{need} tokens in each split; use more text, a smaller model.block_size, or another data.val_fraction"
        )
    return TokenData(tokenizer, train, val, unknown, block_size)


def corpus(dcfg) -> list[tuple[str, str]]:
    """The documents to model: text files or corpora, or the texts of labelled data (one a line,
    in one document), so a classifier's body can first be pretrained on its own texts."""
    if is_label_spec(dcfg.dataset, dcfg.text_column, dcfg.label_column):
        rows, _ = load_labelled(dcfg.dataset, dcfg.text_column, dcfg.label_column, dcfg.bad_lines, dcfg.encoding_errors)
        text = "\n".join(r.text for r in rows) + "\n"
        return [(f"texts of {', '.join(items(dcfg.dataset))}", clean_text(text) if dcfg.clean else text)]
    return load_texts(dcfg.dataset, encoding_errors=dcfg.encoding_errors, clean=dcfg.clean)


def sample_offsets(n_tokens: int, batch_size: int, block_size: int, generator: torch.Generator) -> torch.Tensor:
    """Random block starts (batch_size,) drawn from ``generator``: reproducible and resumable."""
    return torch.randint(n_tokens - block_size, (batch_size,), generator=generator)


def get_batch(data: np.ndarray, offsets: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets for blocks starting at ``offsets``: two (B, T) int64 tensors."""
    rows = offsets.numpy()[:, None] + np.arange(block_size + 1)  # (B, T+1)
    block = torch.from_numpy(data[rows].astype(np.int64))
    return block[:, :-1], block[:, 1:]


def count_eval_batches(n_tokens: int, block_size: int, batch_size: int) -> int:
    """How many batches ``eval_batches`` yields for ``n_tokens`` tokens."""
    blocks = -(-max(n_tokens - 1, 0) // block_size)
    return -(-blocks // batch_size)


def eval_batches(data: np.ndarray, block_size: int, batch_size: int) -> Iterator[Batch]:
    """Consecutive non-overlapping blocks covering every token of ``data`` exactly once as a target.

    The last block may be shorter; its missing targets are IGNORE_INDEX, so the mean loss over
    the yielded targets is the exact per-token loss of the whole split.
    """
    n = len(data) - 1  # number of (input, target) pairs
    starts = list(range(0, n, block_size))
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        x = torch.zeros(len(chunk), block_size, dtype=torch.int64)
        y = torch.full((len(chunk), block_size), IGNORE_INDEX, dtype=torch.int64)
        real = 0
        for r, s in enumerate(chunk):
            t = min(block_size, n - s)
            seg = torch.from_numpy(data[s : s + t + 1].astype(np.int64))
            x[r, :t], y[r, :t] = seg[:-1], seg[1:]
            real += t
        yield Batch(x, y, real)
