"""Tokenizers: characters, words, byte-level BPE, GPT-2's and sentencepiece's, each a Hugging Face tokenizer.json.

Every kind is a ``tokenizers.Tokenizer`` underneath, so a run saves one file that
``tokenizers.Tokenizer.from_file`` and ``transformers.PreTrainedTokenizerFast`` load as is
(Marian's also keeps its sentencepiece model beside it: see the end of this docstring).
The file has no room for extra fields (the HF loader rejects unknown keys), so the kind is
read back from the tokenizer's structure:

- char: a BPE model without merges or pre-tokenizer (each character is its own token)
- word: a WordLevel model
- bpe:  a BPE model with a byte-level pre-tokenizer
- gpt2: the same, holding GPT-2's exact vocabulary
- unigram: a sentencepiece Unigram model (T5's, Marian's), imported by ``interop.hf_tokenizers``

Marian's tokenizers encode through the ``sentencepiece`` library itself, as ``transformers``
does, so that the ids are exact: a ``SentencePieceTokenizer`` keeps its sentencepiece model
beside the tokenizer.json (``tokenizer.spm``), which then holds the vocabulary and ids.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
import re
import string
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from .atomic import atomic_write_bytes, atomic_write_text

KINDS = ("char", "word", "bpe", "gpt2", "unigram")
TRAINABLE = ("char", "word", "bpe")
UNK = "<unk>"
EOT = "<|endoftext|>"  # GPT-2's document separator; bos and eos of word, bpe and gpt2

# A word with its one leading space (like GPT-2's " the"), a number, one punctuation mark,
# or one whitespace character; extra spaces, tabs and newlines are tokens of their own.
WORD_PATTERN = r" ?\p{L}[\p{L}\p{M}]*(?:['’][\p{L}\p{M}]+)*| ?\p{N}+| ?[^\s\p{L}\p{N}]|\s"

# data.tweet_placeholders: TweetEval's preprocessing, inside the tokenizer so that every text it
# reads (training, eval, classify, the server) is treated alike. Neither pattern spans a newline.
TWEET_URL, TWEET_USER = r"(?:https?://|www\.)\S+", r"@\w+"

# Names looked up among the added tokens, first match wins.
_SPECIAL_NAMES = {
    "bos": (EOT, "<s>", "<bos>", "<|begin_of_text|>"),
    "eos": (EOT, "</s>", "<eos>", "<|end_of_text|>"),
    "pad": ("<pad>", "<|pad|>"),
    "unk": (UNK, "<|unk|>"),
}
# Ids of a few GPT-2 tokens: a byte-level BPE holding all of them is GPT-2's vocabulary.
_GPT2_IDS = {EOT: 50256, "Hello": 15496, "Ġworld": 995, "Ġthe": 262}
_CHUNK = 1 << 16  # characters per piece when encoding long texts in parallel
_SAFE_BEFORE_NEWLINE = frozenset(string.punctuation)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class TokenizerError(ValueError):
    """A tokenizer spec, file or training input supplied by the user is wrong."""


def _prompt_prefix(hf: HFTokenizer) -> list[int]:
    """The ids ``hf``'s post-processor adds before a single text (a template such as "<s> $A")."""
    plain = hf.encode("a", add_special_tokens=False).ids
    full = hf.encode("a", add_special_tokens=True).ids
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return full[:k]
    return []


