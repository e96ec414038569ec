"""Token streams for language models: a memory-mapped cache, block batches, eval passes.

A corpus is tokenized once into ``<cache>/tokens/<key>.bin`` (a flat uint16/uint32 array read
through ``np.memmap``), keyed by the corpus content and the tokenizer, so later runs start at
once and a corpus larger than memory still trains. The stream is split by position: the first
``1 - val_fraction`` is train, the rest val (nanoGPT's convention).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .atomic import atomic_path, atomic_write_text
from .config import DataConfig
from .datasets import cache_dir, load_texts
from .tokenizers import Tokenizer, get_tokenizer, load_tokenizer


class DataError(ValueError):
    """The data cannot be used as configured (too short, empty split, ...)."""


@dataclass
class TokenData:
    tokenizer: Tokenizer
    train: np.ndarray  # (N_train,) token ids, memory-mapped
    val: np.ndarray  # (N_val,) token ids, memory-mapped
    unknown: int  # tokens that fell back to unk (characters the vocabulary lacks)


def _content_hash(docs: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, text in docs:
        h.update(name.encode("utf-8", "surrogatepass") + b"\0")
        h.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def _trained_tokenizer(dcfg: DataConfig, docs: list[tuple[str, str]], content: str) -> Tokenizer:
    """Train (or reuse from the cache) a tokenizer of kind ``dcfg.tokenizer`` on ``docs``."""
    kind = dcfg.tokenizer
    if kind not in ("char", "word", "bpe"):
        return get_tokenizer(kind, [t for _, t in docs], dcfg.vocab_size)
    size = "" if kind == "char" else f"-{dcfg.vocab_size}"
    path = cache_dir() / "tokenizers" / f"{kind}{size}-{content[:32]}.json"
    if path.is_file():
        return load_tokenizer(path)
    tok = get_tokenizer(kind, [t for _, t in docs], dcfg.vocab_size)
    tok.save(path)
    return tok


def _dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def tokenize_to_cache(docs: list[tuple[str, str]], tokenizer: Tokenizer, content: str | None = None) -> tuple[np.ndarray, int]:
    """Tokenize documents into the memmap cache (once) and return (ids, unknown count).

    Documents are joined with the tokenizer's eos token where it has one, as GPT-2 was trained.
    """
    content = content or _content_hash(docs)
    key = hashlib.sha256(f"{content}:{tokenizer.fingerprint()}".encode()).hexdigest()[:40]
    path = cache_dir() / "tokens" / f"{key}.bin"
    meta_path = path.with_suffix(".json")
    dtype = _dtype_for(tokenizer.vocab_size)
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return np.memmap(path, dtype=dtype, mode="r", shape=(meta["n_tokens"],)), meta["unknown"]
    path.parent.mkdir(parents=True, exist_ok=True)
    n_tokens = unknown = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for _, text in docs:
            ids = tokenizer.encode(text)
            if tokenizer.eos_id is not None:
                ids.append(tokenizer.eos_id)
            unknown += tokenizer.count_unknown(ids)
            f.write(np.asarray(ids, dtype=dtype).tobytes())
            n_tokens += len(ids)
    atomic_write_text(meta_path, json.dumps({"n_tokens": n_tokens, "unknown": unknown, "dtype": dtype.name}))
    if n_tokens == 0:
        return np.zeros(0, dtype=dtype), 0
    return np.memmap(path, dtype=dtype, mode="r", shape=(n_tokens,)), unknown


def prepare_data(dcfg: DataConfig, block_size: int, tokenizer: Tokenizer | None = None) -> TokenData:
    """Load the corpus, get a tokenizer (trained on it unless given), tokenize and split.

    Raises:
        DataError: when a split is too short to hold one block of ``block_size + 1`` tokens.
    """
    docs = load_texts(dcfg.dataset, encoding_errors=dcfg.encoding_errors, clean=dcfg.clean)
    content = _content_hash(docs)
    tokenizer = tokenizer or _trained_tokenizer(dcfg, docs, content)
    ids, unknown = tokenize_to_cache(docs, tokenizer, content)
    n_train = int(len(ids) * (1 - dcfg.val_fraction))
    train, val = ids[:n_train], ids[n_train:]
    need = block_size + 1
    if len(train) < need or len(val) < need:
        raise DataError(
            f"the corpus has {len(ids)} tokens: {len(train)} train and {len(val)} val, but a block needs "
            f"{need} tokens in each split; use more text, a smaller model.block_size, or another data.val_fraction"
        )
    return TokenData(tokenizer, train, val, unknown)


def sample_offsets(n_tokens: int, batch_size: int, block_size: int, generator: torch.Generator) -> torch.Tensor:
    """Random block starts (batch_size,) drawn from ``generator``: reproducible and resumable."""
    return torch.randint(n_tokens - block_size, (batch_size,), generator=generator)


def get_batch(data: np.ndarray, offsets: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets for blocks starting at ``offsets``: two (B, T) int64 tensors."""
    rows = offsets.numpy()[:, None] + np.arange(block_size + 1)  # (B, T+1)
    block = torch.from_numpy(data[rows].astype(np.int64))
    return block[:, :-1], block[:, 1:]


def eval_batches(data: np.ndarray, block_size: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive non-overlapping blocks covering every token of ``data`` exactly once as a target.

    The last block may be shorter; its missing targets are -100 (ignored by the loss), so the
    mean loss over the yielded targets is the exact per-token loss of the whole split.
    """
    n = len(data) - 1  # number of (input, target) pairs
    starts = list(range(0, n, block_size))
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        x = torch.zeros(len(chunk), block_size, dtype=torch.int64)
        y = torch.full((len(chunk), block_size), -100, dtype=torch.int64)
        for r, s in enumerate(chunk):
            t = min(block_size, n - s)
            seg = torch.from_numpy(data[s : s + t + 1].astype(np.int64))
            x[r, :t], y[r, :t] = seg[:-1], seg[1:]
        yield x, y
