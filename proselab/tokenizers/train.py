"""New tokenizers trained on a corpus (char, word, byte-level BPE), and the config's tokenizer spec."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from .base import EOT, KINDS, TRAINABLE, UNK, WORD_PATTERN, Tokenizer, TokenizerError, split_long, tweet_normalizer
from .files import load_tokenizer


def _check_kind(kind: str) -> None:
    if kind == "gpt2":
        raise TokenizerError(
            "the gpt2 tokenizer is not trained: pass the directory holding GPT-2's vocab.json and merges.txt "
            "instead, e.g. --data.tokenizer=path/to/gpt2-tokenizer"
        )
    if kind not in TRAINABLE:
        match = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f"; did you mean '{match[0]}'?" if match else ""
        raise TokenizerError(f"unknown tokenizer kind '{kind}': use char, word, bpe or gpt2{hint}")


def _counted(texts: Iterable[str], seen: list[int]) -> Iterator[str]:
    """Yield safely cut pieces of ``texts`` (parallel training) while counting characters in ``seen``."""
    for text in texts:
        seen[0] += len(text)
        yield from split_long(text)


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int = 8000,
                    tweet_placeholders: bool = False) -> Tokenizer:
    """Train a char, word or byte-level BPE tokenizer on a corpus.

    Args:
        kind: char (every distinct character, sorted by code point, then ``<unk>``), word (the
            ``vocab_size - 2`` most frequent words plus ``<unk>`` and ``<|endoftext|>``) or bpe
            (byte-level BPE with ``<|endoftext|>`` as bos and eos).
        texts: the corpus, one string per document.
        vocab_size: total vocabulary size for word and bpe, specials included; char ignores it.
        tweet_placeholders: the tokenizer replaces links with ``http`` and @mentions with
            ``@user`` in every text before it splits it (``tweet_normalizer``).
    """
    _check_kind(kind)
    normalizer = tweet_normalizer() if tweet_placeholders else None
    if isinstance(texts, str):
        texts = [texts]
    seen = [0]
    if kind == "char":
        chars: set[str] = set()
        for text in texts:
            chars.update(text if normalizer is None else normalizer.normalize_str(text))
            seen[0] += len(text)
        # Sorted characters get ids 0..n-1 exactly as nanoGPT's char prepare.py; <unk> goes last.
        vocab = {c: i for i, c in enumerate(sorted(chars))}
        vocab[UNK] = len(vocab)
        # BPE without merges maps each character to its id; encoding is ~4x faster than WordLevel
        # behind a split-every-character pre-tokenizer, with the same result.
        hf = HFTokenizer(models.BPE(vocab, [], unk_token=UNK, fuse_unk=False))
        hf.normalizer = normalizer
        hf.decoder = decoders.Fuse()
        hf.add_special_tokens([UNK])
    elif kind == "word":
        if vocab_size < 3:
            raise TokenizerError(
                f"data.vocab_size must be >= 3 for a word tokenizer (2 specials + words), got {vocab_size}"
            )
        hf = HFTokenizer(models.WordLevel(unk_token=UNK))
        hf.normalizer = normalizer
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
        hf.decoder = decoders.Fuse()
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=[UNK, EOT], show_progress=False)
        hf.train_from_iterator(_counted(texts, seen), trainer)
    else:
        if vocab_size < 257:
            raise TokenizerError(
                f"data.vocab_size must be >= 257 for a bpe tokenizer (256 bytes + <|endoftext|>), got {vocab_size}"
            )
        hf = HFTokenizer(models.BPE())
        hf.normalizer = normalizer
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, so nothing is ever unknown
            show_progress=False,
        )
        hf.train_from_iterator(_counted(texts, seen), trainer)
    if not seen[0]:
        raise TokenizerError(f"cannot train a {kind} tokenizer on an empty corpus; check data.dataset")
    return Tokenizer(hf, kind)


def get_tokenizer(spec: str, texts: Iterable[str] = (), vocab_size: int = 8000,
                  tweet_placeholders: bool = False) -> Tokenizer:
    """The tokenizer a config names: a kind to train on ``texts``, or a path to load.

    Args:
        spec: char, word or bpe (trained on ``texts``), or a tokenizer.json file or directory
            (GPT-2's vocab.json + merges.txt directory for gpt2).
        texts: the training corpus, one string per document.
        vocab_size: vocabulary size for word and bpe.
        tweet_placeholders: a trained tokenizer's ``train_tokenizer`` option.
    """
    if spec in TRAINABLE:
        return train_tokenizer(spec, texts, vocab_size, tweet_placeholders)
    path = Path(spec).expanduser()
    if spec != "gpt2" and (path.exists() or "/" in spec or os.sep in spec or spec.endswith(".json")):
        return load_tokenizer(path)
    _check_kind(spec)  # raises for gpt2 (needs its files) and for unknown kinds
    raise AssertionError(f"unreachable: {spec!r} passed _check_kind")