class Tokenizer:
    """A Hugging Face tokenizer with proselab's kind and special token ids.

    Attributes:
        hf: the underlying ``tokenizers.Tokenizer``.
        kind: char, word, bpe or gpt2.
        vocab_size: number of ids, special tokens included.
        bos_id, eos_id, pad_id, unk_id: special token ids, or None when the kind has none.
        prompt_prefix: the ids the tokenizer's own post-processor puts before a text (a Llama
            checkpoint's ``<s>``; [] for GPT-2's and for the tokenizers proselab trains).
    """

    def __init__(self, hf: HFTokenizer, kind: str | None = None):
        spec = json.loads(hf.to_str())
        self.hf = hf
        self.kind = kind or _infer_kind(spec)
        if self.kind not in KINDS:
            raise TokenizerError(f"unknown tokenizer kind '{self.kind}'; use one of {', '.join(KINDS)}")
        self.vocab_size = hf.get_vocab_size(with_added_tokens=True)
        added = {t.content: i for i, t in hf.get_added_tokens_decoder().items()}
        ids = {role: next((added[n] for n in names if n in added), None) for role, names in _SPECIAL_NAMES.items()}
        self.bos_id: int | None = ids["bos"]
        self.eos_id: int | None = ids["eos"]
        self.pad_id: int | None = ids["pad"]
        self.unk_id: int | None = ids["unk"]
        self._chunkable = _splits_safely(spec)
        self.prompt_prefix = _prompt_prefix(hf)

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"

    def with_prefix(self, ids: list[int]) -> list[int]:
        """A prompt's ``ids`` after ``prompt_prefix`` (unless they start with it), as generation reads it."""
        prefix = self.prompt_prefix
        return ids if ids[: len(prefix)] == prefix else prefix + ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no special tokens are added."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, encoded in parallel."""
        pieces = [self._pieces(t) for t in texts]
        flat = [p for ps in pieces for p in ps]
        encode = getattr(self.hf, "encode_batch_fast", self.hf.encode_batch)  # fast: no offsets
        try:
            encoded = iter(encode(flat, add_special_tokens=False))
        except TypeError:
            _check_unicode(flat)
            raise
        out = []
        for ps in pieces:
            ids: list[int] = []
            for _ in ps:
                ids.extend(next(encoded).ids)
            out.append(ids)
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (a list, numpy array or 1-D tensor); special tokens dropped by default."""
        ids = ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.hf.id_to_token(int(token_id))

    def count_unknown(self, ids: Sequence[int]) -> int:
        """How many of ``ids`` are the unknown token (always 0 for byte-level kinds)."""
        if self.unk_id is None:
            return 0
        if isinstance(ids, list):
            return ids.count(self.unk_id)
        return int(np.count_nonzero(np.asarray(ids) == self.unk_id))

    def unknown_tokens(self, text: str) -> Counter[str]:
        """The pieces of ``text`` that encode to the unknown token, with their counts.

        For char these are the characters missing from the vocabulary, for word the words.
        """
        found: Counter[str] = Counter()
        if self.unk_id is None:
            return found
        for piece in self._pieces(text):
            enc = self.hf.encode(piece, add_special_tokens=False)
            for i, (a, b) in zip(enc.ids, enc.offsets):
                if i == self.unk_id:
                    found[piece[a:b]] += 1
        return found

    def special_tokens(self) -> dict[str, str]:
        """``{"bos_token": "<|endoftext|>", ...}`` for the kinds' special tokens, as transformers names them."""
        out = {}
        for role in _SPECIAL_NAMES:
            i = getattr(self, f"{role}_id")
            if i is not None:
                out[f"{role}_token"] = self.hf.id_to_token(i)
        return out

    def save(self, path: str | Path) -> Path:
        """Write ``tokenizer.json`` atomically; ``path`` is a directory or a ``.json`` file. Returns the file."""
        path = Path(path).expanduser()
        target = path if path.suffix == ".json" else path / "tokenizer.json"
        atomic_write_text(target, self.hf.to_str(pretty=True))
        return target

    def fingerprint(self) -> str:
        """A sha256 hex digest of the kind and the serialized tokenizer: a cache key for token streams."""
        return hashlib.sha256(f"{self.kind}\n{self.hf.to_str()}".encode()).hexdigest()

    def with_hf(self, hf: HFTokenizer) -> Tokenizer:
        """A tokenizer of the same kind over ``hf`` (a copy of ``self.hf`` with tokens added)."""
        return Tokenizer(hf, self.kind)

    def _pieces(self, text: str) -> list[str]:
        return _split_long(text) if self._chunkable else [text]


