"""Classifier data: labelled texts, tokenized and split, batched as right-padded texts with one
label id each.

Labels are ids into the run's label names (``model.labels``: given, or the training split's
labels sorted). Validation is ``data.val_dataset``, or a stratified ``data.val_fraction`` of
the one file given, whose stratified ``data.test_fraction`` is then held out as a test split
that training never sees. A text longer than ``model.block_size`` tokens keeps its first
block_size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..tokenizers import Tokenizer
from . import progress
from .batch import Batch, TextBatch
from .cache import trained_tokenizer
from .files import DataError
from .labels import Row, load_labelled
from .splits import stratified_split

SPLIT_SEED = "proselab-labels"  # the stratified split of one labelled file
ENCODE_CHUNK = 4096  # texts per encode_batch call


@dataclass
class Labelled:
    """One split: each text's token ids and label id."""

    ids: list[list[int]]  # token ids, at most block_size
    labels: torch.Tensor  # (N,) label ids
    rows: list[Row]  # the texts as read, with their file:line

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class LabelData:
    tokenizer: Tokenizer
    label_names: list[str]  # id -> label
    train: Labelled
    val: Labelled
    test: Labelled  # the held-out part of one file (empty with data.val_dataset)
    unknown: int  # tokens that fell back to unk
    truncated: int  # texts longer than block_size tokens, cut
    skipped: int  # bad rows skipped (data.bad_lines=skip), and val rows whose label training never saw
    format = "labels"  # the data.format it holds

    def sample(self, split: str, rows: int, generator: torch.Generator) -> torch.Tensor:
        """Random text indices (rows,) in ``split``."""
        return torch.randint(len(getattr(self, split)), (rows,), generator=generator)

    def batch(self, split: str, index: torch.Tensor) -> Batch:
        """Texts ``index`` padded on the right, and their label ids (B,)."""
        part: Labelled = getattr(self, split)
        rows = index.tolist()
        return collate_texts([part.ids[i] for i in rows], part.labels[index])

    def batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """Every text of the split once, in length order (little padding)."""
        part: Labelled = getattr(self, split)
        order = sorted(range(len(part)), key=lambda i: len(part.ids[i]))
        for s in range(0, len(order), batch_size):
            yield self.batch(split, torch.tensor(order[s : s + batch_size]))

    def num_batches(self, split: str, batch_size: int) -> int:
        """How many batches ``batches`` yields."""
        return -(-len(getattr(self, split)) // batch_size)

    def class_counts(self) -> list[int]:
        """Training texts per label id."""
        counts = Counter(self.train.labels.tolist())
        return [counts[i] for i in range(len(self.label_names))]


def collate_texts(ids: list[list[int]], labels: torch.Tensor) -> Batch:
    """Token ids padded on the right with id 0 and a mask of the real ones, and the label ids."""
    T = max(map(len, ids))
    idx = torch.zeros(len(ids), T, dtype=torch.long)
    mask = torch.zeros(len(ids), T, dtype=torch.bool)
    for r, row in enumerate(ids):
        idx[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = True
    return Batch(TextBatch(idx, mask), labels, sum(map(len, ids)))


def _splits(dcfg) -> tuple[list[Row], list[Row], list[Row], int]:
    """Train, val and test rows, and the bad rows skipped."""
    columns = (dcfg.text_column, dcfg.label_column)
    rows, skipped = load_labelled(dcfg.dataset, *columns, dcfg.bad_lines, dcfg.encoding_errors)
    found = sorted({r.label for r in rows})
    if len(found) < 2:
        raise DataError(f"the training texts have one label only ('{found[0]}'); a classifier needs two or more")
    if dcfg.val_dataset:
        val, val_skipped = load_labelled(dcfg.val_dataset, *columns, dcfg.bad_lines, dcfg.encoding_errors)
        return rows, val, [], skipped + val_skipped
    parts = stratified_split([r.label for r in rows], (dcfg.val_fraction, dcfg.test_fraction), SPLIT_SEED)
    train, val, test = ([rows[i] for i in part] for part in parts)
    if not val:
        raise DataError(f"{len(rows)} labelled texts: too few for a validation split; add texts, raise "
                        "data.val_fraction or give data.val_dataset")
    return train, val, test, skipped


def known_labels(rows: list[Row], names: list[str], bad_lines: str, split: str) -> tuple[list[Row], int]:
    """The rows whose label is one of ``names``; others are an error, or left out and counted."""
    known = set(names)
    unseen = [r for r in rows if r.label not in known]
    if unseen and bad_lines == "error":
        r = unseen[0]
        raise DataError(f"{r.where}: label '{r.label}' is not one the classifier knows ({', '.join(names)}); "
                        f"{len(unseen)} {split} rows have such labels; data.bad_lines=skip (eval: --bad-lines skip) leaves them out")
    return [r for r in rows if r.label in known], len(unseen)


def _encode(rows: list[Row], tokenizer: Tokenizer, names: list[str], block_size: int) -> tuple[Labelled, int, int]:
    """A split as token ids and label ids; how many texts were cut and how many tokens were unknown."""
    ids: list[list[int]] = []
    with progress.bar("tokenizing labelled texts", len(rows), "text") as bar:
        for s in range(0, len(rows), ENCODE_CHUNK):  # in chunks, so the bar moves
            ids += tokenizer.encode_batch([r.text for r in rows[s : s + ENCODE_CHUNK]])
            bar.update(min(ENCODE_CHUNK, len(rows) - s))
    index = {name: i for i, name in enumerate(names)}
    cut = sum(len(x) > block_size for x in ids)
    unknown = sum(tokenizer.count_unknown(x) for x in ids)
    ids = [x[:block_size] or [tokenizer.unk_id or 0] for x in ids]  # a text of only unencodable bytes keeps a token
    return Labelled(ids, torch.tensor([index[r.label] for r in rows], dtype=torch.long), rows), cut, unknown


def prepare_labels(dcfg, block_size: int, tokenizer: Tokenizer | None = None,
                   labels: list[str] | None = None) -> LabelData:
    """Load, split and tokenize the labelled texts of ``dcfg`` (a DataConfig).

    Args:
        block_size: the longest text in tokens (longer ones keep their first block_size).
        tokenizer: the tokenizer to use; None trains one (``data.tokenizer``) on the training texts.
        labels: the label names in id order (a classifier being fine-tuned or resumed); None
            takes the training split's labels, sorted.

    Raises:
        DataError: one class only, a split left empty, or (with data.bad_lines=error) a label
            the classifier does not know.
    """
    train, val, test, skipped = _splits(dcfg)
    names = list(labels) if labels else sorted({r.label for r in train})
    train, n_train = known_labels(train, names, dcfg.bad_lines, "training")
    val, n_val = known_labels(val, names, dcfg.bad_lines, "validation")
    test, n_test = known_labels(test, names, dcfg.bad_lines, "test")
    if not train or not val:
        raise DataError(f"no {'training' if not train else 'validation'} text is left with a known label")
    if tokenizer is None:
        tokenizer = trained_tokenizer(dcfg.tokenizer, dcfg.vocab_size, [(r.where, r.text) for r in train],
                                      tweet_placeholders=dcfg.tweet_placeholders)
    encoded = [_encode(part, tokenizer, names, block_size) for part in (train, val, test)]
    return LabelData(tokenizer, names, *(e[0] for e in encoded), sum(e[2] for e in encoded),
                     sum(e[1] for e in encoded), skipped + n_train + n_val + n_test)
