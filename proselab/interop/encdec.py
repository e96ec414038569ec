"""What the encoder-decoder layouts (marian, bart, t5) share: a weight table mapping proselab's
TransformerSeq2Seq names to Hugging Face's, read and written through it; the tokenizers; the
generation config of an exported run.

A table row is (proselab name, [Hugging Face names]): one name maps one to one, several are
concatenated along the first dimension into one of proselab's fused projections (q, k, v into
``c_attn``; k, v into ``c_kv``) and split again on export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..atomic import atomic_path
from ..checkpoint import RunError, write_json
from ..config import Config, ModelConfig
from ..models import build_model
from ..tokenizers import Tokenizer, TokenizerError

Table = list[tuple[str, list[str]]]

ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "swish": "silu", "silu": "silu", "gelu_new": "gelu_tanh",
               "gelu_pytorch_tanh": "gelu_tanh"}  # Hugging Face's name -> proselab's model.activation
HF_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "silu": "swish", "gelu_tanh": "gelu_new"}


def activation(name: Any, where: Path, problems: list[str]) -> str:
    """proselab's name of a Hugging Face activation; an unknown one is added to ``problems``."""
    if name not in ACTIVATIONS:
        problems.append(f"activation '{name}' (proselab has {', '.join(sorted(ACTIVATIONS))})")
        return "gelu"
    return ACTIVATIONS[name]


def refuse(where: Path, kind: str, problems: list[str]) -> None:
    """A RunError naming every unsupported option of a checkpoint's config.json."""
    if problems:
        raise RunError(f"{where}: this {kind} variant is not supported: {'; '.join(problems)}")


def attention_rows(ours: str, theirs: str, names: tuple[str, ...], bias: bool, cross: bool) -> Table:
    """The rows of one attention: q, k, v (fused) and the output projection; ``names`` are
    Hugging Face's (q, k, v, out) suffixes."""
    q, k, v, o = (f"{theirs}.{n}" for n in names)
    rows = []
    for suffix in ("weight", "bias") if bias else ("weight",):
        if cross:
            rows += [(f"{ours}.c_q.{suffix}", [f"{q}.{suffix}"]),
                     (f"{ours}.c_kv.{suffix}", [f"{k}.{suffix}", f"{v}.{suffix}"])]
        else:
            rows.append((f"{ours}.c_attn.{suffix}", [f"{q}.{suffix}", f"{k}.{suffix}", f"{v}.{suffix}"]))
        rows.append((f"{ours}.c_proj.{suffix}", [f"{o}.{suffix}"]))
    return rows


def layer_rows(ours: str, theirs: str, bias: bool) -> Table:
    """The rows of one linear layer or norm: its weight, and its bias when it has one."""
    rows = [(f"{ours}.weight", [f"{theirs}.weight"])]
    return rows + [(f"{ours}.bias", [f"{theirs}.bias"])] if bias else rows


def load_model(cfg: Config, weights: dict[str, torch.Tensor], table: Table, where: Path,
               ignored: tuple[str, ...] = (), aliases: dict[str, str] | None = None,
               kind: str = "checkpoint") -> torch.nn.Module:
    """The TransformerSeq2Seq of ``cfg`` with the checkpoint's ``weights`` mapped through ``table``.

    Args:
        ignored: Hugging Face names (suffixes) that are not weights proselab keeps (buffers it computes).
        aliases: other names a checkpoint may store a weight under (a tied copy) -> the table's name.
    """
    weights = dict(weights)
    for alt, name in (aliases or {}).items():
        if alt in weights and name not in weights:
            weights[name] = weights[alt]
        weights.pop(alt, None)
    model = build_model(cfg.model)
    ours = model.state_dict()
    state, used, missing = {}, set(), []
    for name, theirs in table:
        if not all(t in weights for t in theirs):
            missing += [t for t in theirs if t not in weights]
            continue
        state[name] = torch.cat([weights[t] for t in theirs]).float() if len(theirs) > 1 else weights[theirs[0]].float()
        used.update(theirs)
    unexpected = sorted(k for k in weights if k not in used and not k.endswith(ignored))
    if missing or unexpected:
        raise RunError(f"'{where}': the weights do not match a {kind} of this config.json "
                       f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})")
    for name, t in state.items():
        if name == "logits_bias":
            state[name] = t = t.reshape(-1)
        if name not in ours or t.shape != ours[name].shape:
            want = tuple(ours[name].shape) if name in ours else "nothing"
            raise RunError(f"'{where}': {table_name(table, name)} has shape {tuple(t.shape)}, but config.json "
                           f"implies {want}")
    missing_ours = sorted(set(ours) - set(state) - _tied(model))
    assert not missing_ours, f"the weight table leaves out {missing_ours[:5]}"
    model.load_state_dict(state, strict=False)
    return model


