"""Model families behind one constructor; each implements the Decoder protocol."""

from __future__ import annotations

import torch.nn as nn

from ..config import ModelConfig
from .gpt import GPT, KVCache
from .protocol import Decoder
from .rnn import RNNLM

__all__ = ["build_model", "GPT", "RNNLM", "Decoder", "KVCache"]

FAMILIES: dict[str, type[nn.Module]] = {"gpt": GPT, "rnn": RNNLM}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the model named by ``cfg.family``, freshly initialised.

    Args:
        cfg: the model config; ``vocab_size`` must already be set (from the tokenizer).

    Returns:
        a GPT or RNNLM (an nn.Module implementing the Decoder protocol).
    """
    assert cfg.vocab_size > 0, "cfg.vocab_size must be > 0: set it from the tokenizer before building the model"
    if cfg.family not in FAMILIES:
        raise ValueError(f"model.family must be one of {', '.join(FAMILIES)}, got '{cfg.family}'")
    return FAMILIES[cfg.family](cfg)
