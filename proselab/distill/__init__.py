"""Knowledge distillation. Word-level: a student learns the gold tokens and a teacher's
distributions over them (``train.distill_teacher``), through the task seam (``tasks/distill.py``).
Sequence-level: the student trains on what the teacher says (``proselab distill-data``).

    loss.py     the KD loss, chunked over rows: (1 - alpha) CE + alpha T^2 KL(teacher_T || student_T)
    teacher.py  reading the teacher (a run or a Hugging Face dir) and checking it against the student
    init.py     train.distill_init=every-other-layer: the student starts from half the teacher's blocks
    data.py     sequence-level KD data (Kim & Rush 2016): a teacher's decoded pairs, or a corpus it samples
"""

from __future__ import annotations

from .init import copy_every_other_layer, init_from_teacher, kept_layers
from .loss import distill_loss
from .teacher import (check_teacher, check_tokenizers, load_teacher, take_teacher_vocabulary, teacher_config,
                      teacher_tokenizers)

__all__ = ["check_teacher", "check_tokenizers", "copy_every_other_layer", "distill_loss", "init_from_teacher",
           "kept_layers", "load_teacher", "take_teacher_vocabulary", "teacher_config", "teacher_tokenizers"]
