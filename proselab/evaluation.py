"""Evaluation: perplexity and bits per character/token of a language model on a text."""

from __future__ import annotations

import math
from pathlib import Path

from .api import Generator, load
from .data import tokenize_to_cache
from .datasets import load_texts
from .training import evaluate_tokens


def evaluate(run: str | Path | Generator, data: str | list[str], encoding_errors: str = "strict") -> dict:
    """Score a language model on text it may never have seen.

    Args:
        run: a run directory or a loaded Generator.
        data: text file(s), a directory of .txt files, or a built-in dataset name.
        encoding_errors: ``strict`` or ``replace`` for non-UTF-8 bytes.

    Returns:
        ``{"loss", "perplexity", "bits_per_token", "bits_per_char", "tokens", "chars", "unknown_tokens"}``;
        loss is the mean next-token cross-entropy in nats.
    """
    gen = run if isinstance(run, Generator) else load(run)
    docs = load_texts(data, encoding_errors=encoding_errors)
    ids, unknown = tokenize_to_cache(docs, gen.tokenizer)
    if len(ids) < 2:
        raise ValueError(f"{data}: the text must hold at least two tokens to be scored")
    block = gen.config.model.block_size
    loss = evaluate_tokens(gen.model, ids, block, gen.device)
    n_pred = len(ids) - 1
    chars = sum(len(text) for _, text in docs)
    total_bits = loss * n_pred / math.log(2)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_token": loss / math.log(2),
        "bits_per_char": total_bits / max(chars, 1),
        "tokens": int(len(ids)),
        "chars": chars,
        "unknown_tokens": int(unknown),
    }
