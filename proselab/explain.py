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

What is explained are token ids (``Inputs``); ``api.Generator.explain`` makes them from texts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .data import progress
from .data.batch import Seq2SeqBatch, TextBatch

METHODS = ("tokens", "attention", "ig", "shapley", "lime")
ATTRIBUTIONS = ("ig", "shapley", "lime")
DEFAULT_SAMPLES = {"ig": 50, "shapley": 20, "lime": 200}  # integration steps, permutations, perturbed texts
MAX_PASSES = 100_000  # forward passes one attribution may cost: minutes for a small model on a CPU
MAX_ATTENTION_CELLS = 4_000_000  # layers x heads x rows x columns written to the JSON and the page
_PER_EVAL = 16  # perturbed texts scored in one batch by shapley and lime
_LIME_WIDTH = 0.25  # LIME's kernel width for texts (25 on its cosine distance x 100)


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
        from .explain_html import write_explanation

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


def _tokens(ids: list[int], texts: list[str]) -> list[dict]:
    return [{"id": int(i), "text": t} for i, t in zip(ids, texts)]


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _logits(model, inputs: Inputs, context: Tensor) -> Tensor:
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
    ctx = torch.tensor([inputs.context], device=_device(model))
    logp = _logits(model, inputs, ctx)[0].float().log_softmax(-1)  # (T_out, V)
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
    return Explanation("tokens", model.config.family, inputs.kind, _tokens(inputs.context, texts[0]), rows,
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
    family, dev = model.config.family, _device(model)
    context, output = _tokens(inputs.context, texts[0]), _tokens(inputs.output, texts[1])
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


def embedding_layer(model, kind: str) -> torch.nn.Module:
    """The embedding the input (context) ids go through: where integrated gradients attribute."""
    family = model.config.family
    if family == "gpt":
        return model.transformer.wte
    if family == "rnn":
        return model.wte
    if kind == "seq2seq" and model.src_emb is model.tgt_emb:
        raise ExplainError("integrated gradients attribute to the source embedding, which this seq2seq model shares "
                           "with the target (model.share_embeddings); use --method shapley or lime")
    return model.src_emb


def passes(method: str, samples: int, n_tokens: int) -> int:
    """Forward passes (of one text) an attribution costs, the scores of the input and of the
    baseline included (integrated gradients: each with its backward pass)."""
    return {"ig": samples + 6, "shapley": samples * n_tokens + 3, "lime": samples + 2}[method]


def check_samples(method: str, samples: int, n_tokens: int) -> None:
    """A one-line error for a cost outside [1, MAX_PASSES] forward passes."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ExplainError(f"samples must be an integer >= 1, got {samples!r}")
    cost = passes(method, samples, n_tokens)
    if cost > MAX_PASSES:
        per = {"ig": "integration steps", "shapley": f"permutations x {n_tokens} input tokens",
               "lime": "perturbed texts"}[method]
        most = {"ig": MAX_PASSES - 6, "shapley": (MAX_PASSES - 3) // n_tokens, "lime": MAX_PASSES - 2}[method]
        raise ExplainError(f"samples={samples} would cost {cost:,} forward passes for {method} ({per}); the bound is "
                           f"{MAX_PASSES:,}: give samples <= {most:,}")


def _scorer(model, inputs: Inputs, target: int | None, bar):
    """f(context ids (N, S)) -> (N,): the log-probability that is explained; each call counts
    its rows on ``bar``."""
    def score(context: Tensor) -> Tensor:
        bar.update(context.size(0))
        logp = _logits(model, inputs, context).float().log_softmax(-1)
        if inputs.kind == "classifier":
            return logp[:, target]  # (N,)
        out = torch.tensor(inputs.output, device=context.device).expand(context.size(0), -1)  # (N, T_out)
        picked = logp.gather(-1, out[..., None]).squeeze(-1)  # (N, T_out)
        return picked.sum(1) if target is None else picked[:, target]

    return score


def attribute(model, inputs: Inputs, method: str, target: int | None, baseline_id: int, samples: int | None = None,
              seed: int = 0) -> tuple[list[float], dict]:
    """Each context token's contribution to the explained log-probability.

    Args:
        model: any proselab model (eval mode).
        inputs: the context (attributed) and the output (kept fixed).
        method: ig, shapley or lime.
        target: a classifier's label id; for generators, the output position whose
            log-probability is explained, or None for the whole output's.
        baseline_id: the token standing for an absent one.
        samples: integration steps (ig), permutations (shapley) or perturbed texts (lime).
        seed: seeds shapley's permutations and lime's perturbations.

    Returns:
        One attribution per context token, and details: the scores of the input and of the
        all-baseline input, samples, forward passes and (ig) Captum's convergence delta.
    """
    from captum.attr import LayerIntegratedGradients, Lime, ShapleyValueSampling

    samples = DEFAULT_SAMPLES[method] if samples is None else samples
    n = len(inputs.context)
    check_samples(method, samples, n)
    dev = _device(model)
    ctx = torch.tensor([inputs.context], device=dev)  # (1, S)
    base = torch.full_like(ctx, baseline_id)  # (1, S)
    total = passes(method, samples, n)
    with progress.bar(f"explaining ({method})", total, unit="pass") as bar, torch.random.fork_rng(devices=[]), \
            torch.backends.cudnn.flags(enabled=False):  # cuDNN's RNN backward refuses eval mode
        torch.manual_seed(seed)
        score = _scorer(model, inputs, target, bar)
        details: dict = {"samples": samples, "forward_passes_bound": total}
        if method == "ig":
            lig = LayerIntegratedGradients(score, embedding_layer(model, inputs.kind))
            attr, delta = lig.attribute(ctx, baselines=base, n_steps=samples, internal_batch_size=_PER_EVAL,
                                        return_convergence_delta=True)
            values = attr[0, :n].sum(-1)  # (S,) each token's embedding summed; an LM's output positions add 0
            details["delta"] = float(delta[0])
        elif method == "shapley":
            values = ShapleyValueSampling(score).attribute(ctx, baselines=base, n_samples=samples,
                                                           perturbations_per_eval=_PER_EVAL)[0]
        else:
            lime = Lime(score, interpretable_model=_ridge(), similarity_func=_lime_similarity)
            values = lime.attribute(ctx, baselines=base, n_samples=samples, perturbations_per_eval=_PER_EVAL)[0]
        with torch.no_grad():
            details["score"], details["baseline_score"] = (float(s) for s in score(torch.cat([ctx, base])))
    return [float(v) for v in values.detach().float().cpu()], details


def _ridge():
    # LIME's text explainer fits a ridge regression (alpha 1) by default
    from captum._utils.models.linear_model import SkLearnRidge

    return SkLearnRidge(alpha=1.0)


def _lime_similarity(original: Tensor, perturbed: Tensor, interpretable: Tensor, **kwargs) -> Tensor:
    """LIME's text kernel: exp(-d^2 / width^2), d the cosine distance between the kept-token
    indicator and all-kept (the original text)."""
    kept = interpretable.float().mean()
    d = 1.0 - kept.sqrt()
    return torch.exp(-(d * d) / _LIME_WIDTH**2)


# ---- from texts to ids, and the one entry point ---------------------------------------------------

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
    return Explanation(method, family, kind, _tokens(inputs.context, texts[0]), _tokens(inputs.output, texts[1]),
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
        from .data.seq2seq import source_batch

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
    from .decoding import generate as generate_ids

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
                ctx = torch.tensor([inputs.context], device=_device(model))
                label = int(_logits(model, inputs, ctx)[0].argmax())
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
