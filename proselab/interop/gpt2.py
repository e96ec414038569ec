"""GPT-2: Hugging Face's ``GPT2LMHeadModel`` and ``GPT2ForSequenceClassification`` layouts, to and
from proselab's GPT and its classifier (whose head, ``score``, has GPT-2's name).

The GPT's parameter names are GPT-2's, so the mapping is one to one, except that Hugging Face
stores ``c_attn``, ``c_proj`` and ``c_fc`` as Conv1D, (in, out), where nn.Linear is (out, in).
A checkpoint directory holds ``config.json`` (``model_type: gpt2``), ``model.safetensors`` or
``pytorch_model.bin``, and ``tokenizer.json`` or ``vocab.json`` + ``merges.txt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..atomic import atomic_path
from ..chat import is_chat_tokenizer, jinja_template
from ..checkpoint import RunError, write_json
from ..config import Config, ModelConfig
from ..models import build_model
from ..tokenizers import Tokenizer, TokenizerError, load_tokenizer, vocab_span
from .common import generation_config

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
IGNORED = (".attn.bias", ".attn.masked_bias", ".crossattention.bias")  # old causal-mask buffers, not weights
SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # the tanh GELU proselab's MLP computes


def model_config(hf: dict[str, Any], where: Path) -> ModelConfig:
    """proselab's ModelConfig for a GPT-2 config.json; RunError names each option proselab lacks."""
    act = hf.get("activation_function", "gelu_new")
    problems = []
    if act not in SUPPORTED_ACTIVATIONS:
        problems.append(f"activation_function '{act}' (proselab's GPT uses gelu_new)")
    n_embd = hf.get("n_embd", 768)
    if hf.get("n_inner") not in (None, 4 * n_embd):
        problems.append(f"n_inner {hf['n_inner']} (proselab's MLP is 4 x n_embd = {4 * n_embd})")
    if abs(float(hf.get("layer_norm_epsilon", 1e-5)) - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon {hf['layer_norm_epsilon']} (proselab uses 1e-5)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if hf.get(flag):
            problems.append(f"{flag}: true")
    if hf.get("scale_attn_weights") is False:
        problems.append("scale_attn_weights: false")
    if problems:
        raise RunError(f"{where}: this GPT-2 variant is not supported: {'; '.join(problems)}")
    return ModelConfig(family="gpt", vocab_size=hf.get("vocab_size", 50257), block_size=hf.get("n_positions", 1024),
                       n_layer=hf.get("n_layer", 12), n_head=hf.get("n_head", 12), n_embd=n_embd, dropout=0.0,
                       bias=True, tie_weights=hf.get("tie_word_embeddings", True), labels=label_names(hf, where))


def label_names(hf: dict[str, Any], where: Path) -> list[str]:
    """A ``*ForSequenceClassification``'s label names in id order (from id2label); [] for an LM."""
    if not any(a.endswith("ForSequenceClassification") for a in hf.get("architectures") or []):
        return []
    id2label = hf.get("id2label") or {}
    try:
        labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    except (ValueError, TypeError):
        raise RunError(f"{where}: id2label must map label ids to names, got {id2label}") from None
    if len(labels) < 2 or [int(k) for k in sorted(id2label, key=int)] != list(range(len(labels))):
        raise RunError(f"{where}: id2label must name labels 0..n-1 (two or more), got {id2label}")
    return labels


def checkpoint_tokenizer(d: Path, V: int) -> Tokenizer:
    """A decoder-only checkpoint's tokenizer (tokenizer.json, or GPT-2's vocab.json + merges.txt),
    refused when its ids would index past the model's ``V`` embeddings."""
    file = d / "tokenizer.json"
    try:
        span = vocab_span(file) if file.is_file() else 0  # from the JSON: a huge one is refused before it is built
        tokenizer = load_tokenizer(d) if span <= V else None
    except TokenizerError as e:
        raise RunError(f"'{d}' has no usable tokenizer ({e})") from None
    size = span if tokenizer is None else max(span, tokenizer.vocab_size)
    if size > V:  # its ids would index past the embedding
        raise RunError(f"'{d}': the tokenizer has {size:,} tokens but the model only {V:,}")
    return tokenizer


def load(d: Path, cfg: Config, weights: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, Tokenizer]:
    """The GPT of ``cfg`` with a GPT-2 checkpoint's ``weights``, and the checkpoint's tokenizer."""
    tokenizer = checkpoint_tokenizer(d, cfg.model.vocab_size)
    state = {}
    for name, t in weights.items():
        if name.endswith(IGNORED):
            continue
        if not name.startswith(("transformer.", "lm_head.", "score.")):
            name = "transformer." + name  # saved from GPT2Model, without the LM head's prefix
        state[name] = t.t() if name.endswith(CONV1D) else t
    return checked_model(cfg.model, state, d, "GPT-2"), tokenizer


def checked_model(m: ModelConfig, state: dict[str, torch.Tensor], d: Path, what: str) -> torch.nn.Module:
    """The GPT of ``m`` with ``state`` (proselab's names) loaded, or a RunError naming the
    missing, unexpected or misshapen tensors (a tied head may be absent)."""
    model = build_model(m)
    ours = model.state_dict()
    unexpected = sorted(set(state) - set(ours))
    missing = sorted(k for k in set(ours) - set(state) if not (k == "lm_head.weight" and m.tie_weights))
    if unexpected or missing:
        raise RunError(f"'{d}': the weights do not match a {what} of this config.json "
                       f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})")
    for name, t in state.items():
        if t.shape != ours[name].shape:
            raise RunError(f"'{d}': {name} has shape {tuple(t.shape)}, but config.json implies {tuple(ours[name].shape)}")
    model.load_state_dict(state, strict=False)
    return model


