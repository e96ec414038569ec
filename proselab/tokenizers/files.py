"""Tokenizers read from files: a tokenizer.json (with its sentencepiece model beside it), or GPT-2's
vocab.json + merges.txt."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from .base import EOT, KINDS, Tokenizer, TokenizerError
from .spm import SPM_SUFFIX, SentencePieceTokenizer


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
