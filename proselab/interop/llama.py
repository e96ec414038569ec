"""Llama: Hugging Face's ``LlamaForCausalLM`` layout, to and from proselab's GPT in Llama style
(rotary positions, RMSNorm, a gated SiLU feed-forward, grouped key/value heads, no biases).
Three more model types share the layout: Qwen2 (biases on q, k and v only: ``model.qkv_bias``),
Qwen3 (an RMSNorm on each query and key head: ``model.qk_norm``, and heads of their own width:
``model.head_dim``) and Mistral (a sliding attention window, which is full attention over
contexts no longer than it: the import's window, ``model.block_size``, is the sliding window).
Phi-3 is Mistral's with q, k and v in one ``qkv_proj`` (already ``c_attn``'s stacking) and the
gate and up projections in one ``gate_up_proj``. Gemma (the first) is Llama's names with a
GELU-tanh gate, token embeddings times sqrt(hidden size) (``model.embed_multiplier``) and norms
that multiply by 1 + weight (stored here as the weight plus 1). An import from Mistral, Phi-3
or Gemma keeps its model_type in ``model.hf_type``, so export writes the layout back.

The GPT keeps GPT-2's names, so the mapping renames: ``q_proj``, ``k_proj`` and ``v_proj`` are
stacked into ``c_attn`` (queries, then keys, then values), ``o_proj`` is ``attn.c_proj``,
``gate_proj``/``up_proj``/``down_proj`` are ``mlp.c_gate``/``mlp.c_fc``/``mlp.c_proj``, and the
norms are ``ln_1``, ``ln_2`` and ``ln_f``. Hugging Face's checkpoints already hold q and k in
the rotate-half layout ``rope_tables`` computes, so nothing is permuted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..atomic import atomic_path
from ..checkpoint import RunError, write_json
from ..config import Config, ModelConfig
from ..models.layers import RopeScaling
from ..tokenizers import Tokenizer
from .gpt2 import (checked_model, checkpoint_tokenizer, classifier_fields, label_names, write_generation_config,
                   write_tokenizer_files)

# Hugging Face name -> proselab's, outside the blocks (score: a classifier's head)
TOP_NAMES = {"model.embed_tokens.weight": "transformer.wte.weight", "model.norm.weight": "transformer.ln_f.weight",
             "lm_head.weight": "lm_head.weight", "score.weight": "score.weight"}
# Hugging Face name (after "model.layers.{i}.") -> proselab's (after "transformer.h.{i}."); the
# biases are there only with attention_bias / mlp_bias (model.bias), the q and k norms in Qwen3
LAYER_NAMES = {"input_layernorm.weight": "ln_1.weight", "post_attention_layernorm.weight": "ln_2.weight",
               "self_attn.o_proj.weight": "attn.c_proj.weight", "mlp.gate_proj.weight": "mlp.c_gate.weight",
               "mlp.up_proj.weight": "mlp.c_fc.weight", "mlp.down_proj.weight": "mlp.c_proj.weight",
               "self_attn.o_proj.bias": "attn.c_proj.bias", "mlp.gate_proj.bias": "mlp.c_gate.bias",
               "mlp.up_proj.bias": "mlp.c_fc.bias", "mlp.down_proj.bias": "mlp.c_proj.bias",
               "self_attn.q_norm.weight": "attn.q_norm.weight", "self_attn.k_norm.weight": "attn.k_norm.weight"}
HF_TOP_NAMES = {b: a for a, b in TOP_NAMES.items()}
HF_LAYER_NAMES = {b: a for a, b in LAYER_NAMES.items()}
QKV = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight")
IGNORED = ("rotary_emb.inv_freq",)  # a buffer older checkpoints saved: recomputed from rope_theta


def _rope(hf: dict[str, Any]) -> tuple[float, str, dict[str, Any]]:
    """The rotary base, scaling type and scaling parameters, from transformers 5's
    ``rope_parameters`` or 4's ``rope_theta`` + ``rope_scaling``."""
    params = {**(hf.get("rope_scaling") or {}), **(hf.get("rope_parameters") or {})}
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    kind = params.get("rope_type") or params.get("type") or "default"
    return float(theta), str(kind), params


