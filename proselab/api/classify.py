"""What a loaded run does with labels: a classifier run's head, or zero-shot classification
with a language model (``Generator.classify``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..evaluation import classify_texts
from ..zeroshot import DEFAULT_TEMPLATE, Prompting, zero_shot_scores


@dataclass
class Classification:
    """A classifier's answer for one text."""

    label: str  # the most probable label
    probs: dict[str, float]  # every label's probability, in the run's label order


class Classifying:
    """``Generator``'s classification methods (a mixin: it reads the run's model, tokenizer and
    config)."""

    def classify(self, texts: str | list[str], batch_size: int = 64, classes: list[str] | None = None,
                 template: str = DEFAULT_TEMPLATE, verbalizers: list[str] | None = None, calibrate: bool = True
                 ) -> Classification | list[Classification]:
        """Label texts: with a classifier run's head, or zero-shot with a language model run.

        Args:
            texts: one text, or a list of texts (classified in batches of similar length).
            batch_size: texts (zero-shot: text-class pairs) per forward pass.
            classes: zero-shot only, the class names; a language model scores each class's
                verbalisation after ``template`` (see ``proselab.zeroshot``).
            template: zero-shot: the prompt, with one ``{text}``.
            verbalizers: zero-shot: what follows the prompt for each class (default: its name).
            calibrate: zero-shot: subtract each class's score after a content-free text.

        Returns:
            A Classification (label and every label's probability) for one text, else a list.
        """
        batch = [texts] if isinstance(texts, str) else list(texts)
        for i, text in enumerate(batch):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"text {i} is empty; a classifier needs text to label")
        batch = [t.strip() for t in batch]
        if classes is not None:
            prompting = Prompting(list(classes), template, verbalizers, calibrate)
            labels, probs = list(classes), self._zero_shot(batch, prompting, batch_size)
        elif self.is_classifier:
            labels = self.config.model.labels
            probs = classify_texts(self.model, self.tokenizer, batch, self.config.model.block_size, batch_size).exp()
        else:
            raise ValueError(f"this run is a {self.config.model.family} language model without a classification head; "
                             "give classes for zero-shot classification, or fine-tune a classifier from it on labelled "
                             "texts: proselab train --train.init_from=RUN --data labelled.csv")
        out = [Classification(labels[int(p.argmax())], {name: float(p[j]) for j, name in enumerate(labels)})
               for p in probs]
        return out[0] if isinstance(texts, str) else out

    def _zero_shot(self, texts: list[str], prompting: Prompting, batch_size: int) -> torch.Tensor:
        m = self.config.model
        if self.is_classifier or self.is_seq2seq:
            raise ValueError(f"zero-shot classification scores continuations with a language model (gpt or rnn); "
                             f"this run is a {'classifier' if self.is_classifier else 'seq2seq model'}")
        window = m.block_size if m.family == "gpt" else None
        scores = zero_shot_scores(self.model, self.tokenizer, texts, prompting, window, batch_size)
        return torch.softmax(scores, dim=-1)
