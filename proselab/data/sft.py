"""Supervised fine-tuning data: JSONL prompt/response pairs or conversations (see chat.py),
each tokenized with a mask of the response tokens and cached (``cache.examples_to_cache``).

The last ``val_fraction`` of the examples is val. A batch is a random set of examples, each cut
to ``block_size + 1`` tokens, padded on the right; the loss sees only response tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..chat import add_special_tokens, example_text, needed_tokens
from ..tokenizers import Tokenizer
from .batch import IGNORE_INDEX, Batch
from .cache import examples_to_cache, trained_tokenizer
from .examples import load_examples
from .files import DataError


@dataclass
class Examples:
    """One split of tokenized examples: example i is ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: np.ndarray  # (N_tokens,) token ids of all examples, concatenated
    trained: np.ndarray  # (N_tokens,) uint8, 1 on the tokens the loss is computed on
    offsets: np.ndarray  # (N + 1,) int64 start of each example
    keep: np.ndarray  # (M,) the examples that have a trained token within block_size + 1 tokens

    def __len__(self) -> int:
        return len(self.keep)

    def row(self, i: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and trained mask of kept example ``i``, cut to ``block_size + 1`` tokens."""
        j = int(self.keep[i])
        a = int(self.offsets[j])
        b = min(int(self.offsets[j + 1]), a + block_size + 1)
        return self.ids[a:b], self.trained[a:b]


@dataclass
class ExampleData:
    tokenizer: Tokenizer
    train: Examples
    val: Examples
    unknown: int  # tokens that fell back to unk
    truncated: int  # rows still longer than block_size + 1 tokens (one long message), cut at the end
    dropped: int  # rows with no response token within block_size + 1 tokens, left out
    block_size: int  # a row is cut to block_size + 1 tokens
    format = "sft"  # the data.format it holds

    def sample(self, split: str, rows: int, generator: torch.Generator) -> torch.Tensor:
        """Random example indices (rows,) in ``split``."""
        return torch.randint(len(getattr(self, split)), (rows,), generator=generator)

    def batch(self, split: str, index: torch.Tensor) -> Batch:
        """Examples ``index`` padded on the right to the longest: inputs and targets (B, T), T <=
        block_size, targets IGNORE_INDEX except on response tokens."""
        return collate([getattr(self, split).row(int(i), self.block_size) for i in index])

    def batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """Every example of the split once, in order."""
        ex = getattr(self, split)
        for start in range(0, len(ex), batch_size):
            yield collate([ex.row(i, self.block_size) for i in range(start, min(start + batch_size, len(ex)))])

    def num_batches(self, split: str, batch_size: int) -> int:
        """How many batches ``batches`` yields."""
        return -(-len(getattr(self, split)) // batch_size)


def collate(rows: list[tuple[np.ndarray, np.ndarray]]) -> Batch:
    """Rows of (ids, trained mask), padded on the right with id 0 and ignored targets."""
    T = max(len(ids) for ids, _ in rows) - 1
    x = torch.zeros(len(rows), T, dtype=torch.int64)  # padding id 0: its targets are ignored
    y = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.int64)
    real = 0
    for r, (ids, trained) in enumerate(rows):
        ids_t = torch.from_numpy(ids.astype(np.int64))
        n = len(ids_t) - 1
        x[r, :n] = ids_t[:-1]
        y[r, :n] = ids_t[1:].masked_fill(torch.from_numpy(trained[1:] == 0), IGNORE_INDEX)
        real += n
    return Batch(x, y, real)


def _split_examples(ids: np.ndarray, trained: np.ndarray, offsets: np.ndarray, lo: int, hi: int,
                    block_size: int) -> tuple[Examples, int, int]:
    """Examples [lo, hi): the split, how many are longer than a window, how many have nothing to learn in it."""
    starts, ends = offsets[lo:hi], offsets[lo + 1 : hi + 1]
    window_end = np.minimum(ends, starts + block_size + 1)
    cum = np.concatenate([[0], np.cumsum(trained, dtype=np.int64)])
    learnable = cum[window_end] - cum[np.minimum(starts + 1, window_end)]  # trained targets (skip token 0)
    keep = np.nonzero(learnable > 0)[0] + lo
    truncated = int(np.count_nonzero(ends - starts > block_size + 1))
    return Examples(ids, trained, offsets, keep), truncated, (hi - lo) - len(keep)


def prepare_examples(dcfg, block_size: int, tokenizer: Tokenizer | None = None) -> ExampleData:
    """Supervised fine-tuning data: the examples of ``dcfg.dataset``, tokenized and split. The
    tokenizer (trained on them unless given) gains the special tokens they need
    (``chat.needed_tokens``) and ``data.special_tokens``.

    Raises:
        DataError: when the train or val split would hold no usable example.
    """
    examples = load_examples(dcfg.dataset)
    content = hashlib.sha256(json.dumps(examples, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()
    if tokenizer is None:
        docs = [(str(i), example_text(ex)) for i, ex in enumerate(examples)]
        tokenizer = trained_tokenizer(dcfg.tokenizer, dcfg.vocab_size, docs, tweet_placeholders=dcfg.tweet_placeholders)
    tokenizer = add_special_tokens(tokenizer, needed_tokens(examples, dcfg.chat_template, dcfg.special_tokens))
    ids, trained, offsets, origin, unknown = examples_to_cache(examples, tokenizer, dcfg.chat_template, content,
                                                               block_size)
    n = len(examples)
    n_val = max(1, round(n * dcfg.val_fraction))
    if n - n_val < 1:
        raise DataError(f"{n} example(s): too few for a train and a val split; add examples or lower data.val_fraction")
    cut = int(np.searchsorted(origin, n - n_val))  # the rows of one example stay in one split
    train, cut_train, drop_train = _split_examples(ids, trained, offsets, 0, cut, block_size)
    val, cut_val, drop_val = _split_examples(ids, trained, offsets, cut, len(origin), block_size)
    for name, split in (("train", train), ("val", val)):
        if len(split) == 0:
            raise DataError(
                f"no {name} example has a response token within model.block_size + 1 = {block_size + 1} tokens; "
                "raise model.block_size or shorten the prompts"
            )
    return ExampleData(tokenizer, train, val, unknown, cut_train + cut_val, drop_train + drop_val, block_size)
