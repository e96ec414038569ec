"""Classifiers: a family's body reads a text, one pooled vector per text goes through a linear
``score`` layer to label logits, as transformers' ``*ForSequenceClassification`` models do.

- gpt: the hidden state of each text's last real token (GPT2ForSequenceClassification; with
  causal attention it has read the whole text).
- rnn: the top layer's output at the last real token (the final state, unaffected by padding).
- seq2seq: the Transformer encoder's outputs, averaged over the real tokens (no decoder).

Each keeps the language model's parameter names and drops its LM head, so a trained LM (or a
GPT-2 checkpoint) initialises the body and only ``score`` starts fresh.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..config import ModelConfig
from ..data.batch import Seq2SeqBatch, TextBatch
from .gpt import GPT
from .rnn import RNNLM
from .transformer import TransformerSeq2Seq

HEAD = "score"  # the classification layer's name, new in every classifier


def last_token(x: Tensor, mask: Tensor) -> Tensor:
    """x (B, T, C) at each row's last real position (mask (B, T), right padding) -> (B, C)."""
    last = mask.sum(1) - 1  # (B,)
    return x[torch.arange(x.size(0), device=x.device), last]


def mean_pool(x: Tensor, mask: Tensor) -> Tensor:
    """x (B, T, C) averaged over each row's real positions -> (B, C)."""
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * m).sum(1) / m.sum(1)


def _output(score: nn.Linear, pooled: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Logits (B, L) and, with targets (B,), the mean cross-entropy (float32 under autocast)."""
    logits = score(pooled)
    return logits, None if targets is None else F.cross_entropy(logits.float(), targets)


def _score(width: int, labels: list[str]) -> nn.Linear:
    layer = nn.Linear(width, len(labels), bias=False)  # no bias, as GPT2ForSequenceClassification's
    nn.init.normal_(layer.weight, mean=0.0, std=0.02)
    return layer


class GPTClassifier(GPT):
    """A GPT whose last real token's hidden state is classified."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        del self.lm_head
        self.score = _score(cfg.n_embd, cfg.labels)

    def forward(self, texts: TextBatch, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Label logits (B, L) of texts (idx, mask (B, T), right-padded), and the loss with targets (B,)."""
        return _output(self.score, last_token(self.hidden_states(texts.idx), texts.mask), targets)


class RNNClassifier(RNNLM):
    """An RNN/LSTM/GRU whose output at the last real token is classified."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        del self.lm_head
        self.score = _score(cfg.hidden_size, cfg.labels)

    def forward(self, texts: TextBatch, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Label logits (B, L) of texts (idx, mask (B, T), right-padded), and the loss with targets (B,)."""
        pooled = last_token(self.hidden_states(texts.idx), texts.mask)
        return _output(self.score, self.drop(pooled), targets)


class EncoderClassifier(TransformerSeq2Seq):
    """The seq2seq Transformer's encoder, its outputs averaged over the text, classified."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(dataclasses.replace(cfg, bos_id=max(cfg.bos_id, 0)))  # no decoder, so no start token
        self.config = cfg
        for name in ("decoder", "dec_ln", "head", "tgt_emb"):
            delattr(self, name)
        self.score = _score(cfg.n_embd, cfg.labels)

    def forward(self, texts: TextBatch, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Label logits (B, L) of texts (idx, mask (B, T), right-padded), and the loss with targets (B,)."""
        memory, _ = self.encode(Seq2SeqBatch(texts.idx, texts.mask))  # (B, T, C)
        return _output(self.score, mean_pool(memory, texts.mask), targets)


CLASSIFIERS: dict[str, type[nn.Module]] = {"gpt": GPTClassifier, "rnn": RNNClassifier, "seq2seq": EncoderClassifier}


def keep_head_trainable(model: nn.Module) -> None:
    """A classifier's fresh head trains even when LoRA or freezing froze the rest (as PEFT's
    ``modules_to_save``); a model without one is left as it is."""
    head = getattr(model, HEAD, None)
    if isinstance(head, nn.Module):
        head.requires_grad_(True)