SPM_SUFFIX = ".spm"  # tokenizer.json's sentencepiece model, beside it: tokenizer.spm
_LANGUAGE_CODE = re.compile(r">>.*?<<", re.S)  # Marian's target-language token opening a source: >>fr<<


class SentencePieceTokenizer(Tokenizer):
    """A tokenizer whose sentencepiece model cuts the text into pieces and whose ``hf`` vocabulary
    numbers them: Marian's, where vocab.json numbers the pieces of two sentencepiece models (one
    per side) and ``transformers`` encodes through the ``sentencepiece`` library. Encoding follows
    ``MarianTokenizer``: the text is split at added tokens, a ``>>xx<<`` language code opening a
    chunk is one token, and a piece outside the vocabulary is ``<unk>``.

    Saved as the tokenizer.json of ``hf`` (a Unigram model with the sentencepiece scores, which
    Hugging Face tools load) with the sentencepiece model beside it (``tokenizer.spm``).
    """

    def __init__(self, hf: HFTokenizer, model_proto: bytes, kind: str | None = None):
        import sentencepiece  # only Marian's tokenizers need it

        super().__init__(hf, kind)
        try:
            self.spm = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        except (RuntimeError, TypeError) as e:
            raise TokenizerError(f"not a sentencepiece model: {str(e).splitlines()[0] if str(e) else e}") from None
        if self.unk_id is None:
            raise TokenizerError("a sentencepiece tokenizer needs an <unk> token among its special tokens")
        self.model_proto = model_proto
        self._vocab = hf.get_vocab(with_added_tokens=True)
        self._tokens = {i: t for t, i in self._vocab.items()}
        added = {t.content: t.special for t in hf.get_added_tokens_decoder().values()}
        self._special_ids = {self._vocab[t] for t, special in added.items() if special}
        names = sorted(added, key=len, reverse=True)  # the longest added token wins, as transformers' trie
        self._added = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None
        self._chunkable = False

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        chunks = [self._chunks(t) for t in texts]
        plain = [c for cs in chunks for c in cs if not isinstance(c, int)]
        try:
            pieces = iter(self.spm.encode(plain, out_type=str))
        except (TypeError, RuntimeError, UnicodeError):
            _check_unicode(plain)
            raise
        out = []
        for cs in chunks:
            ids: list[int] = []
            for c in cs:
                ids.extend([c] if isinstance(c, int) else (self._vocab.get(p, self.unk_id) for p in next(pieces)))
            out.append(ids)
        return out

    def _chunks(self, text: str) -> list[str | int]:
        """``text`` cut at added tokens (their ids) and language codes (ids), the rest as strings."""
        parts = self._added.split(text) if self._added else [text]
        out: list[str | int] = []
        for k, part in enumerate(parts):
            if k % 2:  # an added token
                out.append(self._vocab[part])
                continue
            code = _LANGUAGE_CODE.match(part)
            if code:
                out.append(self._vocab.get(code.group(), self.unk_id))
                part = part[code.end():]
            if part:
                out.append(part)
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]
        text, run = "", []
        for i in ids:
            if i in self._special_ids:
                if not skip_special_tokens:  # as MarianTokenizer: the token and a space after it
                    text += self.spm.decode_pieces(run) + self._tokens[i] + " "
                    run = []
            elif i in self._tokens:
                run.append(self._tokens[i])
        return (text + self.spm.decode_pieces(run)).replace("\u2581", " ").strip()

    def unknown_tokens(self, text: str) -> Counter[str]:
        found: Counter[str] = Counter()
        plain = [c for c in self._chunks(text) if not isinstance(c, int)]
        for pieces in self.spm.encode(plain, out_type=str):  # an unknown character's piece is its text
            found.update(p.replace("\u2581", " ").strip() or p for p in pieces
                         if self._vocab.get(p, self.unk_id) == self.unk_id)
        return found

    def save(self, path: str | Path) -> Path:
        path = Path(path).expanduser()
        target = path if path.suffix == ".json" else path / "tokenizer.json"
        atomic_write_bytes(target.with_suffix(SPM_SUFFIX), self.model_proto)  # first: a tokenizer.json is complete
        return super().save(target)

    def fingerprint(self) -> str:
        model = hashlib.sha256(self.model_proto).hexdigest()
        return hashlib.sha256(f"{super().fingerprint()}\n{model}".encode()).hexdigest()

    def with_hf(self, hf: HFTokenizer) -> Tokenizer:
        return SentencePieceTokenizer(hf, self.model_proto, self.kind)


