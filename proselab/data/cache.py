"""Tokenized caches under ``cache_dir()``, keyed by content hashes: tokenizers trained on a
corpus, token streams (``tokens/<key>.bin``, a flat uint16/uint32 array read through
``np.memmap``) and tokenized examples (``examples/<key>.*.npy``). Later runs start at once, and a
corpus larger than memory still trains."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ..atomic import atomic_path, atomic_write_text
from ..chat import encode_rows, windows
from ..tokenizers import Tokenizer, get_tokenizer, load_tokenizer
from . import progress
from .builtin import cache_dir

TRAINED_KINDS = ("char", "word", "bpe")  # tokenizer kinds trained on the corpus (others are fixed)


def content_hash(docs: list[tuple[str, str]]) -> str:
    """A SHA-256 of ``(name, text)`` documents, names included."""
    h = hashlib.sha256()
    for name, text in docs:
        h.update(name.encode("utf-8", "surrogatepass") + b"\0")
        h.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def trained_tokenizer(kind: str, vocab_size: int, docs: list[tuple[str, str]], content: str | None = None,
                      tweet_placeholders: bool = False) -> Tokenizer:
    """A tokenizer of ``kind`` (data.tokenizer) trained on ``docs``, or reused from the cache."""
    if kind not in TRAINED_KINDS:
        return get_tokenizer(kind, [t for _, t in docs], vocab_size)
    content = content or content_hash(docs)
    size = "" if kind == "char" else f"-{vocab_size}"
    tweets = "-tweets" if tweet_placeholders else ""
    path = cache_dir() / "tokenizers" / f"{kind}{size}{tweets}-{content[:32]}.json"
    if path.is_file():
        return load_tokenizer(path)
    chars = sum(len(t) for _, t in docs)
    what = "a char tokenizer" if kind == "char" else f"a {kind} tokenizer of {vocab_size:,} tokens"
    with progress.working(f"training {what} on {progress.size(chars)}"):  # one call into Rust: no count
        tok = get_tokenizer(kind, [t for _, t in docs], vocab_size, tweet_placeholders)
    tok.save(path)
    return tok


def dtype_for(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every token id."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def tokenize_to_cache(docs: list[tuple[str, str]], tokenizer: Tokenizer, content: str | None = None) -> tuple[np.ndarray, int]:
    """Tokenize documents into the memmap cache (once) and return (ids, unknown count).

    Documents are joined with the tokenizer's eos token where it has one, as GPT-2 was trained.
    """
    content = content or content_hash(docs)
    key = hashlib.sha256(f"{content}:{tokenizer.fingerprint()}".encode()).hexdigest()[:40]
    path = cache_dir() / "tokens" / f"{key}.bin"
    meta_path = path.with_suffix(".json")
    dtype = dtype_for(tokenizer.vocab_size)
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return np.memmap(path, dtype=dtype, mode="r", shape=(meta["n_tokens"],)), meta["unknown"]
    path.parent.mkdir(parents=True, exist_ok=True)
    n_tokens = unknown = 0
    total = sum(len(text) for _, text in docs)
    what = docs[0][0] if len(docs) == 1 else f"{len(docs):,} documents"
    with atomic_path(path) as tmp, open(tmp, "wb") as f, progress.bar(f"tokenizing {what}", total, "char") as bar:
        for _, text in docs:
            ids = tokenizer.encode(text)
            if tokenizer.eos_id is not None:
                ids.append(tokenizer.eos_id)
            unknown += tokenizer.count_unknown(ids)
            f.write(np.asarray(ids, dtype=dtype).tobytes())
            n_tokens += len(ids)
            bar.update(len(text))
    atomic_write_text(meta_path, json.dumps({"n_tokens": n_tokens, "unknown": unknown, "dtype": dtype.name}))
    if n_tokens == 0:
        return np.zeros(0, dtype=dtype), 0
    return np.memmap(path, dtype=dtype, mode="r", shape=(n_tokens,)), unknown


def examples_to_cache(examples: list[dict], tokenizer: Tokenizer, template: str, content: str,
                      block_size: int) -> tuple[np.ndarray, ...]:
    """Tokenize examples into ``<cache>/examples/<key>.*.npy`` (once).

    A conversation longer than ``block_size + 1`` tokens becomes several rows, cut at message
    starts (``chat.windows``); in a template that rewrites earlier turns, one row per reply
    (``chat.encode_rows``). Returns ids, trained, offsets (one per row) and origin (the
    example each row comes from), and the unknown-token count.
    """
    key = hashlib.sha256(f"{content}:{template}:{block_size}:{tokenizer.fingerprint()}".encode()).hexdigest()[:40]
    base = cache_dir() / "examples" / key
    names = ("ids", "trained", "offsets", "origin")
    paths = {name: base.with_suffix(f".{name}.npy") for name in names}
    meta_path = base.with_suffix(".json")
    if meta_path.is_file() and all(p.is_file() for p in paths.values()):
        arrays = [np.load(paths[n], mmap_mode="r") for n in names]
        return (*arrays, json.loads(meta_path.read_text())["unknown"])
    ids: list[int] = []
    trained: list[bool] = []
    offsets, origin = [0], []
    for n, ex in enumerate(progress.iterate(examples, "tokenizing examples", len(examples), "example")):
        for e_ids, e_trained, starts in encode_rows(ex, tokenizer, template, block_size + 1):
            for a, b in windows(starts, len(e_ids), block_size + 1):
                ids += e_ids[a:b]
                trained += e_trained[a:b]
                offsets.append(len(ids))
                origin.append(n)
    arrays = [np.asarray(ids, dtype=dtype_for(tokenizer.vocab_size)), np.asarray(trained, dtype=np.uint8),
              np.asarray(offsets, dtype=np.int64), np.asarray(origin, dtype=np.int64)]
    base.parent.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(names, arrays):
        with atomic_path(paths[name]) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
    unknown = tokenizer.count_unknown(ids)
    atomic_write_text(meta_path, json.dumps({"examples": len(examples), "rows": len(origin), "unknown": unknown}))
    return (*arrays, unknown)