def _scaling_fields(kind: str, params: dict[str, Any], hf: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """ModelConfig's rope fields for a scaled checkpoint ({} without scaling): Llama 3.1's llama3,
    linear (position interpolation) or yarn (with DeepSeek's mscale folded into its attention
    factor)."""
    if kind == "default":
        return {}
    if kind not in ("llama3", "linear", "yarn", "longrope"):
        problems.append(f"rope scaling '{kind}' (proselab computes plain rotary positions, llama3, linear, yarn "
                        "and longrope)")
        return {}
    try:
        if kind == "linear":
            return {"rope_type": "linear", "rope_factor": float(params["factor"])}
        original = int(params.get("original_max_position_embeddings") or hf["original_max_position_embeddings"])
        if kind == "longrope":  # Phi-3's; proselab's context is the original one, where the short factors apply
            factor = float(params.get("factor") or hf.get("max_position_embeddings", 0) / original)
            return {"rope_type": "longrope", "rope_factor": max(factor, 1.0), "rope_original_context": original,
                    "rope_short_factor": [float(f) for f in params["short_factor"]],
                    "rope_long_factor": [float(f) for f in params.get("long_factor") or []],
                    "rope_attention_factor": float(params.get("attention_factor") or 0.0)}
        if kind == "llama3":
            return {"rope_type": "llama3", "rope_factor": float(params["factor"]),
                    "rope_low_freq_factor": float(params["low_freq_factor"]),
                    "rope_high_freq_factor": float(params["high_freq_factor"]), "rope_original_context": original}
        factor = float(params.get("factor") or hf.get("max_position_embeddings", 0) / original)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        needed = {"linear": "factor", "llama3": "factor, low_freq_factor, high_freq_factor and "
                  "original_max_position_embeddings", "longrope": "short_factor and original_max_position_embeddings"
                  }.get(kind, "original_max_position_embeddings")
        problems.append(f"rope scaling '{kind}' without a usable {e} ({needed} are needed)")
        return {}
    if params.get("truncate", True) is False:
        problems.append("rope scaling 'yarn' with truncate false (proselab rounds the ramp's ends outwards)")
    attention = params.get("attention_factor")
    mscale, mscale_all = params.get("mscale"), params.get("mscale_all_dim")
    if attention is None and mscale and mscale_all:  # DeepSeek's: a ratio of two of YaRN's magnitudes

        def magnitude(m: float) -> float:
            return 0.1 * m * math.log(factor) + 1.0 if factor > 1 else 1.0

        attention = magnitude(float(mscale)) / magnitude(float(mscale_all))
    return {"rope_type": "yarn", "rope_factor": factor, "rope_original_context": original,
            "rope_beta_fast": float(params.get("beta_fast") or 32.0),
            "rope_beta_slow": float(params.get("beta_slow") or 1.0),
            "rope_attention_factor": float(attention or 0.0)}


# model_type -> the name of its classes (LlamaForCausalLM, ...)
NAMES = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "mistral": "Mistral", "phi3": "Phi3", "gemma": "Gemma"}
WINDOWED = ("mistral", "phi3")  # model types with a sliding window over the whole model
KEPT_TYPES = (*WINDOWED, "gemma")  # model types an import keeps in model.hf_type (export writes them back)
ACTIVATIONS = {"gemma": ("gelu_tanh", "gelu_pytorch_tanh")}  # model_type -> (proselab's, transformers') if not silu
FUSED_QKV, FUSED_GATE_UP = "self_attn.qkv_proj.weight", "mlp.gate_up_proj.weight"  # Phi-3's two fused projections