def table_name(table: Table, ours: str) -> str:
    return "+".join(next(theirs for name, theirs in table if name == ours))


def _tied(model: torch.nn.Module) -> set[str]:
    """State-dict names that repeat a parameter stored under another name (tied embeddings)."""
    seen, tied = {}, set()
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:
            tied.add(name)
        seen.setdefault(id(t), name)
    return tied


def export_weights(model: torch.nn.Module, table: Table) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face's names: each fused projection split again."""
    ours = model.state_dict()
    out = {}
    for name, theirs in table:
        t = ours[name].detach().float()
        if name == "logits_bias":
            t = t[None]  # (1, V), as transformers keeps it
        for n, part in zip(theirs, t.chunk(len(theirs))):
            out[n] = part.contiguous().clone()
    return out


def save_weights(out: Path, state: dict[str, torch.Tensor]) -> None:
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})


def tokenizers(d: Path, model_type: str) -> tuple[Tokenizer, Tokenizer | None]:
    """The checkpoint's target tokenizer and its separate source tokenizer (None when shared)."""
    from .hf_tokenizers import load_pretrained_tokenizers

    try:
        return load_pretrained_tokenizers(d, model_type)
    except TokenizerError as e:
        raise RunError(f"'{d}' has no usable tokenizer ({e})") from None


def check_vocab(d: Path, m: ModelConfig, tokenizer: Tokenizer, src: Tokenizer | None) -> None:
    """A tokenizer spanning more ids than the embedding would index past it."""
    for tok, size, side in ((tokenizer, m.vocab_size, "target"), (src, m.src_vocab_size or m.vocab_size, "source")):
        if tok is not None and tok.vocab_size > size:
            raise RunError(f"'{d}': the {side} tokenizer has {tok.vocab_size:,} tokens but the model only {size:,}")


def generation_json(cfg: Config, eos: int, pad: int, bos: int | None) -> dict[str, Any]:
    """generation_config.json of a seq2seq run: its decoding defaults in transformers' names."""
    g, m = cfg.generation, cfg.model
    gen: dict[str, Any] = {"decoder_start_token_id": m.bos_id, "eos_token_id": eos, "pad_token_id": pad,
                           "bos_token_id": bos, "num_beams": g.num_beams, "length_penalty": g.length_penalty,
                           "max_length": g.max_new_tokens + 1, "do_sample": g.do_sample,
                           "early_stopping": g.early_stopping, "no_repeat_ngram_size": g.no_repeat_ngram_size,
                           "forced_bos_token_id": g.forced_bos_token_id, "forced_eos_token_id": g.forced_eos_token_id}
    if g.min_new_tokens:
        gen["min_length"] = g.min_new_tokens + 1
    if g.do_sample:
        gen.update({"temperature": g.temperature, "top_k": g.top_k or None, "top_p": g.top_p})
    if g.suppress_tokens:
        gen["bad_words_ids"] = [[i] for i in g.suppress_tokens]
    return {k: v for k, v in gen.items() if v is not None}


def write_generation_config(out: Path, cfg: Config, eos: int, pad: int, bos: int | None) -> None:
    write_json(out / "generation_config.json", generation_json(cfg, eos, pad, bos))