def _check_unicode(texts: list[str]) -> None:
    """TokenizerError for a text holding a lone surrogate, which the Rust tokenizer refuses with a
    TypeError: Python reads bytes that are not UTF-8 as such (surrogateescape: stdin, argv)."""
    for text in texts:
        bad = _LONE_SURROGATE.search(text) if isinstance(text, str) else None
        if bad:
            raise TokenizerError(f"the text is not valid Unicode: it holds a lone surrogate (U+{ord(bad.group()):04X} "
                                 f"at character {bad.start()}), as bytes that are not UTF-8 become; give UTF-8 text")


def _split_long(text: str) -> list[str]:
    """Cut a long text before newlines that follow a letter, digit or ASCII punctuation mark.

    No pre-tokenizer of ours (none for char, WORD_PATTERN, GPT-2's regex) puts such a character
    and the newline after it in one piece, so the pieces' ids concatenated are exactly the
    whole text's ids; encoding pieces runs in parallel and skips the long single-encode path.
    """
    pieces, start = [], 0
    while len(text) - start > _CHUNK:
        cut = text.find("\n", start + _CHUNK)
        while cut != -1 and not (text[cut - 1].isalnum() or text[cut - 1] in _SAFE_BEFORE_NEWLINE):
            cut = text.find("\n", cut + 1)
        if cut == -1:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _splits_safely(spec: dict) -> bool:
    """Whether _split_long's cuts leave this tokenizer's ids unchanged (see its docstring)."""
    pre, model = spec.get("pre_tokenizer"), spec.get("model") or {}
    safe_pre = (
        (pre is None and model.get("type") == "BPE" and not model.get("merges"))  # char: nothing spans two chars
        or (pre.get("type") == "ByteLevel" and pre.get("use_regex", True))
        or (pre.get("type") == "Split" and pre.get("pattern") == {"Regex": WORD_PATTERN})
    )
    newline_tokens = any("\n" in t["content"] for t in spec.get("added_tokens") or [])
    return safe_pre and spec.get("normalizer") in (None, _tweet_spec()) and not newline_tokens


def tweet_normalizer() -> normalizers.Normalizer:
    """A link becomes ``http`` and an @mention ``@user`` (TweetEval's placeholders)."""
    return normalizers.Sequence([normalizers.Replace(Regex(TWEET_URL), "http"),
                                 normalizers.Replace(Regex(TWEET_USER), "@user")])


@functools.cache
def _tweet_spec() -> dict:
    """tweet_normalizer() as a tokenizer.json holds it (read, never changed)."""
    hf = HFTokenizer(models.BPE())
    hf.normalizer = tweet_normalizer()
    return json.loads(hf.to_str())["normalizer"]


def _infer_kind(spec: dict) -> str:
    model = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    mtype = model.get("type") or ("BPE" if "merges" in model else None)
    if mtype == "WordLevel":
        return "word"
    if mtype == "Unigram":
        return "unigram"
    if mtype == "BPE":
        if not pre and not model.get("merges"):
            return "char"
        vocab = model.get("vocab") or {}
        return "gpt2" if all(vocab.get(t) == i for t, i in _GPT2_IDS.items()) else "bpe"
    raise TokenizerError(
        f"unsupported tokenizer: a {mtype or 'unknown'} model; proselab handles char, word, bpe, gpt2 and "
        "sentencepiece unigram tokenizers"
    )


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
        yield from _split_long(text)


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


