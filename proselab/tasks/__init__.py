"""What is being learned, one file per task; ``build_task`` picks one by ``data.format``.

    base.py     the Task protocol the training loop drives, and what every task shares
    lm.py       language modelling on a corpus (data.format=text)
    sft.py      supervised / chat fine-tuning, loss on responses only (data.format=sft)
    seq2seq.py  an encoder-decoder on sentence pairs, with decoded BLEU and chrF (data.format=pairs)
    classify.py a classifier on labelled texts, with accuracy and macro-F1 (data.format=labels)
    distill.py  wraps lm, sft or seq2seq: the loss adds the KL to a teacher's distributions (train.distill_teacher)
"""

from __future__ import annotations

from ..config import Config
from ..data import progress
from ..data.sources import data_format
from ..tokenizers import Tokenizer
from .base import BaseTask, Task
from .classify import ClassifyTask
from .distill import DistillTask
from .lm import LMTask
from .seq2seq import Seq2SeqTask
from .sft import SFTTask

__all__ = ["TASKS", "BaseTask", "DistillTask", "LMTask", "SFTTask", "Seq2SeqTask", "Task", "build_task"]

TASKS = {"text": LMTask, "sft": SFTTask, "pairs": Seq2SeqTask, "labels": ClassifyTask}  # data.format -> the task that trains on it


def build_task(cfg: Config, tokenizer: Tokenizer | None = None, src_tokenizer: Tokenizer | None = None) -> Task:
    """The task for ``cfg``'s data, prepared: loaded, tokenized (with the given tokenizers, else
    ones trained on the data) and split, with progress bars unless ``train.progress`` is false.

    Raises:
        ConfigError: the data does not fit the model family.
        DatasetError, DataError: the data cannot be read or split.
    """
    with progress.showing(cfg.train.progress):
        fmt = data_format(cfg.data)
        if cfg.train.distill_teacher:
            DistillTask.check(cfg, fmt)  # before the data is prepared
        task = TASKS[fmt].build(cfg, tokenizer, src_tokenizer)
        return DistillTask.build(cfg, task) if cfg.train.distill_teacher else task
