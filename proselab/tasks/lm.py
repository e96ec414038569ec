"""Language modelling: next-token prediction on blocks of a corpus (``data.format=text``)."""

from __future__ import annotations

from ..config import Config, ConfigError
from ..data.lm import prepare_text
from ..data.pairs import load_pairs
from ..tokenizers import Tokenizer
from .base import BaseTask, raise_not_labelled


def check_not_seq2seq(cfg: Config) -> None:
    """A language model's data given to an encoder-decoder or a classifier: say what it trains on instead."""
    if cfg.model.labels:
        raise_not_labelled(cfg)
    if cfg.model.family == "seq2seq" and cfg.train.init_from not in ("scratch", "resume"):  # the checkpoint's family
        raise ConfigError(f"train.init_from '{cfg.train.init_from}' is a seq2seq model, which trains on sentence "
                          "pairs: give data.dataset as .tsv (source<TAB>target) or {\"src\", \"tgt\"} .jsonl "
                          "files, or fine-tune a gpt or rnn run on this data")
    if cfg.model.family == "seq2seq":
        load_pairs(cfg.data.dataset)  # a missing file or a bad line: its own, precise error
        raise ConfigError("model.family=seq2seq trains on sentence pairs: give data.dataset as .tsv "
                          "(source<TAB>target) or {\"src\", \"tgt\"} .jsonl files, or a pair dataset "
                          "(see `proselab data list`)")


class LMTask(BaseTask):
    """Blocks of ``model.block_size`` tokens from one token stream; the val loss is per token."""

    @classmethod
    def build(cls, cfg: Config, tokenizer: Tokenizer | None, src_tokenizer: Tokenizer | None) -> LMTask:
        check_not_seq2seq(cfg)
        return cls(cfg, prepare_text(cfg.data, cfg.model.block_size, tokenizer))