def model_config(hf: dict[str, Any], where: Path | str) -> ModelConfig:
    """proselab's ModelConfig for a Llama, Qwen2, Qwen3, Mistral or Phi-3 config.json; RunError
    names each option proselab lacks."""
    C, heads = hf.get("hidden_size", 4096), hf.get("num_attention_heads", 32)
    model_type = hf.get("model_type", "llama")
    theta, kind, params = _rope(hf)
    problems: list[str] = []
    scaling = _scaling_fields(kind, params, hf, problems)
    block = hf.get("max_position_embeddings", 2048)
    if scaling.get("rope_type") == "yarn":  # Qwen's recipe adds yarn without raising max_position_embeddings
        block = max(block, int(scaling["rope_factor"] * scaling["rope_original_context"]))
    if model_type in ("qwen2", "qwen3") and hf.get("use_sliding_window"):
        problems.append("use_sliding_window (a sliding attention window on some layers only)")
    if scaling.get("rope_type") == "longrope":  # past it, transformers switches to the long factors
        block = min(block, scaling["rope_original_context"])
    if model_type in WINDOWED and hf.get("sliding_window"):  # within the window, attention is full attention
        block = min(block, int(hf["sliding_window"]))
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor")) or 1.0
    head_size = hf.get("head_dim") or C // heads
    rope_dim = 0 if float(partial) == 1.0 else int(head_size * float(partial))  # transformers rounds it down
    ours, theirs = ACTIVATIONS.get(model_type, ("silu", "silu"))
    act = hf.get("hidden_activation") or hf.get("hidden_act") or theirs
    if act != theirs and not (model_type == "gemma" and act == "gelu"):  # transformers runs Gemma's "gelu" as tanh
        problems.append(f"hidden_act '{act}' ({NAMES.get(model_type, 'Llama')}'s is {theirs})")
    head_dim = hf.get("head_dim") or 0
    head_dim = 0 if head_dim == C // heads and C % heads == 0 else int(head_dim)  # 0: the usual width
    if bool(hf.get("attention_bias", False)) != bool(hf.get("mlp_bias", False)):
        problems.append("attention_bias and mlp_bias differ (proselab's model.bias sets both)")
    if problems:
        raise RunError(f"{where}: this {NAMES.get(model_type, 'Llama')} variant is not supported: "
                       f"{'; '.join(problems)}")
    return ModelConfig(family="gpt", vocab_size=hf.get("vocab_size", 32000), block_size=block,
                       n_layer=hf.get("num_hidden_layers", 32), n_head=heads,
                       n_kv_head=hf.get("num_key_value_heads") or heads, n_embd=C,
                       ffn_dim=hf.get("intermediate_size", 11008), dropout=0.0,
                       bias=model_type in ("llama", "qwen3") and bool(hf.get("attention_bias")),
                       qkv_bias=model_type == "qwen2", head_dim=head_dim, qk_norm=model_type == "qwen3",
                       labels=label_names(hf, where),
                       tie_weights=bool(hf.get("tie_word_embeddings", False)), rope=True, rope_theta=theta,
                       norm="rmsnorm", norm_eps=float(hf.get("rms_norm_eps", 1e-6)), activation=ours,
                       gated_ffn=True, rope_dim=rope_dim, hf_type=model_type if model_type in KEPT_TYPES else "",
                       embed_multiplier=math.sqrt(C) if model_type == "gemma" else 0.0, **scaling)


def state_from_hf(weights: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A LlamaForCausalLM state dict in proselab's names (q, k and v stacked into c_attn)."""
    state = {}
    for name, t in weights.items():
        if name.endswith(IGNORED):
            continue
        if not name.startswith(("model.", "lm_head.", "score.")):
            name = "model." + name  # saved from LlamaModel, without the LM head's prefix
        state[name] = t
    out = {ours: state.pop(hf) for hf, ours in TOP_NAMES.items() if hf in state}
    for i in range(cfg.n_layer):
        hf, ours = f"model.layers.{i}.", f"transformer.h.{i}."
        for a, b in LAYER_NAMES.items():
            if hf + a in state:
                out[ours + b] = state.pop(hf + a)
        if hf + FUSED_QKV in state:  # Phi-3: stacked as c_attn stacks them
            out[ours + "attn.c_attn.weight"] = state.pop(hf + FUSED_QKV)
        if hf + FUSED_GATE_UP in state:  # Phi-3: the gate's rows, then the up projection's
            out[ours + "mlp.c_gate.weight"], out[ours + "mlp.c_fc.weight"] = state.pop(hf + FUSED_GATE_UP).chunk(2)
        if all(hf + n in state for n in QKV):
            out[ours + "attn.c_attn.weight"] = torch.cat([state.pop(hf + n) for n in QKV])
            if cfg.bias or cfg.qkv_bias:
                out[ours + "attn.c_attn.bias"] = torch.cat([state.pop(hf + n.replace("weight", "bias"), None)
                                                            for n in QKV])
    if cfg.tie_weights:
        out.pop("lm_head.weight", None)  # transformers saves the tied head too, or not: it is wte
    if cfg.hf_type == "gemma":  # Gemma's norms multiply by 1 + weight
        out = {k: t + 1 if _is_norm(k) else t for k, t in out.items()}
    return out | state  # what is left keeps Hugging Face's names: unexpected, for load's error


def load(d: Path, cfg: Config, weights: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, Tokenizer]:
    """The GPT of ``cfg`` with a Llama checkpoint's ``weights``, and the checkpoint's tokenizer."""
    tokenizer = checkpoint_tokenizer(d, cfg.model.vocab_size)
    try:
        state = state_from_hf(weights, cfg.model)
    except TypeError:  # torch.cat over a missing bias
        raise RunError(f"'{d}': the weights lack the attention biases config.json promises") from None
    return checked_model(cfg.model, state, d, NAMES[layout(cfg.model)]), tokenizer


def _is_norm(name: str) -> bool:
    """Whether proselab's parameter ``name`` is an RMSNorm's weight (not q and k norms: Gemma has none)."""
    return name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))


