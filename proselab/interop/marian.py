"""MarianMT: Hugging Face's ``MarianMTModel`` layout (the opus-mt translation models), to and
from proselab's TransformerSeq2Seq.

Marian is a post-LN Transformer with sinusoidal positions (computed, not stored), embeddings
scaled by sqrt(d_model), SiLU ("swish") feed-forwards, one embedding shared by encoder, decoder
and head, and a fixed ``final_logits_bias``. Sources are ``ids + </s>``; the decoder starts
from <pad>, which generation never produces (``bad_words_ids``). A checkpoint directory holds
``config.json`` (``model_type: marian``), the weights, and ``source.spm``, ``target.spm`` and
``vocab.json``.
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

JOINT_VOCAB = False  # source.spm and target.spm segment each side (into one vocabulary): two tokenizers
IGNORED = ("embed_positions.weight", "lm_head.weight")  # sinusoids transformers recomputes; a tied head's copy


def model_config(hf: dict[str, Any], where: Path) -> ModelConfig:
    """proselab's ModelConfig for a Marian config.json; RunError names each option proselab lacks."""
    problems: list[str] = []
    d = hf.get("d_model", 512)
    act = encdec.activation(hf.get("activation_function", "gelu"), where, problems)
    sizes = encdec.layer_counts(hf, problems, d)
    share = hf.get("share_encoder_decoder_embeddings", True)
    for flag in ("normalize_before", "add_final_layer_norm", "normalize_embedding"):
        if hf.get(flag):
            problems.append(f"{flag}: true")
    encdec.refuse(where, "Marian", problems)
    vocab = hf.get("decoder_vocab_size") or hf.get("vocab_size", 58101)
    pad = hf.get("pad_token_id", vocab - 1)
    return ModelConfig(family="seq2seq", arch="transformer", vocab_size=vocab,
                       src_vocab_size=0 if share else hf.get("vocab_size", vocab), n_embd=d, dropout=0.0, bias=True,
                       tie_weights=hf.get("tie_word_embeddings", True) is not False, share_embeddings=share,
                       bos_id=hf.get("decoder_start_token_id", pad), block_size=hf.get("max_position_embeddings", 512),
                       activation=act, norm_first=False, positions="sinusoidal",
                       embed_scale=bool(hf.get("scale_embedding", False)), logits_bias=True, hf_type="marian", **sizes)


def load_model(cfg: Config, weights: dict[str, torch.Tensor], where: Path) -> torch.nn.Module:
    """The TransformerSeq2Seq of ``cfg`` holding a Marian checkpoint's ``weights``."""
    m = cfg.model
    ignored = IGNORED if m.tie_weights else IGNORED[:1]
    return encdec.load_model(cfg, weights, encdec.fairseq_table(m, learned=False), where, ignored,
                             encdec.fairseq_aliases(m), "Marian")


def load(d: Path, cfg: Config, weights: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, Tokenizer]:
    """The model of a Marian checkpoint and its target tokenizer (the source one: ``encdec.tokenizers``)."""
    tokenizer, src = encdec.tokenizers(d, "marian")
    encdec.check_vocab(d, cfg.model, tokenizer, src)
    return load_model(cfg, weights, d), tokenizer


def export(model: torch.nn.Module, tokenizer: Tokenizer, cfg: Config, out: Path,
           src_tokenizer: Tokenizer | None = None) -> None:
    """Write a Marian-layout seq2seq run as a MarianMTModel checkpoint in ``out``."""
    m = cfg.model
    encdec.save_weights(out, encdec.export_weights(model, encdec.fairseq_table(m, learned=False)))
    pad, eos = m.bos_id, tokenizer.eos_id if tokenizer.eos_id is not None else 0
    write_json(out / "config.json", {
        "architectures": ["MarianMTModel"], "model_type": "marian", "vocab_size": m.src_vocab_size or m.vocab_size,
        "decoder_vocab_size": m.vocab_size, "d_model": m.n_embd, "encoder_layers": m.n_layer,
        "decoder_layers": m.n_dec_layer or m.n_layer, "encoder_attention_heads": m.n_head,
        "decoder_attention_heads": m.n_head, "encoder_ffn_dim": ffn_width(m), "decoder_ffn_dim": ffn_width(m),
        "activation_function": encdec.HF_ACTIVATIONS[m.activation], "max_position_embeddings": m.block_size,
        "scale_embedding": m.embed_scale, "share_encoder_decoder_embeddings": m.share_embeddings,
        "tie_word_embeddings": m.tie_weights, "pad_token_id": pad, "eos_token_id": eos,
        "decoder_start_token_id": m.bos_id, "forced_eos_token_id": eos, "dropout": m.dropout,
        "attention_dropout": 0.0, "activation_dropout": 0.0, "is_encoder_decoder": True, "dtype": "float32",
    })
    encdec.write_generation_config(out, cfg, eos, pad, None)
    encdec.save_tokenizers(out, "marian", tokenizer, src_tokenizer)

