"""BART: Hugging Face's ``BartForConditionalGeneration`` layout, to and from proselab's
TransformerSeq2Seq.

BART is a post-LN Transformer with learned positions (a table offset by 2 rows), a layernorm on
the embeddings, exact-GELU feed-forwards, one embedding shared by encoder, decoder and head,
and a ``final_logits_bias``. Sources are ``<s> ids </s>``; the decoder starts from ``</s>`` and
first predicts ``<s>`` (``forced_bos_token_id`` in summarization checkpoints), so training
targets are ``<s> ids </s>`` too. A checkpoint directory holds ``config.json`` (``model_type:
bart``), the weights, and ``tokenizer.json`` or ``vocab.json`` + ``merges.txt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import write_json
from ..config import Config, ModelConfig
from ..models.encdec import ffn_width
from ..tokenizers import Tokenizer
from . import encdec

IGNORED = ("lm_head.weight",)  # a tied head's copy of the shared embedding


def model_config(hf: dict[str, Any], where: Path) -> ModelConfig:
    """proselab's ModelConfig for a BART config.json; RunError names each option proselab lacks."""
    problems: list[str] = []
    d = hf.get("d_model", 1024)
    act = encdec.activation(hf.get("activation_function", "gelu"), where, problems)
    sizes = encdec.layer_counts(hf, problems, d)
    for flag in ("add_bias_logits", "normalize_before", "add_final_layer_norm", "static_position_embeddings"):
        if hf.get(flag):
            problems.append(f"{flag}: true")
    if hf.get("normalize_embedding") is False:
        problems.append("normalize_embedding: false")
    encdec.refuse(where, "BART", problems)
    bos, eos = hf.get("bos_token_id", 0), hf.get("eos_token_id", 2)
    return ModelConfig(family="seq2seq", arch="transformer", vocab_size=hf.get("vocab_size", 50265), n_embd=d,
                       dropout=0.0, bias=True, tie_weights=hf.get("tie_word_embeddings", True) is not False,
                       share_embeddings=True, bos_id=hf.get("decoder_start_token_id", eos),
                       src_prefix_id=-1 if bos is None else bos, tgt_prefix_id=-1 if bos is None else bos,
                       block_size=hf.get("max_position_embeddings", 1024), activation=act, norm_first=False,
                       positions="learned", embed_norm=True, embed_scale=bool(hf.get("scale_embedding", False)),
                       logits_bias=True, hf_type="bart", **sizes)


def load_model(cfg: Config, weights: dict[str, torch.Tensor], where: Path) -> torch.nn.Module:
    """The TransformerSeq2Seq of ``cfg`` holding a BART checkpoint's ``weights``."""
    m = cfg.model
    return encdec.load_model(cfg, weights, encdec.fairseq_table(m, learned=True), where,
                             IGNORED if m.tie_weights else (), encdec.fairseq_aliases(m), "BART")


def load(d: Path, cfg: Config, weights: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, Tokenizer]:
    """The model of a BART checkpoint and its tokenizer."""
    tokenizer, src = encdec.tokenizers(d, "bart")
    encdec.check_vocab(d, cfg.model, tokenizer, src)
    return load_model(cfg, weights, d), tokenizer


def export(model: torch.nn.Module, tokenizer: Tokenizer, cfg: Config, out: Path,
           src_tokenizer: Tokenizer | None = None) -> None:
    """Write a BART-layout seq2seq run as a BartForConditionalGeneration checkpoint in ``out``."""
    m = cfg.model
    encdec.save_weights(out, encdec.export_weights(model, encdec.fairseq_table(m, learned=True)))
    eos = tokenizer.eos_id if tokenizer.eos_id is not None else 2
    bos = m.tgt_prefix_id if m.tgt_prefix_id >= 0 else None
    pad = tokenizer.pad_id if getattr(tokenizer, "pad_id", None) is not None else 1
    write_json(out / "config.json", {
        "architectures": ["BartForConditionalGeneration"], "model_type": "bart", "vocab_size": m.vocab_size,
        "d_model": m.n_embd, "encoder_layers": m.n_layer, "decoder_layers": m.n_dec_layer or m.n_layer,
        "encoder_attention_heads": m.n_head, "decoder_attention_heads": m.n_head, "encoder_ffn_dim": ffn_width(m),
        "decoder_ffn_dim": ffn_width(m), "activation_function": encdec.HF_ACTIVATIONS[m.activation],
        "max_position_embeddings": m.block_size, "scale_embedding": m.embed_scale,
        "tie_word_embeddings": m.tie_weights, "bos_token_id": bos, "pad_token_id": pad, "eos_token_id": eos,
        "decoder_start_token_id": m.bos_id, "forced_eos_token_id": eos, "dropout": m.dropout,
        "attention_dropout": 0.0, "activation_dropout": 0.0, "is_encoder_decoder": True, "dtype": "float32",
    })
    encdec.write_generation_config(out, cfg, eos, pad, bos)
    encdec.save_tokenizers(out, "bart", tokenizer, src_tokenizer)
