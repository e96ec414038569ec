"""Classifiers: a family's body reads a text, one pooled vector per text goes through a linear
``score`` layer to label logits, as transformers' ``*ForSequenceClassification`` models do.

- gpt: the hidden state of each text's last real token (GPT2ForSequenceClassification; with
  causal attention it has read the whole text).
- rnn: the top layer's output at the last real token (the final state, unaffected by padding).
- seq2seq: the Transformer encoder's outputs, averaged over the real tokens (no decoder).

Each keeps the language model's parameter names and drops its LM head, so a trained LM (or a
GPT-2 checkpoint) initialises the body and only ``score`` starts fresh. A GPT's LM head is its
input embedding (tied), so the classifier still has it: with ``aux_lm_weight`` its loss adds the
texts' next-token loss, GPT-1's auxiliary objective (Radford et al. 2018, section 3.2).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..config import ModelConfig
from ..data.batch import IGNORE_INDEX, Seq2SeqBatch, TextBatch
from .gpt import GPT
from .layers import head_loss
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


def _output(score: nn.Linear, pooled: Tensor, targets: Tensor | None,
            class_weights: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Logits (B, L) and, with targets (B,), the mean cross-entropy (float32 under autocast),
    each text weighted by its label's ``class_weights`` (L,) when given."""
    logits = score(pooled)
    return logits, None if targets is None else F.cross_entropy(logits.float(), targets, weight=class_weights)


def _score(width: int, labels: list[str]) -> nn.Linear:
    layer = nn.Linear(width, len(labels), bias=False)  # no bias, as GPT2ForSequenceClassification's
    nn.init.normal_(layer.weight, mean=0.0, std=0.02)
    return layer


class GPTClassifier(GPT):
    """A GPT whose last real token's hidden state is classified."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        del self.lm_head  # when tied (the default), the input embedding still holds its weights
        self.score = _score(cfg.n_embd, cfg.labels)

    def forward(self, texts: TextBatch, targets: Tensor | None = None, class_weights: Tensor | None = None,
                aux_lm_weight: float = 0.0) -> tuple[Tensor, Tensor | None]:
        """Label logits (B, L) of texts (idx, mask (B, T), right-padded) and, with targets (B,), the
        loss: the cross-entropy (weighted by ``class_weights`` (L,)) plus ``aux_lm_weight`` x the
        texts' next-token loss (``text_lm_loss``)."""
        x = self.hidden_states(texts.idx)  # (B, T, C)
        logits, loss = _output(self.score, last_token(x, texts.mask), targets, class_weights)
        if loss is not None and aux_lm_weight:
            loss = loss + aux_lm_weight * self.text_lm_loss(x, texts)
        return logits, loss

    def text_lm_loss(self, x: Tensor, texts: TextBatch) -> Tensor:
        """The mean next-token loss (float32) of the texts' real tokens, from their hidden states
        x (B, T, C) through the language model's head: the tied input embedding, so a classifier
        fine-tuned from a GPT language model starts with that model's head."""
        assert self.config.tie_weights, "the LM loss of a GPT classifier needs tied embeddings (its only LM head)"
        targets = texts.idx[:, 1:].masked_fill(~texts.mask[:, 1:], IGNORE_INDEX)  # (B, T-1)
        if not texts.mask[:, 1:].any():  # one-token texts only: nothing to predict
            return x.new_zeros((), dtype=torch.float32)
        return head_loss(x[:, :-1], self.transformer.wte.weight, targets)


class RNNClassifier(RNNLM):
    """An RNN/LSTM/GRU whose output at the last real token is classified."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        del self.lm_head
        self.score = _score(cfg.hidden_size, cfg.labels)

    def forward(self, texts: TextBatch, targets: Tensor | None = None,
                class_weights: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Label logits (B, L) of texts (idx, mask (B, T), right-padded), and the loss with targets (B,)
        (each text weighted by its label's ``class_weights`` (L,) when given)."""
        pooled = last_token(self.hidden_states(texts.idx), texts.mask)
        return _output(self.score, self.drop(pooled), targets, class_weights)


class EncoderClassifier(TransformerSeq2Seq):
    """The seq2seq Transformer's encoder, its outputs averaged over the text, classified."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(dataclasses.replace(cfg, bos_id=max(cfg.bos_id, 0)))  # no decoder, so no start token
        self.config = cfg
        for name in ("decoder", "dec_ln", "head", "tgt_emb"):
            delattr(self, name)
        self.score = _score(cfg.n_embd, cfg.labels)

    def forward(self, texts: TextBatch, targets: Tensor | None = None,
                class_weights: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Label logits (B, L) of texts (idx, mask (B, T), right-padded), and the loss with targets (B,)
        (each text weighted by its label's ``class_weights`` (L,) when given)."""
        memory, _ = self.encode(Seq2SeqBatch(texts.idx, texts.mask))  # (B, T, C)
        return _output(self.score, mean_pool(memory, texts.mask), targets, class_weights)


CLASSIFIERS: dict[str, type[nn.Module]] = {"gpt": GPTClassifier, "rnn": RNNClassifier, "seq2seq": EncoderClassifier}


def keep_head_trainable(model: nn.Module) -> None:
    """A classifier's fresh head trains even when LoRA or freezing froze the rest (as PEFT's
    ``modules_to_save``); a model without one is left as it is."""
    head = getattr(model, HEAD, None)
    if isinstance(head, nn.Module):
        head.requires_grad_(True)
