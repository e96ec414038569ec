"""``train.distill_init=every-other-layer``: a student of the teacher's family and width and
half its depth starts from the teacher's embeddings, final norm, head and every other block,
DistilGPT2's recipe (Sanh et al. 2019). A GPT, or a seq2seq Transformer (encoder and decoder
blocks alike)."""

from __future__ import annotations

import re

import torch

from ..config import ConfigError, ModelConfig
from .teacher import FIELD, load_teacher, teacher_config

_LAYER = re.compile(r"^(transformer\.h|encoder|decoder)\.(\d+)\.")  # a block's parameters, by index
# what makes the other tensors the same shapes (and the same function: a Llama-style block's)
_SAME = ("n_embd", "n_head", "bias", "tie_weights", "vocab_size", "ffn_dim", "gated_ffn", "activation", "norm")
_SAME_GPT = ("rope", "n_kv_head")


def kept_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher's blocks the student's start from: spread evenly, first and last kept. For
    GPT-2's 12 into 6 this is DistilGPT2's choice, 0, 2, 4, 7, 9, 11."""
    if student_layers == 1:
        return [0]
    return [round(i * (teacher_layers - 1) / (student_layers - 1)) for i in range(student_layers)]


def check_init_shapes(m: ModelConfig, tm: ModelConfig) -> None:
    """A ConfigError saying what must match for the teacher's tensors to fit the student."""
    kind = "seq2seq transformer" if m.family == "seq2seq" and m.arch == "transformer" else m.family
    teacher_kind = "seq2seq transformer" if tm.family == "seq2seq" and tm.arch == "transformer" else tm.family
    if kind not in ("gpt", "seq2seq transformer") or teacher_kind != kind:
        raise ConfigError(f"train.distill_init=every-other-layer needs a gpt (or a seq2seq transformer) student and "
                          f"teacher of the same family; this is a {kind} student and a {teacher_kind} teacher: use "
                          "train.distill_init=scratch")
    names = _SAME + (("share_embeddings", "src_vocab_size") if m.family == "seq2seq" else _SAME_GPT)
    differ = [f"model.{n}={getattr(m, n)} (the teacher's {getattr(tm, n)})" for n in names
              if getattr(m, n) != getattr(tm, n)]
    if tm.n_layer < 2 or m.n_layer != tm.n_layer // 2:
        differ.append(f"model.n_layer={m.n_layer} (half the teacher's {tm.n_layer} is {tm.n_layer // 2})")
    if m.family == "gpt" and m.block_size > tm.block_size:
        differ.append(f"model.block_size={m.block_size} (at most the teacher's {tm.block_size})")
    if differ:
        raise ConfigError("train.distill_init=every-other-layer copies the teacher's tensors, so the student must have "
                          f"its width and half its depth: set {'; '.join(differ)}, or use train.distill_init=scratch")


@torch.no_grad()
def copy_every_other_layer(student: torch.nn.Module, teacher: torch.nn.Module) -> list[int]:
    """Copy the teacher's weights into ``student``: each student block ``i`` takes teacher block
    ``kept_layers(...)[i]``, every other tensor the teacher's of the same name (a GPT's position
    table cropped to the student's window). Returns the teacher blocks taken."""
    s_cfg, t_cfg = student.config, teacher.config
    check_init_shapes(s_cfg, t_cfg)
    kept = kept_layers(t_cfg.n_layer, s_cfg.n_layer)
    source = teacher.state_dict()
    for name, tensor in student.state_dict().items():
        match = _LAYER.match(name)
        key = f"{match[1]}.{kept[int(match[2])]}.{name[match.end():]}" if match else name
        assert key in source, f"{FIELD}: the teacher has no tensor {key} for the student's {name}"
        value = source[key][: tensor.size(0)] if name == "transformer.wpe.weight" else source[key]
        tensor.copy_(value)
    return kept


def init_from_teacher(student: torch.nn.Module, path: str) -> list[int]:
    """``copy_every_other_layer`` from the teacher at ``path`` (its shapes checked before its weights are read)."""
    check_init_shapes(student.config, teacher_config(path).model)
    return copy_every_other_layer(student, load_teacher(path))