def gpt2_tokenizer(path: str | Path) -> Tokenizer:
    """GPT-2's byte-level BPE from a directory holding ``vocab.json`` and ``merges.txt`` (or a tokenizer.json).

    Matches GPT-2 exactly: no prefix space, no post-processing, ``<|endoftext|>`` = 50256 is bos and eos.
    """
    d = Path(path).expanduser()
    if d.is_file():
        d = d.parent
    if (d / "tokenizer.json").is_file():
        return load_tokenizer(d / "tokenizer.json", kind="gpt2")
    vocab, merges = d / "vocab.json", d / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise TokenizerError(f"'{d}' must hold GPT-2's vocab.json and merges.txt (or a tokenizer.json)")
    try:
        bpe = models.BPE.from_file(str(vocab), str(merges))
    except Exception as e:  # the Rust loader raises a bare Exception
        raise TokenizerError(f"cannot read GPT-2 tokenizer files in '{d}': {e}") from None
    hf = HFTokenizer(bpe)
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    if hf.token_to_id(EOT) is not None:
        hf.add_special_tokens([EOT])
    return Tokenizer(hf, "gpt2")


def load_tokenizer(path: str | Path, kind: str | None = None) -> Tokenizer:
    """Load a tokenizer.json file, a directory holding one, or a GPT-2 style vocab.json + merges.txt directory.

    Args:
        path: the file or directory.
        kind: overrides the kind read from the tokenizer's structure.
    """
    if kind is not None and kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind '{kind}'; use one of {', '.join(KINDS)}")
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "tokenizer.json").is_file():
            p = p / "tokenizer.json"
        elif (p / "vocab.json").is_file() and (p / "merges.txt").is_file():
            tok = gpt2_tokenizer(p)
            tok.kind = kind or tok.kind
            return tok
        else:
            raise TokenizerError(f"directory '{p}' holds neither a tokenizer.json nor vocab.json + merges.txt")
    elif not p.is_file():
        raise TokenizerError(f"tokenizer file '{p}' does not exist")
    elif p.name in ("vocab.json", "merges.txt"):
        return load_tokenizer(p.parent, kind)
    text, _ = _read_spec(p)
    try:
        hf = HFTokenizer.from_str(text)
    except Exception as e:  # schema errors, user input
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TokenizerError(f"'{p}' is not a Hugging Face tokenizer.json: {reason}") from None
    model = p.with_suffix(SPM_SUFFIX)
    if model.is_file():
        try:
            return SentencePieceTokenizer(hf, model.read_bytes(), kind)
        except TokenizerError as e:
            raise TokenizerError(f"{model}: {e}") from None
    return Tokenizer(hf, kind)


def vocab_span(path: str | Path) -> int:
    """How many ids the tokenizer.json at ``path`` spans (its largest id + 1), read from the JSON
    alone: a check against a model's vocab_size that takes a second where building a tokenizer
    of millions of tokens takes many."""
    _, spec = _read_spec(Path(path))
    vocab = spec["model"].get("vocab") or {}
    ids = vocab.values() if isinstance(vocab, dict) else range(len(vocab))  # Unigram: a list of [piece, score]
    added = [t.get("id") for t in spec.get("added_tokens") or [] if isinstance(t, dict)]
    return 1 + max((i for i in (*ids, *added) if isinstance(i, int)), default=-1)


def _read_spec(p: Path) -> tuple[str, dict]:
    """A tokenizer.json's text and parsed JSON; TokenizerError if it is not JSON or has no model."""
    try:
        text = p.read_text(encoding="utf-8")
        spec = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"'{p}' is not a Hugging Face tokenizer.json: not UTF-8 JSON ({e})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise TokenizerError(f"'{p}' is not a Hugging Face tokenizer.json: it has no 'model' section")
    return text, spec


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
