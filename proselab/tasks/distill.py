"""Word-level knowledge distillation as a task that wraps any generation task (lm, sft, seq2seq):
everything is the wrapped task's but the training loss, which adds the KL to a teacher's
softened distributions on the same batch (``distill.loss``). Evaluation keeps the wrapped
task's plain cross-entropy, so val losses compare with those of runs trained without a teacher."""

from __future__ import annotations

from typing import Any

import torch

from ..config import Config, explicit_keys
from ..data.batch import Batch
from ..distill import check_teacher, check_tokenizers, distill_loss, load_teacher, teacher_config, teacher_tokenizers


class DistillTask:
    """``task`` with the distillation loss in training mode; the teacher is frozen, in eval mode,
    and moved to the batches' device at the first step (it is never part of a checkpoint: a
    resumed run reloads it from ``train.distill_teacher``)."""

    def __init__(self, cfg: Config, task: Any, teacher: torch.nn.Module, notes: list[str] | None = None):
        self.task, self.teacher, self.notes = task, teacher, notes or []
        t = cfg.train
        self.alpha, self.temperature, self.top_k = t.distill_alpha, t.distill_temperature, t.distill_top_k
        self.label_smoothing = t.label_smoothing  # the seq2seq models' own loss applies it in training mode
        self.sums: dict[str, torch.Tensor] = {}  # the training loss's two terms, summed since the last log
        self.count = 0

    @staticmethod
    def check(cfg: Config, data_format: str) -> None:
        """A ConfigError when the teacher cannot teach this student (its family, window, a classifier)."""
        check_teacher(cfg, teacher_config(cfg.train.distill_teacher), data_format)

    @classmethod
    def build(cls, cfg: Config, task: Any) -> DistillTask:
        """Wrap the prepared ``task``; a teacher of other tokenizers is a ConfigError."""
        path = cfg.train.distill_teacher
        tokenizer, src_tokenizer = teacher_tokenizers(path)
        check_tokenizers(path, task.tokenizer, getattr(task, "src_tokenizer", task.tokenizer), tokenizer, src_tokenizer)
        notes = []
        if "data.tokenizer" in explicit_keys(cfg) and cfg.train.init_from == "scratch" and \
                cfg.data.tokenizer != tokenizer.kind:
            notes.append(f"data.tokenizer={cfg.data.tokenizer} is ignored: a distilled student takes the teacher's "
                         f"tokenizer ({tokenizer.kind}, {path})")
        return cls(cfg, task, load_teacher(path), notes)

    def __getattr__(self, name: str) -> Any:  # batches, evaluation, config updates: the wrapped task's
        return getattr(self.task, name)

    def warnings(self) -> list[str]:
        return self.notes + self.task.warnings()

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """(1 - alpha) CE + alpha T^2 KL(teacher_T || student_T) in training; the plain loss otherwise."""
        if not model.training or self.alpha == 0:  # the KD term weighs nothing: not even the teacher runs
            return self.task.loss(model, batch)
        logits, _ = model(batch.inputs)  # (B, T, V)
        with torch.no_grad():  # under the trainer's autocast: the teacher runs in the student's dtype
            teacher_logits, _ = self._teacher_on(batch.targets.device)(batch.inputs)  # (B, T, V)
        parts: dict[str, torch.Tensor] = {}
        loss = distill_loss(logits, teacher_logits, batch.targets, self.alpha, self.temperature, self.top_k,
                            self.label_smoothing, parts)
        for name, value in parts.items():  # on the device: no host sync until the log line asks
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += 1
        return loss

    def train_parts(self) -> dict[str, torch.Tensor]:
        """The mean CE and KD terms (KL before its T^2) of the training batches since the last call:
        the trainer logs them as ``train_ce`` and ``train_kd`` beside ``train_loss``."""
        out = {f"train_{name}": total / max(self.count, 1) for name, total in self.sums.items()}
        self.sums, self.count = {}, 0
        return out

    def _teacher_on(self, device: torch.device) -> torch.nn.Module:
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        return self.teacher
