"""Training data: token streams for language models and examples for supervised fine-tuning.

Text (``data.format: text``): a corpus is tokenized once into ``<cache>/tokens/<key>.bin`` (a
flat uint16/uint32 array read through ``np.memmap``), keyed by the corpus content and the
tokenizer, so later runs start at once and a corpus larger than memory still trains. The
stream is split by position: the first ``1 - val_fraction`` is train, the rest val (nanoGPT's
convention); batches are random blocks of ``block_size`` tokens.

Examples (``data.format: sft``): JSONL prompt/response pairs or conversations (see chat.py),
each tokenized with a mask of the response tokens, cached as ``.npy`` arrays the same way. The
last ``val_fraction`` of the examples is val. A batch is a random set of examples, each cut to
``block_size + 1`` tokens, padded on the right; the loss sees only response tokens.

Both kinds answer ``sample`` (row indices from the run's generator), ``batch`` (inputs, targets
and the number of real tokens) and ``batches`` (a whole split, for the exact val loss), so
the training loop does not ask which kind it has.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterator, Union

import numpy as np
import torch

from .atomic import atomic_path, atomic_write_text
from .chat import add_special_tokens, encode_example, example_text, needed_tokens, windows
from .config import DataConfig
from .datasets import cache_dir, load_texts
from .sft import is_example_spec, load_examples
from .models.layers import IGNORE_INDEX
from .tokenizers import Tokenizer, get_tokenizer, load_tokenizer


class DataError(ValueError):
    """The data cannot be used as configured (too short, empty split, ...)."""


@dataclass
class TokenData:
    tokenizer: Tokenizer
    train: np.ndarray  # (N_train,) token ids, memory-mapped
    val: np.ndarray  # (N_val,) token ids, memory-mapped
    unknown: int  # tokens that fell back to unk (characters the vocabulary lacks)
    format = "text"

    def sample(self, split: str, rows: int, block_size: int, generator: torch.Generator) -> torch.Tensor:
        """Random block starts (rows,) in ``split``."""
        return sample_offsets(len(getattr(self, split)), rows, block_size, generator)

    def batch(self, split: str, index: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Inputs and targets (B, T) of the blocks starting at ``index``, and the tokens in them."""
        x, y = get_batch(getattr(self, split), index, block_size)
        return x, y, x.numel()

    def batches(self, split: str, block_size: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole split, every token a target once (see ``eval_batches``)."""
        return eval_batches(getattr(self, split), block_size, batch_size)


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


def data_format(dcfg: DataConfig) -> str:
    """``text``, ``sft`` or ``pairs``: ``data.format``, where auto means pairs for .tsv files,
    {"src", "tgt"} JSONL and pair datasets, sft for other .jsonl files and chat datasets."""
    from .pairs import is_pair_spec

    if dcfg.format != "auto":
        return dcfg.format
    if is_pair_spec(dcfg.dataset):
        return "pairs"
    return "sft" if is_example_spec(dcfg.dataset) else "text"


def prepare_data(dcfg: DataConfig, block_size: int, tokenizer: Tokenizer | None = None,
                 src_tokenizer: Tokenizer | None = None) -> "Data":
    """Load the corpus, get a tokenizer (trained on it unless given), tokenize and split.

    Sentence pairs (``pairs``) go to ``pair_data.prepare_pairs``, which takes ``src_tokenizer``
    too when the sides have their own vocabularies.

    The tokenizer gains ``data.special_tokens`` and, for SFT, the tokens its examples need
    (see ``chat.needed_tokens``); the caller grows the model's vocabulary to match.

    Raises:
        DataError: when a split is too short to hold one block of ``block_size + 1`` tokens
            (text) or holds no example (sft).
    """
    fmt = data_format(dcfg)
    if fmt == "pairs":
        from .pair_data import prepare_pairs

        return prepare_pairs(dcfg, tokenizer, src_tokenizer)
    if fmt == "sft":
        return prepare_examples(dcfg, block_size, tokenizer)
    docs = load_texts(dcfg.dataset, encoding_errors=dcfg.encoding_errors, clean=dcfg.clean)
    content = _content_hash(docs)
    tokenizer = add_special_tokens(tokenizer or _trained_tokenizer(dcfg, docs, content), dcfg.special_tokens)
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


# --- supervised fine-tuning examples


@dataclass
class Examples:
    """One split of tokenized examples: example i is ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: np.ndarray  # (N_tokens,) token ids of all examples, concatenated
    trained: np.ndarray  # (N_tokens,) uint8, 1 on the tokens the loss is computed on
    offsets: np.ndarray  # (N + 1,) int64 start of each example
    keep: np.ndarray  # (M,) the examples that have a trained token within block_size + 1 tokens

    def __len__(self) -> int:
        return len(self.keep)

    def row(self, i: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and trained mask of kept example ``i``, cut to ``block_size + 1`` tokens."""
        j = int(self.keep[i])
        a = int(self.offsets[j])
        b = min(int(self.offsets[j + 1]), a + block_size + 1)
        return self.ids[a:b], self.trained[a:b]


@dataclass
class ExampleData:
    tokenizer: Tokenizer
    train: Examples
    val: Examples
    unknown: int  # tokens that fell back to unk
    truncated: int  # rows still longer than block_size + 1 tokens (one long message), cut at the end
    dropped: int  # rows with no response token within block_size + 1 tokens, left out
    format = "sft"

    def sample(self, split: str, rows: int, block_size: int, generator: torch.Generator) -> torch.Tensor:
        """Random example indices (rows,) in ``split``."""
        return torch.randint(len(getattr(self, split)), (rows,), generator=generator)

    def batch(self, split: str, index: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Examples ``index`` padded on the right to the longest: inputs and targets (B, T), T <=
        block_size, targets IGNORE_INDEX except on response tokens; and the real tokens."""
        return _collate([getattr(self, split).row(int(i), block_size) for i in index])

    def batches(self, split: str, block_size: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every example of the split once, in order."""
        ex = getattr(self, split)
        for start in range(0, len(ex), batch_size):
            x, y, _ = _collate([ex.row(i, block_size) for i in range(start, min(start + batch_size, len(ex)))])
            yield x, y


Data = Union[TokenData, ExampleData]  # and pair_data.PairData, which answers the same three methods


def _collate(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    T = max(len(ids) for ids, _ in rows) - 1
    x = torch.zeros(len(rows), T, dtype=torch.int64)  # padding id 0: its targets are ignored
    y = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.int64)
    real = 0
    for r, (ids, trained) in enumerate(rows):
        ids_t = torch.from_numpy(ids.astype(np.int64))
        n = len(ids_t) - 1
        x[r, :n] = ids_t[:-1]
        y[r, :n] = ids_t[1:].masked_fill(torch.from_numpy(trained[1:] == 0), IGNORE_INDEX)
        real += n
    return x, y, real


def _examples_to_cache(examples: list[dict], tokenizer: Tokenizer, template: str, content: str,
                       block_size: int) -> tuple[np.ndarray, ...]:
    """Tokenize examples into ``<cache>/examples/<key>.*.npy`` (once).

    A conversation longer than ``block_size + 1`` tokens becomes several rows, cut at message
    starts (``chat.windows``). Returns ids, trained, offsets (one per row) and origin (the
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
    for n, ex in enumerate(examples):
        e_ids, e_trained, starts = encode_example(ex, tokenizer, template)
        for a, b in windows(starts, len(e_ids), block_size + 1):
            ids += e_ids[a:b]
            trained += e_trained[a:b]
            offsets.append(len(ids))
            origin.append(n)
    arrays = [np.asarray(ids, dtype=_dtype_for(tokenizer.vocab_size)), np.asarray(trained, dtype=np.uint8),
              np.asarray(offsets, dtype=np.int64), np.asarray(origin, dtype=np.int64)]
    base.parent.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(names, arrays):
        with atomic_path(paths[name]) as tmp, open(tmp, "wb") as f:
            np.save(f, arr)
    unknown = tokenizer.count_unknown(ids)
    atomic_write_text(meta_path, json.dumps({"examples": len(examples), "rows": len(origin), "unknown": unknown}))
    return (*arrays, unknown)


def _split_examples(ids: np.ndarray, trained: np.ndarray, offsets: np.ndarray, lo: int, hi: int,
                    block_size: int) -> tuple[Examples, int, int]:
    """Examples [lo, hi): the split, how many are longer than a window, how many have nothing to learn in it."""
    starts, ends = offsets[lo:hi], offsets[lo + 1 : hi + 1]
    window_end = np.minimum(ends, starts + block_size + 1)
    cum = np.concatenate([[0], np.cumsum(trained, dtype=np.int64)])
    learnable = cum[window_end] - cum[np.minimum(starts + 1, window_end)]  # trained targets (skip token 0)
    keep = np.nonzero(learnable > 0)[0] + lo
    truncated = int(np.count_nonzero(ends - starts > block_size + 1))
    return Examples(ids, trained, offsets, keep), truncated, (hi - lo) - len(keep)


def prepare_examples(dcfg: DataConfig, block_size: int, tokenizer: Tokenizer | None = None) -> ExampleData:
    """Supervised fine-tuning data: the examples of ``data.dataset``, tokenized and split.

    Raises:
        DataError: when the train or val split would hold no usable example.
    """
    examples = load_examples(dcfg.dataset)
    content = hashlib.sha256(json.dumps(examples, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()
    if tokenizer is None:
        docs = [(str(i), example_text(ex)) for i, ex in enumerate(examples)]
        tokenizer = _trained_tokenizer(dcfg, docs, _content_hash(docs))
    tokenizer = add_special_tokens(tokenizer, needed_tokens(examples, dcfg.chat_template, dcfg.special_tokens))
    ids, trained, offsets, origin, unknown = _examples_to_cache(examples, tokenizer, dcfg.chat_template, content,
                                                                block_size)
    n = len(examples)
    n_val = max(1, round(n * dcfg.val_fraction))
    if n - n_val < 1:
        raise DataError(f"{n} example(s): too few for a train and a val split; add examples or lower data.val_fraction")
    cut = int(np.searchsorted(origin, n - n_val))  # the rows of one example stay in one split
    train, cut_train, drop_train = _split_examples(ids, trained, offsets, 0, cut, block_size)
    val, cut_val, drop_val = _split_examples(ids, trained, offsets, cut, len(origin), block_size)
    for name, split in (("train", train), ("val", val)):
        if len(split) == 0:
            raise DataError(
                f"no {name} example has a response token within model.block_size + 1 = {block_size + 1} tokens; "
                "raise model.block_size or shorten the prompts"
            )
    return ExampleData(tokenizer, train, val, unknown, cut_train + cut_val, drop_train + drop_val)
