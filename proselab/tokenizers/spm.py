"""Marian's tokenizers: a sentencepiece model cuts the text, a tokenizer.json numbers the pieces."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from ..atomic import atomic_write_bytes
from .base import Tokenizer, TokenizerError, check_unicode

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
            check_unicode(plain)
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
