"""Text classification: a classifier (any family with ``model.labels``) learns each labelled
text's label (``data.format=labels``); evaluation gives the loss, accuracy and macro-F1."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..config import Config, ConfigError
from ..data import progress
from ..data.batch import Batch
from ..data.classify import prepare_labels
from ..evaluation import classify_batches
from ..metrics import classification_scores
from ..tokenizers import Tokenizer
from .base import BaseTask


def balanced_weights(counts: list[int]) -> torch.Tensor:
    """scikit-learn's "balanced" class weights: n_texts / (n_labels x count), 0 for a label with no text."""
    total, n = sum(counts), len(counts)
    return torch.tensor([total / (n * c) if c else 0.0 for c in counts], dtype=torch.float32)


def _check_aux_lm(cfg: Config) -> None:
    """train.aux_lm_weight needs an LM head: a GPT's is its tied input embedding."""
    t, m = cfg.train, cfg.model
    if t.aux_lm_weight < 0:
        raise ConfigError(f"train.aux_lm_weight must be >= 0 (0 = off), got {t.aux_lm_weight}")
    if t.aux_lm_weight and not (m.family == "gpt" and m.tie_weights):
        what = {"gpt": "a GPT with untied embeddings", "rnn": "an RNN classifier"}.get(m.family, "an encoder classifier")
        raise ConfigError(f"train.aux_lm_weight adds a GPT classifier's next-token loss, read through its tied input "
                          f"embedding; this is {what}: set train.aux_lm_weight=0")


class ClassifyTask(BaseTask):
    """Cross-entropy over label ids (optionally class-weighted, optionally plus the texts' LM
    loss); scores from the val texts."""

    scores = ("loss", "accuracy", "macro_f1")

    def __init__(self, cfg: Config, data):
        super().__init__(cfg, data)
        self.block_size = cfg.model.block_size
        balanced = cfg.train.class_weights == "balanced"
        self.weights = balanced_weights(data.class_counts()) if balanced else None
        self.aux_lm_weight = cfg.train.aux_lm_weight

    @classmethod
    def build(cls, cfg: Config, tokenizer: Tokenizer | None, src_tokenizer: Tokenizer | None) -> ClassifyTask:
        m = cfg.model
        if m.family == "seq2seq" and m.arch != "transformer":
            raise ConfigError("a seq2seq classifier reads texts with a Transformer encoder: set model.arch=transformer "
                              "(or use model.family=rnn for a recurrent classifier)")
        _check_aux_lm(cfg)
        return cls(cfg, prepare_labels(cfg.data, m.block_size, tokenizer, m.labels or None))

    def config_updates(self, cfg: Config) -> dict[str, Any]:
        """The label names the data found (in id order) become ``model.labels``."""
        updates = super().config_updates(cfg)
        if cfg.model.labels != self.data.label_names:
            updates["model.labels"] = list(self.data.label_names)
        return updates

    def warnings(self) -> list[str]:
        out, d = super().warnings(), self.data
        if d.truncated:
            out.append(f"{d.truncated} texts are longer than model.block_size = {self.block_size} tokens; "
                       "each keeps its first block_size")
        if d.skipped:
            out.append(f"{d.skipped} rows were left out (bad rows, or labels the classifier does not know; "
                       "data.bad_lines=skip)")
        return out

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        extra: dict[str, Any] = {}
        if self.weights is not None:
            extra["class_weights"] = self.weights.to(batch.targets.device)
        if self.aux_lm_weight:  # training only: evaluate() scores the classification alone
            extra["aux_lm_weight"] = self.aux_lm_weight
        _, loss = model(batch.inputs, batch.targets, **extra)
        return loss

    def evaluate(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None,
                 final: bool = False) -> dict[str, float]:
        """Loss, accuracy and macro-F1 of the val texts: all of them when ``final``, else the same
        seeded sample of ``train.eval_iters x train.batch_size`` texts at every eval."""
        val = self.data.val
        index = torch.arange(len(val))
        if not final:
            gen = torch.Generator().manual_seed(self.seed + 1)
            index = torch.randperm(len(val), generator=gen)[: self.eval_iters * self.batch_size]
        index = sorted(index.tolist(), key=lambda i: len(val.ids[i]))  # little padding
        batches = (self.batch("val", torch.tensor(index[s : s + self.batch_size]))
                   for s in range(0, len(index), self.batch_size))
        with progress.showing(self.progress):
            batches = progress.iterate(batches, f"classifying {len(index):,} val texts",
                                       -(-len(index) // self.batch_size), "batch", leave=final)
            log_probs, targets = classify_batches(model, batches, device, dtype)
        scores = classification_scores(targets.tolist(), log_probs.argmax(-1).tolist(), self.data.label_names)
        loss = F.nll_loss(log_probs, targets).item()
        return {"loss": loss, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