def layout(m: ModelConfig) -> str:
    """The model_type whose layout holds a Llama-style run: an import's mistral or phi3
    (``model.hf_type``), qwen3 (q and k norms), qwen2 (biases on q, k and v only) or llama."""
    if m.hf_type in KEPT_TYPES and not (m.bias or m.qkv_bias or m.qk_norm):
        return m.hf_type
    return "qwen3" if m.qk_norm else "qwen2" if m.qkv_bias and not m.bias else "llama"


def is_llama_style(m: ModelConfig) -> bool:
    """Whether a gpt config uses any Llama option (then only Llama's layout can hold it)."""
    return (m.rope or m.norm == "rmsnorm" or m.gated_ffn or bool(m.n_kv_head and m.n_kv_head != m.n_head)
            or m.qkv_bias or m.qk_norm or bool(m.head_dim))


def check_exportable(m: ModelConfig, run_dir: Path) -> None:
    """A RunError naming what a Llama checkpoint cannot hold (GPT-2's parts in a Llama-style run)."""
    problems = [text for bad, text in (
        (not m.rope, "learned positions (model.rope=false)"), (m.norm != "rmsnorm", f"model.norm={m.norm}"),
        (not m.gated_ffn, "a feed-forward without a gate (model.gated_ffn=false)"),
        (m.activation != ACTIVATIONS.get(layout(m), ("silu",))[0], f"model.activation={m.activation}"),
        (m.qk_norm and m.qkv_bias and not m.bias, "model.qk_norm with model.qkv_bias (Qwen3's and Qwen2's parts)"),
    ) if bad]
    if problems:
        raise RunError(f"'{run_dir}' mixes GPT-2's and Llama's parts ({', '.join(problems)}); neither Hugging Face "
                       "layout holds it: train it with all of model.rope, norm=rmsnorm, gated_ffn and activation=silu, "
                       "or with none of them")


