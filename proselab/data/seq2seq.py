"""Sentence-pair data for encoder-decoders: tokenized pairs, length filters, bucketed batches.

Pairs come from TSV or JSONL files or a built-in pair dataset (``pairs.load_pairs``). Each
side is tokenized by its own tokenizer, or both by one joint tokenizer trained on both sides
(``data.joint_vocab``). Sources end with the end-of-text token; targets are fed to the
decoder as ``bos + target`` and predicted as ``target + eos`` (bos and eos are both the
tokenizer's end-of-text token, as in GPT-2). A model imported from Hugging Face (``model.hf_type``)
trains as ``transformers`` does: the decoder starts from its ``model.bos_id`` (Marian's and T5's
<pad>, BART's </s>), and ``model.src_prefix_id`` / ``tgt_prefix_id`` start every source and
target (BART's <s>).

Batches are bucketed by length: ``sample`` takes a run of consecutive pairs from the split
sorted by length, starting at a random place, so a batch pads little and every pair is
equally likely to be drawn. Validation is a separate file (``data.val_dataset``) or the last
``val_fraction`` of the pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..chat import add_special_tokens
from ..tokenizers import EOT, Tokenizer
from . import progress
from .batch import IGNORE_INDEX, Batch, Seq2SeqBatch
from .cache import trained_tokenizer
from .files import DataError
from .pairs import load_pairs


@dataclass
class Pairs:
    """One split: token ids of each side, and the order that sorts the pairs by length."""

    src: list[list[int]]  # source ids + eos
    tgt: list[list[int]]  # target ids (no bos, no eos)
    text: list[tuple[str, str]]  # the pairs as text, for decoded BLEU
    order: np.ndarray  # (N,) pair indices sorted by (target, source) length

    def __len__(self) -> int:
        return len(self.src)


def _pairs(src: list[list[int]], tgt: list[list[int]], text: list[tuple[str, str]]) -> Pairs:
    order = np.lexsort((np.array([len(s) for s in src]), np.array([len(t) for t in tgt])))
    return Pairs(src, tgt, text, order)


@dataclass
class PairData:
    tokenizer: Tokenizer  # the target side's (what generation decodes)
    src_tokenizer: Tokenizer  # the source side's (the same object when joint)
    train: Pairs
    val: Pairs
    unknown: int  # tokens that fell back to unk
    dropped: int  # training pairs left out by data.max_src_len / max_tgt_len
    skipped: int  # malformed lines skipped (data.bad_lines=skip)
    start: int = -1  # the decoder's start token (-1 = the tokenizer's eos)
    tgt_prefix: int = -1  # the token every target starts with (-1 = none)
    format = "pairs"  # the data.format it holds

    def sample(self, split: str, rows: int, generator: torch.Generator) -> torch.Tensor:
        """``rows`` pairs of similar length: a run of the length-sorted split from a random start."""
        pairs: Pairs = getattr(self, split)
        start = int(torch.randint(len(pairs), (1,), generator=generator))
        return torch.from_numpy(pairs.order[(start + np.arange(rows)) % len(pairs)])

    def batch(self, split: str, index: torch.Tensor) -> Batch:
        """Pairs ``index``, padded: the model input, targets (B, T) and the number of target tokens."""
        pairs: Pairs = getattr(self, split)
        rows = index.tolist()
        return collate_pairs([pairs.src[i] for i in rows], [pairs.tgt[i] for i in rows], self.tokenizer.eos_id,
                             self.start, self.tgt_prefix)

    def batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """Every pair of the split once, in length order (little padding)."""
        pairs: Pairs = getattr(self, split)
        for s in range(0, len(pairs), batch_size):
            yield self.batch(split, torch.from_numpy(pairs.order[s : s + batch_size]))

    def num_batches(self, split: str, batch_size: int) -> int:
        """How many batches ``batches`` yields."""
        return -(-len(getattr(self, split)) // batch_size)


def collate_pairs(src: list[list[int]], tgt: list[list[int]], eos: int, start: int = -1, prefix: int = -1) -> Batch:
    """Right-padded source (B, S) with its mask, decoder inputs bos + tgt and targets tgt + eos (B, T).

    ``start`` is the decoder's start token (bos; -1 = ``eos``); a ``prefix`` >= 0 starts every
    target (predicted after bos, BART's <s>)."""
    bos = eos if start < 0 else start
    if prefix >= 0:
        tgt = [[prefix, *t] for t in tgt]
    B, S, T = len(src), max(map(len, src)), max(map(len, tgt)) + 1
    x = torch.zeros(B, S, dtype=torch.long)
    mask = torch.zeros(B, S, dtype=torch.bool)
    tgt_in = torch.zeros(B, T, dtype=torch.long)
    y = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    for r, (s, t) in enumerate(zip(src, tgt)):
        x[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = True
        row = torch.tensor([bos, *t, eos])  # bos + target + eos
        tgt_in[r, : len(t) + 1] = row[:-1]
        y[r, : len(t) + 1] = row[1:]
    return Batch(Seq2SeqBatch(x, mask, tgt_in), y, sum(len(t) + 1 for t in tgt))


def encoder_ids(ids: list[int], truncate: int, eos_id: int, prefix: int = -1) -> list[int]:
    """A source's token ids as the encoder reads them: ``prefix`` (the run's
    ``model.src_prefix_id``, when >= 0), the first ``truncate`` (all when 0, the run's
    ``data.truncate_src``), then eos."""
    return [prefix] * (prefix >= 0) + list(ids[:truncate] if truncate else ids) + [eos_id]


def source_ids(tokenizer: Tokenizer, text: str, truncate: int = 0, prefix: int = -1) -> list[int]:
    """A source text's ids as the encoder reads them (``encoder_ids``)."""
    return encoder_ids(tokenizer.encode(text), truncate, tokenizer.eos_id, prefix)


def source_batch(tokenizer: Tokenizer, texts: list[str], max_new_tokens: int | None = None,
                 truncate: int = 0, prefix: int = -1) -> Seq2SeqBatch:
    """Source texts as a Seq2SeqBatch for decoding (each as in training, ``encoder_ids``)."""
    ids = [source_ids(tokenizer, t, truncate, prefix) for t in texts]
    inputs = collate_pairs(ids, [[] for _ in ids], tokenizer.eos_id).inputs
    return Seq2SeqBatch(inputs.src, inputs.mask, None, max_new_tokens)


def _with_eot(tokenizer: Tokenizer) -> Tokenizer:
    """A char tokenizer has no end-of-text token; seq2seq needs one for bos and eos."""
    return tokenizer if tokenizer.eos_id is not None else add_special_tokens(tokenizer, [EOT])


def _split(dcfg) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
    """Train and val pairs, and the malformed lines skipped."""
    pairs, skipped = load_pairs(dcfg.dataset, dcfg.bad_lines)
    if dcfg.val_dataset:
        val_pairs, val_skipped = load_pairs(dcfg.val_dataset, dcfg.bad_lines)
        return pairs, val_pairs, skipped + val_skipped
    n_val = max(1, round(len(pairs) * dcfg.val_fraction))
    if len(pairs) - n_val < 1:
        raise DataError(f"{len(pairs)} pair(s): too few for a train and a val split; add pairs, lower "
                        "data.val_fraction or give data.val_dataset")
    return pairs[:-n_val], pairs[-n_val:], skipped


def _tokenizers(dcfg, pairs, tokenizer: Tokenizer | None, src_tokenizer: Tokenizer | None):
    """The target and source tokenizers: given, or trained on the training pairs."""
    if tokenizer is None:
        def trained_on(texts: list[str]) -> Tokenizer:
            return trained_tokenizer(dcfg.tokenizer, dcfg.vocab_size, [(str(i), text) for i, text in enumerate(texts)],
                                     tweet_placeholders=dcfg.tweet_placeholders)

        if dcfg.joint_vocab:
            tokenizer = trained_on([f"{s}\n{t}" for s, t in pairs])
        else:
            tokenizer = trained_on([t for _, t in pairs])
            src_tokenizer = trained_on([s for s, _ in pairs])
    tokenizer = _with_eot(add_special_tokens(tokenizer, dcfg.special_tokens))
    src_tokenizer = tokenizer if src_tokenizer is None or dcfg.joint_vocab else _with_eot(src_tokenizer)
    return tokenizer, src_tokenizer


ENCODE_CHUNK = 2048  # pairs per encode_batch call: parallel enough, and the bar moves


def _encode_pairs(pairs: list[tuple[str, str]], tokenizer: Tokenizer, src_tokenizer: Tokenizer,
                  split: str) -> tuple[list[list[int]], list[list[int]]]:
    """Each pair's source and target token ids, with a bar (tens of thousands of pairs take seconds)."""
    src: list[list[int]] = []
    tgt: list[list[int]] = []
    with progress.bar(f"tokenizing {split} pairs", len(pairs), "pair") as bar:
        for s in range(0, len(pairs), ENCODE_CHUNK):
            chunk = pairs[s : s + ENCODE_CHUNK]
            src += src_tokenizer.encode_batch([x for x, _ in chunk])
            tgt += tokenizer.encode_batch([y for _, y in chunk])
            bar.update(len(chunk))
    return src, tgt


def prepare_pairs(dcfg, tokenizer: Tokenizer | None = None, src_tokenizer: Tokenizer | None = None,
                  mcfg=None) -> PairData:
    """Load, tokenize, filter and split the sentence pairs of ``dcfg`` (a DataConfig); the
    tokenizers are trained unless given. ``mcfg`` (the ModelConfig) of a model imported from
    Hugging Face sets the decoder's start token and the source and target prefixes.

    Raises:
        DataError: when a split would be empty.
    """
    pairs, val_pairs, skipped = _split(dcfg)
    tokenizer, src_tokenizer = _tokenizers(dcfg, pairs, tokenizer, src_tokenizer)
    src_prefix = mcfg.src_prefix_id if mcfg is not None else -1
    tgt_prefix = mcfg.tgt_prefix_id if mcfg is not None else -1
    extra = 1 + (src_prefix >= 0)  # the tokens encoder_ids adds
    splits, unknown, dropped = [], 0, 0
    for name, split in (("train", pairs), ("val", val_pairs)):
        src, tgt = _encode_pairs(split, tokenizer, src_tokenizer, name)
        src = [encoder_ids(ids, dcfg.truncate_src, src_tokenizer.eos_id, src_prefix) for ids in src]
        unknown += sum(src_tokenizer.count_unknown(s) + tokenizer.count_unknown(t) for s, t in zip(src, tgt))
        if name == "train" and (dcfg.max_src_len or dcfg.max_tgt_len):
            keep = [i for i in range(len(split)) if (not dcfg.max_src_len or len(src[i]) - extra <= dcfg.max_src_len)
                    and (not dcfg.max_tgt_len or len(tgt[i]) <= dcfg.max_tgt_len)]
            dropped = len(split) - len(keep)
            src, tgt, split = [src[i] for i in keep], [tgt[i] for i in keep], [split[i] for i in keep]
        if not split:
            raise DataError(f"no {name} pair is left after the length filters data.max_src_len={dcfg.max_src_len} "
                            f"and data.max_tgt_len={dcfg.max_tgt_len}; raise them (0 = no limit)")
        splits.append(_pairs(src, tgt, list(split)))
    start = mcfg.bos_id if mcfg is not None and mcfg.hf_type else -1
    return PairData(tokenizer, src_tokenizer, splits[0], splits[1], unknown, dropped, skipped, start, tgt_prefix)