def check_exportable(m: ModelConfig, run_dir: Path) -> None:
    """A RunError naming what a GPT-2 checkpoint cannot hold (a feed-forward other than GPT-2's)."""
    if m.activation != "gelu_tanh" or m.ffn_dim not in (0, 4 * m.n_embd):
        raise RunError(f"'{run_dir}' has a feed-forward GPT-2's layout cannot hold (model.activation={m.activation}, "
                       f"model.ffn_dim={m.ffn_dim}); GPT-2's is gelu_tanh, 4 x n_embd wide")


def _weights(model: torch.nn.Module, m: ModelConfig) -> dict[str, torch.Tensor]:
    """The model's weights in GPT-2's names and shapes; a bias-free model gets zero biases."""
    state = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and m.tie_weights:
            continue  # transformers ties it to transformer.wte.weight
        state[name] = (t.t() if name.endswith(CONV1D) else t).detach().float().contiguous().clone()
    if not m.bias:  # GPT-2 always has biases: zeros compute the same function
        for i in range(m.n_layer):
            p = f"transformer.h.{i}."
            for lin, width in (("attn.c_attn", 3 * m.n_embd), ("attn.c_proj", m.n_embd), ("mlp.c_fc", 4 * m.n_embd),
                               ("mlp.c_proj", m.n_embd), ("ln_1", m.n_embd), ("ln_2", m.n_embd)):
                state[p + lin + ".bias"] = torch.zeros(width)
        state["transformer.ln_f.bias"] = torch.zeros(m.n_embd)
    return state


def classifier_fields(m: ModelConfig, tokenizer: Tokenizer) -> dict[str, Any]:
    """id2label, label2id and pad_token_id of a classifier's config.json ({} for an LM).

    GPT2ForSequenceClassification reads the last token that is not ``pad_token_id``: the
    end-of-text token (or <unk>) is one a text does not end with.
    """
    if not m.labels:
        return {}
    pad = next((i for i in (tokenizer.eos_id, tokenizer.unk_id) if i is not None), 0)
    return {"id2label": dict(enumerate(m.labels)), "label2id": {name: i for i, name in enumerate(m.labels)},
            "pad_token_id": pad}


def export(model: torch.nn.Module, tokenizer: Tokenizer, cfg: Config, out: Path) -> None:
    """Write a GPT run as a GPT-2 checkpoint in ``out`` (model, config, generation config and
    tokenizer files, with the chat template of a chat run)."""
    m = cfg.model
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(_weights(model, m), str(tmp), metadata={"format": "pt"})
    bos = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    write_json(out / "config.json", {
        "architectures": ["GPT2ForSequenceClassification" if m.labels else "GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": m.vocab_size, "n_positions": m.block_size, "n_embd": m.n_embd, "n_layer": m.n_layer,
        "n_head": m.n_head, "n_inner": None, "activation_function": "gelu_new", "resid_pdrop": m.dropout,
        "embd_pdrop": m.dropout, "attn_pdrop": m.dropout, "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
        "bos_token_id": bos, "eos_token_id": tokenizer.eos_id, "tie_word_embeddings": m.tie_weights,
        "dtype": "float32", "use_cache": True, **classifier_fields(m, tokenizer),
    })
    if not m.labels:  # a classifier does not generate
        write_generation_config(tokenizer, cfg, out, bos)
    pad = tokenizer.id_to_token(classifier_fields(m, tokenizer)["pad_token_id"]) if m.labels else None
    write_tokenizer_files(tokenizer, cfg, out, pad)


def write_generation_config(tokenizer: Tokenizer, cfg: Config, out: Path, bos: int | None) -> None:
    """A decoder-only run's generation_config.json."""
    g = cfg.generation
    eos = g.eos_token_id if g.eos_token_id is not None else tokenizer.eos_id  # a chat run's: end of turn first
    write_json(out / "generation_config.json", generation_config(g, bos, eos))


def write_tokenizer_files(tokenizer: Tokenizer, cfg: Config, out: Path, pad: str | None = None) -> None:
    """tokenizer.json, tokenizer_config.json (with a chat run's template) and
    special_tokens_map.json of a decoder-only run; ``pad`` names a classifier's padding token."""
    tokenizer.save(out / "tokenizer.json")
    special = tokenizer.special_tokens()
    if pad is not None:  # batches of texts are padded with the token config.json's pad_token_id names
        special = {**special, "pad_token": pad}
    tok_cfg = {"tokenizer_class": "GPT2TokenizerFast" if tokenizer.kind == "gpt2" else "PreTrainedTokenizerFast",
               "model_max_length": cfg.model.block_size, "clean_up_tokenization_spaces": False,
               **{k: v for k, v in special.items() if v is not None}}
    if is_chat_tokenizer(tokenizer, cfg.data.chat_template):
        tok_cfg["chat_template"] = jinja_template(cfg.data.chat_template)
    write_json(out / "tokenizer_config.json", tok_cfg)
    write_json(out / "special_tokens_map.json", {k: v for k, v in special.items() if v is not None})
