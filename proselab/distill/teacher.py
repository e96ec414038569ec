"""The teacher of a distillation (``train.distill_teacher``): a proselab run or a Hugging Face
GPT-2, Marian, BART or T5 directory, read with ``runs``, checked against the student, frozen.
Every problem is a one-line ConfigError naming the field, raised before the student's run
directory is touched."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from ..config import Config, ConfigError, explicit_keys
from ..runs import load_run, load_run_config, run_tokenizers
from ..tokenizers import Tokenizer

FIELD = "train.distill_teacher"


@contextmanager
def _about_teacher(path: str):
    """A RunError or TokenizerError about the teacher's files, as a ConfigError naming the field."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, OSError) as e:
        raise ConfigError(f"{FIELD} '{path}' is not a usable run or Hugging Face directory: {e}") from None


def teacher_config(path: str) -> Config:
    """The teacher's Config (no weights read)."""
    if not Path(path).expanduser().is_dir():
        raise ConfigError(f"{FIELD} must be a proselab run or a Hugging Face directory (GPT-2, Marian, BART, T5); "
                          f"'{path}' is not a directory")
    with _about_teacher(path):
        return load_run_config(Path(path).expanduser())


def take_teacher_vocabulary(cfg: Config) -> None:
    """A seq2seq student from scratch reads sources as its teacher does, with the target's
    tokenizer or with a source tokenizer of their own (Marian's): ``data.joint_vocab`` becomes
    the teacher's unless the config sets it."""
    if cfg.train.init_from != "scratch" or cfg.model.family != "seq2seq" or "data.joint_vocab" in explicit_keys(cfg):
        return
    cfg.data.joint_vocab = teacher_config(cfg.train.distill_teacher).data.joint_vocab
    if not cfg.data.joint_vocab and cfg.model.share_embeddings:
        raise ConfigError(f"{FIELD} '{cfg.train.distill_teacher}' reads sources with a tokenizer of their own, so the "
                          "student's source and target embeddings cannot be one matrix: set "
                          "model.share_embeddings=false")


def teacher_tokenizers(path: str) -> tuple[Tokenizer, Tokenizer | None]:
    """The teacher's (target) tokenizer and its separate source tokenizer (None: the same one),
    which a student trained from scratch takes: a Marian, BART or T5 checkpoint's own files."""
    teacher_config(path)
    with _about_teacher(path):
        return run_tokenizers(Path(path).expanduser())


def load_teacher(path: str) -> torch.nn.Module:
    """The teacher's model on the CPU, in eval mode, every weight frozen (a LoRA run's adapters merged)."""
    with _about_teacher(path), torch.random.fork_rng():  # building it draws initial weights: not from the run's stream
        model, _, _ = load_run(Path(path).expanduser())
    return model.eval().requires_grad_(False)


def check_teacher(cfg: Config, teacher: Config, data_format: str) -> None:
    """The teacher must predict what the student learns: the same kind of sequence, long enough."""
    m, tm, path = cfg.model, teacher.model, cfg.train.distill_teacher
    if data_format == "labels" or m.labels:
        raise ConfigError(f"{FIELD} distils a generator, but this trains a classifier on labelled texts: clear "
                          f"{FIELD}")
    if tm.labels:
        raise ConfigError(f"{FIELD} '{path}' is a classifier ({', '.join(tm.labels)}); a teacher must be a "
                          "generator (a language model or a seq2seq model)")
    if (tm.family == "seq2seq") != (m.family == "seq2seq"):
        raise ConfigError(f"{FIELD} '{path}' is a {tm.family} model and the student a {m.family} model: a seq2seq "
                          "student needs a seq2seq teacher, a gpt or rnn student a gpt or rnn teacher")
    if tm.family == "gpt" and m.family != "seq2seq" and tm.block_size < m.block_size:
        raise ConfigError(f"model.block_size={m.block_size} is longer than the teacher's window ({tm.block_size} "
                          f"tokens, {FIELD} '{path}'): set model.block_size <= {tm.block_size}")


def check_tokenizers(path: str, student: Tokenizer, student_src: Tokenizer, teacher: Tokenizer,
                     teacher_src: Tokenizer | None) -> None:
    """Teacher and student must split text into the same ids: the KD term compares their
    distributions id by id, and the teacher reads the student's inputs (seq2seq: the source
    tokenizers too). Data that adds tokens (SFT's end of text, data.special_tokens) needs a
    teacher that has them."""
    pairs = [("tokenizer", student, teacher)]
    if student_src is not student or teacher_src is not None:
        pairs.append(("source tokenizer", student_src, teacher_src or teacher))
    for what, mine, theirs in pairs:
        if mine.hf.to_str() != theirs.hf.to_str():
            raise ConfigError(f"{FIELD} '{path}' has another {what} than the student ({theirs.kind}, "
                              f"{theirs.vocab_size:,} tokens; the student's: {mine.kind}, {mine.vocab_size:,}): "
                              "distillation compares them token by token. A student from scratch takes the "
                              "teacher's; tokens the data adds (data.special_tokens, SFT's end of text, a chat "
                              "template's) must be the teacher's already (fine-tune it on such data first), and "
                              "data.joint_vocab the teacher's")
