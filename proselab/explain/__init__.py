"""Explain a model: how sure it was of each token, where it looked, which input tokens drove an output.

- ``tokens``: each scored token's probability, surprisal (bits) and rank under the model, and
  its top-k alternatives, from one teacher-forced forward pass.
- ``attention``: a GPT's causal self-attention per layer and head; a seq2seq model's attention
  over the source (an RNN's Bahdanau/Luong alignment; a Transformer's last decoder layer,
  averaged over its heads).
- ``ig``, ``shapley``, ``lime``: each input token's contribution to an output (the
  log-probability of a continuation or of one of its tokens, or of a classifier's label), by
  Captum: integrated gradients on the token embeddings (Sundararajan et al. 2017), Shapley
  value sampling (Castro et al. 2009), LIME (Ribeiro et al. 2016). A token left out is
  replaced by a baseline token: pad, else unk, else the end-of-text token.

What is explained are token ids (``Inputs``, in ``core``); ``api.Generator.explain`` makes them from
texts. ``views`` holds the token view and attention, ``attributions`` the Captum methods.
"""

from __future__ import annotations

import dataclasses

import torch

from .attributions import (
    DEFAULT_SAMPLES,
    MAX_PASSES,
    attribute,
    check_samples,
    embedding_layer,
    passes,
)
from .core import (
    ExplainError,
    Explanation,
    Inputs,
    model_device,
    output_logits,
    pieces,
    token_dicts,
)
from .views import (
    MAX_ATTENTION_CELLS,
    PARTS,
    attention,
    token_view,
    transformer_attention,
)

__all__ = ["ATTRIBUTIONS", "DEFAULT_SAMPLES", "MAX_ATTENTION_CELLS", "MAX_PASSES", "MAX_TOKENS", "METHODS", "NEW_TOKENS",
           "PARTS", "ExplainError", "Explanation", "Inputs", "attention", "attribute", "check_samples",
           "embedding_layer", "explain", "passes", "pieces", "token_view", "transformer_attention"]

METHODS = ("tokens", "attention", "ig", "shapley", "lime")
ATTRIBUTIONS = ("ig", "shapley", "lime")

MAX_TOKENS = 1024  # context + output tokens of families without a window: one page, one figure
NEW_TOKENS = 20  # tokens generated when there is no text to explain, unless max_new_tokens says otherwise


def explain(model, cfg, tokenizer, src_tokenizer, text: str | None, prompt: str | None, method: str,
            target: str | int | None = None, samples: int | None = None, top_k: int = 5, seed: int = 0,
            generation=None, suppress_ids: list[int] | None = None, part: str = "cross") -> Explanation:
    """Explain a run's model on texts (the maths of ``Generator.explain``, which documents the arguments).

    ``generation`` (a GenerationConfig, greedy) continues a prompt that has no text to score.
    """
    family = cfg.model.family
    if method not in METHODS:
        raise ExplainError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    kind = "classifier" if cfg.model.labels else "seq2seq" if family == "seq2seq" else "lm"
    _check_method(method, kind, family)
    model.eval()
    inputs = _inputs(model, cfg, tokenizer, src_tokenizer, kind, text, prompt, method, generation, suppress_ids)
    side = src_tokenizer if kind == "seq2seq" else tokenizer  # what the context is written in
    if kind == "lm":  # the output continues the context: a token's text can depend on what precedes it
        every = pieces(tokenizer, inputs.context + inputs.output)
        texts = (every[: len(inputs.context)], every[len(inputs.context):])
    else:
        texts = (pieces(side, inputs.context), pieces(tokenizer, inputs.output))
    if method == "tokens":
        return token_view(model, inputs, texts, tokenizer, top_k)
    if method == "attention":
        return attention(model, inputs, texts, part)
    label, what = _target(target, inputs, texts[1], cfg.model.labels, model)
    base = next((i for i in (side.pad_id, side.unk_id, side.eos_id, side.bos_id) if i is not None), 0)
    values, details = attribute(model, inputs, method, label, base, samples, seed)
    details["baseline"] = side.decode([base], skip_special_tokens=False)
    return Explanation(method, family, kind, token_dicts(inputs.context, texts[0]), token_dicts(inputs.output, texts[1]),
                       what, values, details=details)


def _check_method(method: str, kind: str, family: str) -> None:
    if method == "tokens" and kind == "classifier":
        raise ExplainError("a classifier labels texts and does not score tokens: explain it with --method ig, shapley, "
                           "lime" + (" or attention" if family == "gpt" else ""))
    if method == "attention" and family == "rnn":
        raise ExplainError("an rnn model has no attention to draw: attention is for gpt runs and seq2seq runs with "
                           "attention; explain this one with --method tokens, ig, shapley or lime")
    if method == "attention" and kind == "classifier" and family != "gpt":
        raise ExplainError("attention is drawn for gpt classifiers only; explain this one with --method ig, shapley "
                           "or lime")