def export(model: torch.nn.Module, tokenizer: Tokenizer, cfg: Config, out: Path) -> None:
    """Write a Llama-style GPT run as a LlamaForCausalLM checkpoint in ``out`` (model, config,
    generation config and tokenizer files, with the chat template of a chat run); with biases on
    q, k and v only, as Qwen2ForCausalLM; with q and k norms, as Qwen3ForCausalLM; a classifier
    as the layout's ForSequenceClassification."""
    m = cfg.model
    kind = layout(m)
    kv_heads = m.n_kv_head or m.n_head
    hs = m.head_size()
    state = {}
    weights = model.state_dict()
    for name, t in weights.items():
        t = t.detach().float().contiguous()
        if kind == "gemma" and _is_norm(name):
            t = t - 1  # Gemma's norms multiply by 1 + weight
        if name == "lm_head.weight" and m.tie_weights:
            continue  # transformers ties it to model.embed_tokens.weight
        if kind == "phi3" and name.endswith(("attn.c_attn.weight", "mlp.c_gate.weight", "mlp.c_fc.weight")):
            i = name.split(".")[2]
            if name.endswith("c_attn.weight"):
                state[f"model.layers.{i}.{FUSED_QKV}"] = t.clone()
            elif name.endswith("c_gate.weight"):
                state[f"model.layers.{i}.{FUSED_GATE_UP}"] = torch.cat(
                    [t, weights[name.replace("c_gate", "c_fc")].detach().float()])
            continue
        if name.endswith(("attn.c_attn.weight", "attn.c_attn.bias")):
            i, param = name.split(".")[2], name.rsplit(".", 1)[1]
            parts = t.split([m.n_head * hs, kv_heads * hs, kv_heads * hs])
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), parts):
                state[f"model.layers.{i}.self_attn.{proj}.{param}"] = part.clone()
            continue
        state[hf_name(name)] = t.clone()
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    bos = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    write_json(out / "config.json", {
        "architectures": [NAMES[kind] + ("ForSequenceClassification" if m.labels else "ForCausalLM")],
        "model_type": kind, "vocab_size": m.vocab_size,
        "hidden_size": m.n_embd, "intermediate_size": m.ffn_dim or 4 * m.n_embd, "num_hidden_layers": m.n_layer,
        "num_attention_heads": m.n_head, "num_key_value_heads": kv_heads, "head_dim": hs,
        "hidden_act": ACTIVATIONS.get(kind, ("silu", "silu"))[1],
        "max_position_embeddings": m.block_size, "rms_norm_eps": m.norm_eps, "initializer_range": 0.02,
        "rope_theta": m.rope_theta, "rope_scaling": _rope_scaling(m),
        "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_theta, **(_rope_scaling(m) or {}),
                            **({"partial_rotary_factor": m.rope_dim / hs} if m.rope_dim else {})},
        **({"partial_rotary_factor": m.rope_dim / hs} if m.rope_dim else {}),
        "attention_bias": m.bias, "mlp_bias": m.bias, "attention_dropout": 0.0, "tie_word_embeddings": m.tie_weights,
        "bos_token_id": bos, "eos_token_id": tokenizer.eos_id, "dtype": "float32", "use_cache": True,
        **({"use_sliding_window": False, "sliding_window": None, "max_window_layers": m.n_layer}
           if kind in ("qwen2", "qwen3") else {}),
        **({"sliding_window": None} if kind in WINDOWED else {}),  # the context is the window (model_config)
        **({"original_max_position_embeddings": m.rope_original_context, "pad_token_id": tokenizer.eos_id}
           if kind == "phi3" else {}),  # Phi3Config's own pad default (32000) may be past a small vocabulary
        **classifier_fields(m, tokenizer),
    })
    if not m.labels:  # a classifier does not generate
        write_generation_config(tokenizer, cfg, out, bos)
    pad = tokenizer.id_to_token(classifier_fields(m, tokenizer)["pad_token_id"]) if m.labels else None
    write_tokenizer_files(tokenizer, cfg, out, pad)


def _rope_scaling(m: ModelConfig) -> dict[str, Any] | None:
    """config.json's rope_scaling for a scaled run (None without scaling)."""
    if not m.rope_factor:
        return None
    if m.rope_type == "linear":
        return {"rope_type": "linear", "factor": m.rope_factor}
    if m.rope_type == "llama3":
        return {"rope_type": "llama3", "factor": m.rope_factor, "low_freq_factor": m.rope_low_freq_factor,
                "high_freq_factor": m.rope_high_freq_factor,
                "original_max_position_embeddings": m.rope_original_context}
    if m.rope_type == "longrope":  # the attention factor written out: max_position_embeddings is the original context
        return {"rope_type": "longrope", "factor": m.rope_factor, "short_factor": m.rope_short_factor,
                "long_factor": m.rope_long_factor or m.rope_short_factor,
                "original_max_position_embeddings": m.rope_original_context,
                "attention_factor": RopeScaling("longrope", m.rope_factor, original_context=m.rope_original_context,
                                                attention_factor=m.rope_attention_factor).magnitude()}
    return {"rope_type": "yarn", "factor": m.rope_factor, "original_max_position_embeddings": m.rope_original_context,
            "beta_fast": m.rope_beta_fast, "beta_slow": m.rope_beta_slow,
            **({"attention_factor": m.rope_attention_factor} if m.rope_attention_factor else {})}


def hf_name(name: str) -> str:
    """proselab's name of a parameter other than c_attn -> Hugging Face's."""
    if name in HF_TOP_NAMES:
        return HF_TOP_NAMES[name]
    _, _, i, rest = name.split(".", 3)  # transformer.h.{i}.{rest}
    return f"model.layers.{i}.{HF_LAYER_NAMES[rest]}"
