"""How sure the model was of each token (``token_view``) and where it looked (``attention``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..data.batch import Seq2SeqBatch
from .core import (
    ExplainError,
    Explanation,
    Inputs,
    model_device,
    output_logits,
    token_dicts,
)

MAX_ATTENTION_CELLS = 4_000_000  # layers x heads x rows x columns written to the JSON and the page


@torch.no_grad()
def token_view(model, inputs: Inputs, texts: tuple[list[str], list[str]], tokenizer, top_k: int = 5) -> Explanation:
    """Probability, surprisal and rank of each output token, and its top-k alternatives.

    Args:
        model: a gpt or rnn language model, or a seq2seq model (eval mode).
        inputs: the context and the output ids (an LM's output follows its context).
        texts: the context's and the output's token texts (``pieces``).
        tokenizer: the output side's tokenizer, to name the alternatives.
        top_k: alternatives per token.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ExplainError(f"top_k must be an integer >= 1, got {top_k!r}")
    ctx = torch.tensor([inputs.context], device=model_device(model))
    logp = output_logits(model, inputs, ctx)[0].float().log_softmax(-1)  # (T_out, V)
    rows = []
    for j, tok in enumerate(inputs.output):
        lp = logp[j, tok]
        top_p, top_i = logp[j].topk(min(top_k, logp.size(-1)))
        rows.append({"id": int(tok), "text": texts[1][j], "prob": float(lp.exp()),
                     "surprisal": float(-lp) / math.log(2),
                     "rank": int((logp[j] > lp).sum()) + 1,
                     "top": [{"id": int(i), "text": tokenizer.decode([int(i)], skip_special_tokens=False),
                              "prob": float(p.exp())} for p, i in zip(top_p, top_i)]})
    nats = float(-logp[torch.arange(len(inputs.output)), inputs.output].mean())  # the mean loss over the output
    details = {"tokens": len(rows), "bits_per_token": nats / math.log(2), "perplexity": math.exp(nats)}
    return Explanation("tokens", model.config.family, inputs.kind, token_dicts(inputs.context, texts[0]), rows,
                       details=details)


PARTS = ("cross", "encoder", "decoder")  # a seq2seq Transformer's attentions


def transformer_attention(model, batch: Seq2SeqBatch) -> dict[str, Tensor]:
    """Every attention of a seq2seq Transformer per layer and head, from one teacher-forced pass:
    "encoder" (L_enc, B, nh, S, S), "decoder" (L_dec, B, nh, T, T) and "cross" (L_dec, B, nh, T, S).

    Each attention module is asked for its weights through forward hooks (its ``need_weights``
    argument), so the model's code and its fast path stay as they are."""
    found: dict[str, list[Tensor]] = {part: [] for part in PARTS}
    modules = ([(m.attn, "encoder") for m in model.encoder]
               + [(m, part) for b in model.decoder for m, part in ((b.attn, "decoder"), (b.cross, "cross"))])

    def ask(module, args, kwargs):
        return args, {**kwargs, "need_weights": True}

    handles = []
    for module, part in modules:
        handles.append(module.register_forward_pre_hook(ask, with_kwargs=True))
        handles.append(module.register_forward_hook(lambda m, a, out, part=part: found[part].append(out[1])))
    try:
        with torch.no_grad():
            model(batch)  # teacher-forced: the decoder reads batch.tgt
    finally:
        for h in handles:
            h.remove()
    return {part: torch.stack(ws).float() for part, ws in found.items()}


@torch.no_grad()
def attention(model, inputs: Inputs, texts: tuple[list[str], list[str]], part: str = "cross") -> Explanation:
    """A GPT's self-attention per layer and head over context + output; a seq2seq model's
    attention of each output token over the source (``part`` = cross), or for a Transformer its
    encoder's or decoder's self-attention per layer and head (``part`` = encoder, decoder)."""
    family, dev = model.config.family, model_device(model)
    context, output = token_dicts(inputs.context, texts[0]), token_dicts(inputs.output, texts[1])
    transformer = family == "seq2seq" and model.config.arch == "transformer"
    if part not in PARTS or (part != "cross" and not transformer):
        raise ExplainError(f"part must be cross (the default){', encoder or decoder' if transformer else ''} for this "
                           f"{family} run; encoder and decoder self-attention belong to seq2seq Transformers")
    if family == "gpt":
        idx = torch.tensor([inputs.context + inputs.output], device=dev)
        weights = model.attention_weights(idx)[:, 0]  # (n_layer, n_head, T, T)
        every = texts[0] + texts[1]
        what, rows, cols = "self-attention of each token (row) over the tokens before it (columns)", every, every
    else:
        src = torch.tensor([inputs.context], device=dev)
        tgt = torch.tensor([[model.config.bos_id] + inputs.output[:-1]], device=dev)  # the decoder's inputs
        batch = Seq2SeqBatch(src, torch.ones_like(src, dtype=torch.bool), tgt)
        if transformer:
            weights = transformer_attention(model, batch)[part][:, 0]  # (layers, nh, rows, cols)
            what = {"cross": "cross-attention of each output token (row) over the source (columns)",
                    "encoder": "the encoder's self-attention of each source token (row) over the source (columns)",
                    "decoder": "the decoder's self-attention of each output token (row) over the tokens before it "
                               "(columns: the decoder's inputs)"}[part]
            inputs_text = ["<start>"] + texts[1][:-1]
            rows, cols = {"cross": (texts[1], texts[0]), "encoder": (texts[0], texts[0]),
                          "decoder": (texts[1], inputs_text)}[part]
        else:
            weights = model.cross_attention(batch)[0].float()[None, None]  # (1, 1, T_out, S)
            what = f"{model.config.attention} alignment of each output token (row) over the source (columns)"
            rows, cols = texts[1], texts[0]
    L, H, R, C = weights.shape
    if L * H * R * C > MAX_ATTENTION_CELLS:
        raise ExplainError(f"attention of {L} layers x {H} heads over {R} x {C} tokens is too big to draw "
                           f"(more than {MAX_ATTENTION_CELLS:,} weights); give a shorter text")
    table = {"what": what, "rows": rows, "cols": cols, "weights": weights.cpu().tolist()}
    return Explanation("attention", family, inputs.kind, context, output, attention=table,
                       details={"part": part} if transformer else {})