def _inputs(model, cfg, tokenizer, src_tokenizer, kind: str, text, prompt, method: str, generation,
            suppress_ids) -> Inputs:
    """The context and output ids: see ``Generator.explain`` for which text goes where."""
    if kind == "classifier":
        if prompt is not None or not text or not text.strip():
            raise ExplainError("a classifier explains the label of a text: give the text (--text), no prompt")
        return _fits(Inputs(kind, tokenizer.encode(text.strip()), []), cfg)
    if kind == "seq2seq":
        if not prompt or not prompt.strip():
            raise ExplainError("a seq2seq run explains a source and its output: give the source as the prompt "
                               "(--prompt) and, to score an output of your own, that output as the text (--text)")
        from ..data.seq2seq import source_batch

        batch = source_batch(src_tokenizer, [prompt], truncate=cfg.data.truncate_src, prefix=cfg.model.src_prefix_id)
        context = batch.src[0].tolist()
        if text is not None:  # a target as training reads it: BART's start with <s>
            prefix = [cfg.model.tgt_prefix_id] if cfg.model.tgt_prefix_id >= 0 else []
            return _fits(Inputs(kind, context, prefix + tokenizer.encode(text) + [tokenizer.eos_id]), cfg)
        return _fits(Inputs(kind, context, _generate(model, batch, cfg, tokenizer, generation, suppress_ids)), cfg)
    bos = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    if prompt is not None:
        if not prompt:
            raise ExplainError("the prompt is empty; give a prompt, or only a text to score all of it")
        context = tokenizer.with_prefix(tokenizer.encode(prompt))  # after the tokenizer's own prefix (Llama's <s>)
    elif not text:
        raise ExplainError("give a text to explain (--text), a prompt to continue (--prompt), or both")
    elif method in ATTRIBUTIONS:  # the text is what the model reads; its continuation is explained
        context, text = bos + tokenizer.encode(text), None
    else:  # the text is scored from its first token on (after the beginning-of-text token, if any)
        ids = bos + tokenizer.encode(text)
        if len(ids) < 2:
            raise ExplainError("the text has one token and this model has no beginning-of-text token to predict it "
                               "from: give a longer text, or a prompt")
        return _fits(Inputs(kind, ids[:1], ids[1:]), cfg)
    if text is not None:
        return _fits(Inputs(kind, context, tokenizer.encode(text)), cfg)
    _fits(Inputs(kind, context, []), cfg)
    return _fits(Inputs(kind, context, _generate(model, [context], cfg, tokenizer, generation, suppress_ids)), cfg)


def _generate(model, prompts, cfg, tokenizer, generation, suppress_ids) -> list[int]:
    """The greedy output for one prompt (with the eos token when it ended there)."""
    from ..decoding import generate as generate_ids

    if cfg.model.family == "gpt":  # the output is scored with the context in view: both fit the window
        room = cfg.model.block_size - len(prompts[0])
        if room < 1:
            raise ExplainError(f"the prompt is {len(prompts[0])} tokens and fills this model's window of "
                               f"{cfg.model.block_size}: give a shorter prompt, so there is room for a continuation")
        generation = dataclasses.replace(generation, max_new_tokens=min(generation.max_new_tokens, room))
    out = generate_ids(model, prompts, generation, tokenizer=tokenizer, suppress_ids=suppress_ids)[0]
    ids = out.tokens + ([tokenizer.eos_id] if out.finish_reason == "eos" and tokenizer.eos_id is not None else [])
    if not ids:
        raise ExplainError("the model generated nothing to explain; give the output to score as the text (--text)")
    return ids


def _fits(inputs: Inputs, cfg) -> Inputs:
    """``inputs`` when the model can read them at once, else a one-line error."""
    n = len(inputs.context) + len(inputs.output)
    if not inputs.context:
        raise ExplainError("the text is empty once tokenized; give some text")
    if cfg.model.family == "gpt" and n > cfg.model.block_size:
        raise ExplainError(f"the text is {n} tokens and this model's window is {cfg.model.block_size}: give a "
                           "shorter text (or prompt, or max_new_tokens)")
    if n > MAX_TOKENS:
        raise ExplainError(f"the text is {n} tokens; explanations are drawn for up to {MAX_TOKENS}: give a shorter "
                           "text")
    return inputs


def _target(target, inputs: Inputs, output_texts: list[str], labels: list[str], model) -> tuple[int | None, str]:
    """(label id or output position or None, what is explained) from a label name, an output
    token's index or text, or None (the predicted label; the whole output)."""
    if inputs.kind == "classifier":
        if target is None:
            with torch.no_grad():
                ctx = torch.tensor([inputs.context], device=model_device(model))
                label = int(output_logits(model, inputs, ctx)[0].argmax())
        elif str(target) in labels:
            label = labels.index(str(target))
        else:
            raise ExplainError(f"target {target!r} is not a label of this classifier; its labels: {', '.join(labels)}")
        return label, f"log p(label {labels[label]!r})"
    if target is None:
        return None, f"log p(the output's {len(inputs.output)} tokens)"
    if isinstance(target, int) or (isinstance(target, str) and target.lstrip("-").isdigit()):
        j = int(target)
        if not 0 <= j < len(inputs.output):
            raise ExplainError(f"target {j} is not an output token: the output has {len(inputs.output)} tokens, "
                               f"0-{len(inputs.output) - 1}")
    else:
        found = [j for j, t in enumerate(output_texts) if t == target or t.strip() == str(target).strip()]
        if not found:
            raise ExplainError(f"target {target!r} is neither an output token's text nor its index (0-"
                               f"{len(inputs.output) - 1}); the output's tokens: {output_texts[:20]}")
        j = found[0]
    return j, f"log p(output token {j}: {output_texts[j]!r})"
