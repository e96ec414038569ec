"""Model families behind one constructor; each implements the Decoder protocol."""

from __future__ import annotations

import torch.nn as nn

from ..config import ModelConfig
from ..data.batch import Seq2SeqBatch
from .gpt import GPT
from .heads import CLASSIFIERS
from .kv_cache import KVCache
from .protocol import Decoder
from .rnn import RNNLM
from .seq2seq import RNNSeq2Seq
from .transformer import TransformerSeq2Seq

__all__ = ["build_model", "GPT", "RNNLM", "RNNSeq2Seq", "TransformerSeq2Seq", "Decoder", "KVCache", "Seq2SeqBatch"]

FAMILIES: dict[str, type[nn.Module]] = {"gpt": GPT, "rnn": RNNLM, "seq2seq": RNNSeq2Seq}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the model named by ``cfg.family``, freshly initialised.

    Args:
        cfg: the model config; ``vocab_size`` must already be set (from the tokenizer).

    Returns:
        a GPT, RNNLM, RNNSeq2Seq or TransformerSeq2Seq (an nn.Module implementing the Decoder
        protocol); with ``cfg.labels``, the family's classifier (``models.heads``).
    """
    assert cfg.vocab_size > 0, "cfg.vocab_size must be > 0: set it from the tokenizer before building the model"
    if cfg.family not in FAMILIES:
        raise ValueError(f"model.family must be one of {', '.join(FAMILIES)}, got '{cfg.family}'")
    if cfg.labels:
        return CLASSIFIERS[cfg.family](cfg)
    if cfg.family == "seq2seq" and cfg.arch == "transformer":
        return TransformerSeq2Seq(cfg)
    return FAMILIES[cfg.family](cfg)