SELF_ATTN = ("q_proj", "k_proj", "v_proj", "out_proj")  # Marian's and BART's projection names


def fairseq_table(m: ModelConfig, learned: bool) -> Table:
    """The weight table of Marian and BART (both from fairseq's layout): ``learned`` adds BART's
    position tables and embedding layernorms."""
    share = m.share_embeddings
    rows: Table = ([("src_emb.weight", ["model.shared.weight"])] if share else
                   [("src_emb.weight", ["model.encoder.embed_tokens.weight"]),
                    ("tgt_emb.weight", ["model.decoder.embed_tokens.weight"])])
    if not m.tie_weights:
        rows.append(("head.weight", ["lm_head.weight"]))
    rows.append(("logits_bias", ["final_logits_bias"]))
    for side, ours in (("encoder", "src"), ("decoder", "tgt")):
        if learned:
            rows.append((f"{ours}_pos.weight", [f"model.{side}.embed_positions.weight"]))
            rows += layer_rows(f"{ours}_emb_ln", f"model.{side}.layernorm_embedding", True)
    for i in range(m.n_layer):
        p, q = f"encoder.{i}", f"model.encoder.layers.{i}"
        rows += attention_rows(f"{p}.attn", f"{q}.self_attn", SELF_ATTN, True, False)
        rows += layer_rows(f"{p}.ln_1", f"{q}.self_attn_layer_norm", True)
        rows += layer_rows(f"{p}.mlp.c_fc", f"{q}.fc1", True) + layer_rows(f"{p}.mlp.c_proj", f"{q}.fc2", True)
        rows += layer_rows(f"{p}.ln_2", f"{q}.final_layer_norm", True)
    for i in range(m.n_dec_layer or m.n_layer):
        p, q = f"decoder.{i}", f"model.decoder.layers.{i}"
        rows += attention_rows(f"{p}.attn", f"{q}.self_attn", SELF_ATTN, True, False)
        rows += layer_rows(f"{p}.ln_1", f"{q}.self_attn_layer_norm", True)
        rows += attention_rows(f"{p}.cross", f"{q}.encoder_attn", SELF_ATTN, True, True)
        rows += layer_rows(f"{p}.ln_2", f"{q}.encoder_attn_layer_norm", True)
        rows += layer_rows(f"{p}.mlp.c_fc", f"{q}.fc1", True) + layer_rows(f"{p}.mlp.c_proj", f"{q}.fc2", True)
        rows += layer_rows(f"{p}.ln_3", f"{q}.final_layer_norm", True)
    return rows


def fairseq_aliases(m: ModelConfig) -> dict[str, str]:
    """Tied copies a Marian or BART checkpoint may also store, read as the shared embedding."""
    if not m.share_embeddings:
        return {}
    return {f"model.{side}.embed_tokens.weight": "model.shared.weight" for side in ("encoder", "decoder")}


def layer_counts(hf: dict[str, Any], problems: list[str], d_model: int) -> dict[str, int]:
    """Marian's and BART's sizes: layers, heads and feed-forward width (both sides' must agree
    where proselab has one value)."""
    for enc, dec in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if hf.get(enc) != hf.get(dec):
            problems.append(f"{enc} {hf.get(enc)} and {dec} {hf.get(dec)} differ")
    heads = hf.get("encoder_attention_heads") or 1
    if d_model % heads:
        problems.append(f"d_model {d_model} is not a multiple of encoder_attention_heads {heads}")
    return {"n_layer": hf.get("encoder_layers", 6), "n_dec_layer": hf.get("decoder_layers", 6), "n_head": heads,
            "ffn_dim": hf.get("encoder_ffn_dim", 4 * d_model)}


def save_tokenizers(out: Path, model_type: str, tokenizer: Tokenizer, src: Tokenizer | None) -> None:
    from .hf_tokenizers import save_pretrained_tokenizers

    try:
        save_pretrained_tokenizers(out, model_type, tokenizer, src)
    except TokenizerError as e:
        raise RunError(f"the run's tokenizer cannot be written in {model_type}'s layout ({e})") from None
