"""The Task protocol the training loop drives, and what every task shares.

A task is what is being learned: its data (batches), its loss, its evaluation (named scores),
its warnings about the data, what the data fixes in the run's config (vocabulary sizes, special
token ids) and the tokenizer files the run keeps. The loop asks nothing else, so a new
objective is a new task, and a wrapper (distillation) can change one method of any task.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch

from ..config import Config, ConfigError, explicit_keys
from ..config.checks import unused_options
from ..data import progress
from ..data.batch import IGNORE_INDEX, Batch
from ..distributed import autocast
from ..evaluation import evaluate_batches
from ..tokenizers import Tokenizer


class Task(Protocol):
    tokenizer: Tokenizer  # the one generation decodes with
    scores: tuple[str, ...]  # the names ``evaluate`` returns (train.best_by picks one)

    def tokenizers(self) -> dict[str, Tokenizer]:
        """Run-directory file name -> tokenizer to save there."""
        ...

    def config_updates(self, cfg: Config) -> dict[str, Any]:
        """Dotted keys the run's config takes from the data (e.g. ``model.vocab_size``)."""
        ...

    def warnings(self) -> list[str]:
        """What was dropped, cut, skipped or unknown in the data."""
        ...

    def sample(self, split: str, rows: int, generator: torch.Generator) -> torch.Tensor:
        """Row indices (rows,) of a random batch of ``split``, drawn from ``generator``."""
        ...

    def batch(self, split: str, index: torch.Tensor) -> Batch:
        """The rows ``index`` of ``split`` as one batch."""
        ...

    def batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """The whole split, each row once."""
        ...

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The scalar this task minimises on ``batch``."""
        ...

    def evaluate(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None,
                 final: bool = False) -> dict[str, float]:
        """Named scores on the val split (``loss``, ``bleu``, ...): quick estimates during
        training, exact ones over the whole split when ``final``."""
        ...

    def report(self) -> list[str]:
        """Lines to show on the terminal after the last ``evaluate`` (e.g. example outputs)."""
        ...


class BaseTask:
    """A task over a prepared data object (``sample``/``batch``/``batches``) whose loss is the
    model's own, ``forward(inputs, targets)``; evaluation is the val loss."""

    scores: tuple[str, ...] = ("loss",)

    def __init__(self, cfg: Config, data):
        self.data = data
        self.tokenizer: Tokenizer = data.tokenizer
        t = cfg.train
        self.batch_size, self.eval_iters, self.seed = t.batch_size, t.eval_iters, t.seed
        self.progress = t.progress  # train.progress also shows (or hides) the evaluations' bars
        # options set for a model that does not read them (a resumed run's saved config sets every field)
        self.ignored = [] if t.init_from == "resume" else unused_options(cfg, explicit_keys(cfg))

    def tokenizers(self) -> dict[str, Tokenizer]:
        return {"tokenizer.json": self.tokenizer}

    def config_updates(self, cfg: Config) -> dict[str, Any]:
        """The model's vocabulary fits the tokenizer: taken from it when 0, grown to it when
        fine-tuning added special tokens, an error when set smaller."""
        m, size = cfg.model, self.tokenizer.vocab_size
        fine_tune = cfg.train.init_from not in ("scratch", "resume")
        if m.vocab_size == 0 or (fine_tune and m.vocab_size < size):
            return {"model.vocab_size": size}
        if m.vocab_size < size:
            raise ConfigError(f"model.vocab_size={m.vocab_size} is smaller than the tokenizer's {size}; "
                              "set it to 0 to take the tokenizer's size")
        return {}

    def warnings(self) -> list[str]:
        out = list(self.ignored)
        if self.data.unknown:
            out.append(f"{self.data.unknown} tokens of the corpus are not in the tokenizer's vocabulary "
                       "and were read as <unk>")
        return out

    def sample(self, split: str, rows: int, generator: torch.Generator) -> torch.Tensor:
        return self.data.sample(split, rows, generator)

    def batch(self, split: str, index: torch.Tensor) -> Batch:
        return self.data.batch(split, index)

    def batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        return self.data.batches(split, batch_size)

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        _, loss = model(batch.inputs, batch.targets)
        return loss

    def evaluate(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None,
                 final: bool = False) -> dict[str, float]:
        if final:  # the exact mean per-token loss over the whole val split
            with progress.showing(self.progress):
                batches = progress.iterate(self.batches("val", self.batch_size), "val loss, full pass",
                                           self.data.num_batches("val", self.batch_size), "batch")
                return {"loss": evaluate_batches(model, batches, device, dtype)}
        return {"loss": self.estimate_loss(model, device, dtype)}

    def report(self) -> list[str]:
        return []

    def estimate_batches(self, generator: torch.Generator) -> Iterator[Batch]:
        """The quick estimate's val batches: ``train.eval_iters`` random ones."""
        for _ in range(self.eval_iters):
            yield self.batch("val", self.sample("val", self.batch_size, generator))

    @torch.no_grad()
    def estimate_loss(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None) -> float:
        """Mean per-target loss over the ``estimate_batches`` (a fixed stream, so curves are
        comparable), each batch weighted by its targets as the full pass weighs them."""
        gen = torch.Generator().manual_seed(self.seed + 1)
        model.eval()
        total, count = 0.0, 0
        for batch in self.estimate_batches(gen):
            batch = batch.to(device)
            n = int((batch.targets != IGNORE_INDEX).sum())
            if n:
                with autocast(device, dtype):
                    total += self.loss(model, batch).float().item() * n
                count += n
        model.train()
        return total / max(count, 1)


def raise_not_labelled(cfg: Config) -> None:
    """model.labels makes a classifier, but the data is not labelled texts: say what it needs."""
    raise ConfigError(f"model.labels ({', '.join(cfg.model.labels)}) makes a classifier, which trains on labelled "
                      "texts: give data.dataset as .csv/.tsv/.jsonl files with a text and a label column (or "
                      "data.format=labels), or clear model.labels to train a generator")
