"""The Tokenizer every part of proselab holds: a Hugging Face tokenizer with its kind and special ids."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import string
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Regex, models, normalizers
from tokenizers import Tokenizer as HFTokenizer

from ..atomic import atomic_write_text

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
            check_unicode(flat)
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
        return split_long(text) if self._chunkable else [text]


def check_unicode(texts: list[str]) -> None:
    """TokenizerError for a text holding a lone surrogate, which the Rust tokenizer refuses with a
    TypeError: Python reads bytes that are not UTF-8 as such (surrogateescape: stdin, argv)."""
    for text in texts:
        bad = _LONE_SURROGATE.search(text) if isinstance(text, str) else None
        if bad:
            raise TokenizerError(f"the text is not valid Unicode: it holds a lone surrogate (U+{ord(bad.group()):04X} "
                                 f"at character {bad.start()}), as bytes that are not UTF-8 become; give UTF-8 text")


def split_long(text: str) -> list[str]:
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
    """Whether split_long's cuts leave this tokenizer's ids unchanged (see its docstring)."""
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
