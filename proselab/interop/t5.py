"""T5: Hugging Face's ``T5ForConditionalGeneration`` layout (T5 v1.0, and v1.1 / Flan-T5 with
their gated-GELU feed-forward and separate head), to and from proselab's TransformerSeq2Seq.

T5 is a pre-RMSNorm Transformer without biases, with no position embeddings but a learned
bias per relative-position bucket added to the self-attention scores (learned in the first
layer, shared by the others), unscaled attention, and unscaled embeddings. v1.0 ties its head
to the embedding and scales the decoder output by d_model ** -0.5 before it; v1.1 does
neither. Sources and targets are ``ids </s>``; the decoder starts from <pad>. A checkpoint
directory holds ``config.json`` (``model_type: t5``), the weights, and ``tokenizer.json`` or
``spiece.model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import RunError, write_json
from ..config import Config, ModelConfig
from ..models.encdec import ffn_width
from ..tokenizers import Tokenizer
from . import encdec
from .encdec import Table, attention_rows, layer_rows

ATTN = ("q", "k", "v", "o")
FEED_FORWARD = {"relu": ("relu", False), "gelu": ("gelu", False), "gated-gelu": ("gelu_tanh", True),
                "gated-gelu_new": ("gelu_tanh", True), "gated-relu": ("relu", True), "gated-silu": ("silu", True)}
HF_FEED_FORWARD = {v: k for k, v in reversed(FEED_FORWARD.items())}


def model_config(hf: dict[str, Any], where: Path) -> ModelConfig:
    """proselab's ModelConfig for a T5 config.json; RunError names each option proselab lacks."""
    problems: list[str] = []
    d, heads = hf.get("d_model", 512), hf.get("num_heads", 8)
    proj = hf.get("feed_forward_proj", "relu")
    if proj not in FEED_FORWARD:
        problems.append(f"feed_forward_proj '{proj}' (proselab builds {', '.join(FEED_FORWARD)})")
    if hf.get("d_kv", d // max(heads, 1)) * heads != d:
        problems.append(f"d_kv {hf.get('d_kv')} x num_heads {heads} != d_model {d} (proselab's heads split d_model)")
    encdec.refuse(where, "T5", problems)
    act, gated = FEED_FORWARD[proj]
    # v1.0 ties its head and scales; v1.1 does neither. transformers 5 saves tie_word_embeddings true
    # with scale_decoder_outputs false for v1.1 (and ties only when the checkpoint has no lm_head)
    scale = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
    tie = hf.get("tie_word_embeddings", True) is not False and scale is not False
    return ModelConfig(family="seq2seq", arch="transformer", vocab_size=hf.get("vocab_size", 32128), n_embd=d,
                       n_head=heads, n_layer=hf.get("num_layers", 6),
                       n_dec_layer=hf.get("num_decoder_layers") or hf.get("num_layers", 6),
                       ffn_dim=hf.get("d_ff", 2048),
                       dropout=0.0, bias=False, tie_weights=tie, share_embeddings=True,
                       bos_id=hf.get("decoder_start_token_id", hf.get("pad_token_id", 0)), activation=act,
                       gated_ffn=gated, norm="rmsnorm", norm_eps=float(hf.get("layer_norm_epsilon", 1e-6)),
                       norm_first=True, positions="relative", rel_buckets=hf.get("relative_attention_num_buckets", 32),
                       rel_max_distance=hf.get("relative_attention_max_distance", 128), embed_scale=False,
                       attn_scale=False, head_scale=bool(scale), hf_type="t5")


def table(m: ModelConfig) -> Table:
    """proselab's names -> T5's."""
    rows: Table = [("src_emb.weight", ["shared.weight"])]
    if not m.tie_weights:
        rows.append(("head.weight", ["lm_head.weight"]))
    for side, ours, n in (("encoder", "enc", m.n_layer), ("decoder", "dec", m.n_dec_layer or m.n_layer)):
        bias = f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"  # learned by the first layer
        rows.append((f"{ours}_rel.bias.weight", [bias]))
        rows.append((f"{ours}_ln.weight", [f"{side}.final_layer_norm.weight"]))
        for i in range(n):
            p, q = f"{side}.{i}", f"{side}.block.{i}.layer"
            rows += attention_rows(f"{p}.attn", f"{q}.0.SelfAttention", ATTN, False, False)
            rows.append((f"{p}.ln_1.weight", [f"{q}.0.layer_norm.weight"]))
            ff = 1
            if side == "decoder":
                rows += attention_rows(f"{p}.cross", f"{q}.1.EncDecAttention", ATTN, False, True)
                rows.append((f"{p}.ln_2.weight", [f"{q}.1.layer_norm.weight"]))
                ff = 2
            dense = f"{q}.{ff}.DenseReluDense"
            if m.gated_ffn:
                rows += layer_rows(f"{p}.mlp.c_gate", f"{dense}.wi_0", False)  # the activated half
                rows += layer_rows(f"{p}.mlp.c_fc", f"{dense}.wi_1", False)
            else:
                rows += layer_rows(f"{p}.mlp.c_fc", f"{dense}.wi", False)
            rows += layer_rows(f"{p}.mlp.c_proj", f"{dense}.wo", False)
            rows.append((f"{p}.ln_{ff + 1}.weight", [f"{q}.{ff}.layer_norm.weight"]))
    return rows


def load_model(cfg: Config, weights: dict[str, torch.Tensor], where: Path) -> torch.nn.Module:
    """The TransformerSeq2Seq of ``cfg`` holding a T5 checkpoint's ``weights``."""
    m = cfg.model
    head = weights.get("lm_head.weight")
    if m.tie_weights and head is not None and not torch.equal(head, weights.get("shared.weight", head)):
        raise RunError(f"'{where}': config.json ties the head to the embedding (tie_word_embeddings), but the "
                       "weights hold a different lm_head.weight; set tie_word_embeddings to false (T5 v1.1)")
    aliases = {f"{side}.embed_tokens.weight": "shared.weight" for side in ("encoder", "decoder")}
    if not m.tie_weights and head is None and "shared.weight" in weights:  # transformers ties it then
        weights = {**weights, "lm_head.weight": weights["shared.weight"]}
    return encdec.load_model(cfg, weights, table(m), where, ("lm_head.weight",) if m.tie_weights else (), aliases, "T5")


def load(d: Path, cfg: Config, weights: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, Tokenizer]:
    """The model of a T5 checkpoint and its tokenizer."""
    tokenizer, src = encdec.tokenizers(d, "t5")
    encdec.check_vocab(d, cfg.model, tokenizer, src)
    return load_model(cfg, weights, d), tokenizer


def export(model: torch.nn.Module, tokenizer: Tokenizer, cfg: Config, out: Path,
           src_tokenizer: Tokenizer | None = None) -> None:
    """Write a T5-layout seq2seq run as a T5ForConditionalGeneration checkpoint in ``out``."""
    m = cfg.model
    if m.head_scale != m.tie_weights:
        raise RunError("transformers scales T5's decoder output exactly when the head is tied; this run's "
                       f"tie_weights={m.tie_weights} and head_scale={m.head_scale} have no T5 layout")
    encdec.save_weights(out, encdec.export_weights(model, table(m)))
    eos = tokenizer.eos_id if tokenizer.eos_id is not None else 1
    write_json(out / "config.json", {
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "vocab_size": m.vocab_size,
        "d_model": m.n_embd, "d_kv": m.n_embd // m.n_head, "d_ff": ffn_width(m), "num_layers": m.n_layer,
        "num_decoder_layers": m.n_dec_layer or m.n_layer, "num_heads": m.n_head,
        "relative_attention_num_buckets": m.rel_buckets, "relative_attention_max_distance": m.rel_max_distance,
        "layer_norm_epsilon": m.norm_eps, "feed_forward_proj": HF_FEED_FORWARD[(m.activation, m.gated_ffn)],
        "tie_word_embeddings": m.tie_weights, "pad_token_id": m.bos_id, "eos_token_id": eos,
        "decoder_start_token_id": m.bos_id, "dropout_rate": m.dropout, "is_encoder_decoder": True,
        "dtype": "float32",
    })
    encdec.write_generation_config(out, cfg, eos, m.bos_id, None)
    encdec.save_tokenizers(out, "t5", tokenizer, src_tokenizer)
