"""Which input tokens drove an output: Captum's integrated gradients, Shapley value sampling and LIME."""

from __future__ import annotations

import torch
from torch import Tensor

from ..data import progress
from .core import ExplainError, Inputs, model_device, output_logits

DEFAULT_SAMPLES = {"ig": 50, "shapley": 20, "lime": 200}  # integration steps, permutations, perturbed texts
MAX_PASSES = 100_000  # forward passes one attribution may cost: minutes for a small model on a CPU
_PER_EVAL = 16  # perturbed texts scored in one batch by shapley and lime
_LIME_WIDTH = 0.25  # LIME's kernel width for texts (25 on its cosine distance x 100)


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
        logp = output_logits(model, inputs, context).float().log_softmax(-1)
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
    dev = model_device(model)
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
