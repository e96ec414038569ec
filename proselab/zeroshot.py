"""Zero-shot classification with a language model: no training, only likelihoods.

Each text is put in a prompt template (``"Tweet: {text}\\nSentiment:"``) and each class has a
verbalisation (``" negative"``); a class's score is the log-probability the model gives its
verbalisation's tokens after the prompt (summed over them), less (``calibrate``, the default) its
score after a content-free text, ``N/A``, as in Zhao et al. 2021 ("Calibrate Before Use"): a
small model's bias towards some verbalisations otherwise decides most answers. The class
probabilities are the softmax of the scores. The prompt and verbalisation are encoded apart and joined, as a model
reads them when it continues the prompt. Every (text, class) row is scored in batches of
right-padded rows: a causal model's scores at a row's real tokens do not depend on the padding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .tokenizers import Tokenizer

DEFAULT_TEMPLATE = "{text}\n"
CONTENT_FREE = "N/A"  # Zhao et al. 2021's content-free input


@dataclass(frozen=True)
class Prompting:
    """How texts become prompts, and how each class is said."""

    classes: list[str]  # class names, in output order
    template: str = DEFAULT_TEMPLATE  # a prompt with one {text}
    verbalizers: list[str] | None = None  # what follows the prompt for each class; None = the class name
    calibrate: bool = True  # subtract each class's score after the content-free text CONTENT_FREE

    def check(self) -> list[str]:
        """The verbalisations; ValueError names what is wrong with the classes, template or verbalisers."""
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes) or not all(
                isinstance(c, str) and c.strip() for c in self.classes):
            raise ValueError(f"zero-shot classification needs two or more distinct class names, got {self.classes}")
        if self.template.count("{text}") != 1:
            raise ValueError(f"the template must hold {{text}} once (where each text goes), got {self.template!r}")
        said = list(self.verbalizers) if self.verbalizers is not None else list(self.classes)
        if len(said) != len(self.classes):
            raise ValueError(f"{len(said)} verbalizers for {len(self.classes)} classes; give one per class, in order")
        if not all(isinstance(v, str) and v for v in said):
            raise ValueError(f"every verbalizer must be a non-empty string, got {said}")
        return said


def _rows(tokenizer: Tokenizer, texts: list[str], prompting: Prompting,
          window: int | None) -> tuple[list[list[int]], list[int]]:
    """Every (text, class) as prompt + verbalisation ids, and where each verbalisation starts."""
    said = [tokenizer.encode(v) for v in prompting.check()]
    prompts = tokenizer.encode_batch([prompting.template.replace("{text}", t) for t in texts])
    prefix = tokenizer.prompt_prefix  # what the tokenizer starts every text with (Llama's <s>), as generate reads it
    rows, starts = [], []
    for prompt in prompts:
        for tail in said:
            keep = len(prompt) if window is None else max(1, window - len(tail) - len(prefix))
            row = prefix + prompt[-keep:] + tail  # a long prompt keeps its end, next to the verbalisation
            rows.append(row[-window:] if window is not None else row)
            starts.append(len(rows[-1]) - len(tail))
    return rows, starts


@torch.no_grad()
def zero_shot_scores(model: torch.nn.Module, tokenizer: Tokenizer, texts: list[str], prompting: Prompting,
                     window: int | None = None, batch_size: int = 32) -> torch.Tensor:
    """Each class's log-likelihood after each text's prompt (calibrated when ``prompting.calibrate``): (N, C).

    Args:
        model: a language model (gpt or rnn run) whose ``forward(idx)`` gives logits (B, T, V).
        window: the model's context (a GPT's block_size); longer prompts keep their end.
    """
    if prompting.calibrate:
        raw = dataclasses.replace(prompting, calibrate=False)
        scores = zero_shot_scores(model, tokenizer, [*texts, CONTENT_FREE], raw, window, batch_size)
        return scores[:-1] - scores[-1:]
    rows, starts = _rows(tokenizer, texts, prompting, window)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = torch.empty(len(rows))
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for s in range(0, len(order), batch_size):
        chunk = order[s : s + batch_size]
        T = max(len(rows[i]) for i in chunk)
        idx = torch.zeros(len(chunk), T, dtype=torch.long)
        for r, i in enumerate(chunk):
            idx[r, : len(rows[i])] = torch.tensor(rows[i])
        logits, _ = model(idx.to(device))
        log_probs = torch.log_softmax(logits.float(), dim=-1).cpu()  # (B, T, V)
        for r, i in enumerate(chunk):  # token t is predicted at position t - 1
            pos = torch.arange(starts[i], len(rows[i]))
            scores[i] = log_probs[r, pos - 1, idx[r, pos]].sum()
    model.train(was_training)
    return scores.view(len(texts), len(prompting.classes))
