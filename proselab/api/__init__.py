"""The Python API behind ``proselab.load``: a loaded run (``Generator``) that generates text,
chats, classifies, and shows its attention and explanations.

- ``generator.py``: ``load`` and the ``Generator``: prompts, generation, speculative decoding;
- ``classify.py``: a classifier's labels, and zero-shot classification with a language model;
- ``inspection.py``: attention maps and explanations;
- ``chatting.py``: conversations in the run's chat template.
"""

from .classify import Classification
from .generator import DTYPES, Generator, load
from .inspection import AttentionMap

__all__ = ["AttentionMap", "Classification", "DTYPES", "Generator", "load"]
