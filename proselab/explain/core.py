"""What is explained (``Inputs``), the result (``Explanation``) and the helpers every method shares."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..data.batch import Seq2SeqBatch, TextBatch


class ExplainError(ValueError):
    """A request that cannot be explained as asked (a method the family lacks, a text too long)."""


@dataclass
class Inputs:
    """What is explained, as token ids."""

    kind: str  # "lm", "seq2seq" or "classifier"
    context: list[int]  # what the model reads: an LM's prompt, a seq2seq source (with eos), a classifier's text
    output: list[int]  # what is scored: an LM's continuation, a seq2seq target (with eos); [] for a classifier


@dataclass
class Explanation:
    """One explanation, as the JSON, the page and the figure show it."""

    method: str  # tokens, attention, ig, shapley or lime
    family: str  # gpt, rnn or seq2seq
    kind: str  # lm, seq2seq or classifier
    context: list[dict]  # the tokens the model reads: {"id", "text"}
    output: list[dict]  # the tokens it is scored on: {"id", "text"}, and for ``tokens`` "prob", "surprisal",
    # "rank" and "top" (the top-k alternatives, {"id", "text", "prob"})
    target: str | None = None  # attributions: what they explain
    attributions: list[float] | None = None  # attributions: one per context token
    attention: dict | None = None  # "what", "rows", "cols" (token texts), "weights" (layers, heads, rows, cols)
    details: dict = field(default_factory=dict)  # method details: samples, baseline token, scores, delta

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, out_dir: str | Path, title: str = "") -> dict[str, Path]:
        """Write explanation.json, explanation.html and explanation.png into ``out_dir``."""
        from ..explain_html import write_explanation

        return write_explanation(self, out_dir, title)


def pieces(tokenizer, ids: list[int]) -> list[str]:
    """Each token's text as it appears in the decoded sequence (with a word tokenizer's spaces);
    a token that ends inside a character (byte-level BPE) is shown as the decoder shows it alone."""
    out, before = [], ""
    for i in range(len(ids)):
        now = tokenizer.decode(ids[: i + 1], skip_special_tokens=False)
        out.append(now[len(before):] if now.startswith(before) else tokenizer.decode(ids[i : i + 1],
                                                                                    skip_special_tokens=False))
        before = now
    return out


def token_dicts(ids: list[int], texts: list[str]) -> list[dict]:
    return [{"id": int(i), "text": t} for i, t in zip(ids, texts)]


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def output_logits(model, inputs: Inputs, context: Tensor) -> Tensor:
    """Logits of the output tokens for each row of context ids (N, S): (N, T_out, V); a
    classifier's label logits (N, L)."""
    N = context.size(0)
    out = torch.tensor(inputs.output, dtype=torch.long, device=context.device).expand(N, -1)  # (N, T_out)
    if inputs.kind == "lm":
        logits, _ = model(torch.cat([context, out], dim=1))  # (N, S + T_out, V)
        return logits[:, context.size(1) - 1 : -1]  # the positions that predict the output tokens
    mask = torch.ones_like(context, dtype=torch.bool)
    if inputs.kind == "classifier":
        return model(TextBatch(context, mask))[0]  # (N, L)
    bos = out.new_full((N, 1), model.config.bos_id)
    return model(Seq2SeqBatch(context, mask, torch.cat([bos, out[:, :-1]], dim=1)))[0]  # (N, T_out, V)
