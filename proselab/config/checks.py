"""The rules a config must satisfy: each broken one is a ConfigError naming the field, its value
and what to do."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .values import ConfigError

if TYPE_CHECKING:
    from . import Config, DataConfig, GenerationConfig, ModelConfig, TrainConfig


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the first field of ``cfg`` with an impossible value."""
    m, d, t, g = cfg.model, cfg.data, cfg.train, cfg.generation
    _check(m.family in ("gpt", "rnn", "seq2seq"), f"model.family must be gpt, rnn or seq2seq, got '{m.family}'")
    _check(m.vocab_size >= 0, "model.vocab_size must be >= 0 (0 = from the tokenizer)")
    _check(m.block_size >= 1, f"model.block_size must be >= 1, got {m.block_size}")
    _check(0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}")
    if m.family == "seq2seq":
        _validate_seq2seq(m, d)
    elif m.family == "gpt":
        _validate_transformer(m)
        _validate_gpt_layout(m)
    else:
        _validate_rnn(m)
    check_memory(m)
    _check(d.vocab_size >= 1, "data.vocab_size must be >= 1")
    _check(0.0 < d.val_fraction < 1.0, f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    _check(d.encoding_errors in ("strict", "replace"), "data.encoding_errors must be strict or replace")
    _check(bool(d.dataset), "data.dataset must name a built-in corpus or text files")
    _check(d.format in ("auto", "text", "sft", "pairs", "labels"),
           f"data.format must be auto, text, sft, pairs or labels, got '{d.format}'")
    _check(d.max_src_len >= 0 and d.max_tgt_len >= 0, "data.max_src_len and data.max_tgt_len must be >= 0 (0 = no limit)")
    _check(d.truncate_src >= 0, f"data.truncate_src must be >= 0 (0 = whole sources), got {d.truncate_src}")
    _check(d.bad_lines in ("error", "skip"), f"data.bad_lines must be error or skip, got '{d.bad_lines}'")
    _check(d.chat_template == "chatml" or is_jinja(d.chat_template),
           f"data.chat_template must be chatml or a Jinja chat template (a checkpoint's own), got "
           f"'{d.chat_template[:60]}'")
    _check(not d.tweet_placeholders or d.tokenizer in ("char", "word", "bpe"),
           f"data.tweet_placeholders is for a tokenizer proselab trains (char, word, bpe); '{d.tokenizer}' keeps "
           "its own normalization (a run's tokenizer trained with it keeps the placeholders)")
    _check(all(isinstance(t, str) and t.strip() for t in d.special_tokens),
           "data.special_tokens must be a list of non-empty strings")
    _check(bool(t.init_from), "train.init_from must be scratch, resume, or a run / Hugging Face checkpoint directory")
    _check(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    _check(t.grad_accum >= 1, f"train.grad_accum must be >= 1, got {t.grad_accum}")
    _check(t.max_iters >= 1, f"train.max_iters must be >= 1, got {t.max_iters}")
    _check(t.max_time >= 0, "train.max_time must be >= 0 seconds")
    _check(t.lr > 0 and math.isfinite(t.lr), f"train.lr must be a positive number, got {t.lr}")
    _check(0 <= t.min_lr <= t.lr, f"train.min_lr must be in [0, train.lr], got {t.min_lr}")
    _check(t.warmup_iters >= 0 and t.lr_decay_iters >= 0, "train.warmup_iters and train.lr_decay_iters must be >= 0")
    _check(t.weight_decay >= 0, "train.weight_decay must be >= 0")
    _check(0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1 and train.beta2 must be in [0, 1)")
    _check(t.grad_clip >= 0, "train.grad_clip must be >= 0 (0 = off)")
    _check(0 <= t.ema_decay < 1, f"train.ema_decay must be in [0, 1) (0 = off; 0.998 averages over ~500 steps), "
                                 f"got {t.ema_decay}")
    _check(t.eval_interval >= 1 and t.eval_iters >= 1 and t.log_interval >= 1,
           "train.eval_interval, eval_iters and log_interval must be >= 1")
    _check(t.dtype in ("auto", "float32", "bfloat16"), f"train.dtype must be auto, float32 or bfloat16, got '{t.dtype}'")
    _check(t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"),
           f"train.device must be auto, cpu or cuda[:N], got '{t.device}'")
    _check(t.freeze_layers >= 0, f"train.freeze_layers must be >= 0, got {t.freeze_layers}")
    _check(t.lora_rank >= 0, f"train.lora_rank must be >= 0 (0 = off), got {t.lora_rank}")
    _check(t.lora_alpha > 0, f"train.lora_alpha must be > 0, got {t.lora_alpha}")
    _check(0 <= t.lora_dropout < 1, f"train.lora_dropout must be in [0, 1), got {t.lora_dropout}")
    _check(t.lora_rank == 0 or bool(t.lora_targets), "train.lora_targets must name at least one linear layer")
    _check(0 <= t.label_smoothing < 1, f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    _check(t.label_smoothing == 0 or m.family == "seq2seq",
           f"train.label_smoothing is for seq2seq models; a {m.family} model trains without it (set it to 0)")
    _check(t.eval_bleu_samples >= 0, f"train.eval_bleu_samples must be >= 0 (0 = off), got {t.eval_bleu_samples}")
    _check(t.best_by in ("loss", "bleu", "chrf", "accuracy", "macro_f1"),
           f"train.best_by must be loss, bleu, chrf, accuracy or macro_f1, got '{t.best_by}'")
    _check(t.best_by not in ("bleu", "chrf") or (m.family == "seq2seq" and t.eval_bleu_samples > 0),
           f"train.best_by={t.best_by} scores decoded dev pairs: it needs a seq2seq model and "
           f"train.eval_bleu_samples > 0")
    _validate_labels(m, d, t)
    _validate_distill(m, t)
    validate_generation(g)


def _validate_labels(m: ModelConfig, d: DataConfig, t: TrainConfig) -> None:
    """Labelled data and classifiers."""
    _check(0.0 <= d.test_fraction < 1.0 and d.val_fraction + d.test_fraction < 1.0,
           f"data.test_fraction must be in [0, 1) and leave room for training beside data.val_fraction, "
           f"got {d.test_fraction} and {d.val_fraction}")
    _check(bool(d.text_column) and bool(d.label_column), "data.text_column and data.label_column must be non-empty")
    _check(t.class_weights in ("none", "balanced"), f"train.class_weights must be none or balanced, got '{t.class_weights}'")
    _check(all(isinstance(x, str) and x.strip() for x in m.labels) and len(set(m.labels)) == len(m.labels),
           f"model.labels must be distinct non-empty label names, got {m.labels}")
    _check(len(m.labels) != 1, f"model.labels has one label ({m.labels[0] if m.labels else ''}); a classifier "
           "needs two or more")
    _check(not m.labels or m.family != "seq2seq" or m.arch == "transformer",
           "a seq2seq classifier reads texts with a Transformer encoder: set model.arch=transformer "
           "(or use model.family=rnn for a recurrent classifier)")


def _validate_distill(m: ModelConfig, t: TrainConfig) -> None:
    """Knowledge distillation's settings (the teacher itself is read when training starts)."""
    _check(0.0 <= t.distill_alpha <= 1.0, f"train.distill_alpha must be in [0, 1], got {t.distill_alpha}")
    _check(t.distill_temperature > 0 and math.isfinite(t.distill_temperature),
           f"train.distill_temperature must be > 0, got {t.distill_temperature}")
    _check(t.distill_top_k >= 0, f"train.distill_top_k must be >= 0 (0 = the full distribution), got {t.distill_top_k}")
    _check(t.distill_init in ("scratch", "every-other-layer"),
           f"train.distill_init must be scratch or every-other-layer, got '{t.distill_init}'")
    if not t.distill_teacher:
        _check(t.distill_init == "scratch", "train.distill_init=every-other-layer copies the teacher's layers: "
               "set train.distill_teacher too")
        return
    _check(not m.labels, f"train.distill_teacher distils a generator, but model.labels ({', '.join(m.labels)}) "
           "makes a classifier: clear train.distill_teacher or model.labels")
    _check(t.distill_init == "scratch" or t.init_from in ("scratch", "resume"),
           f"train.distill_init=every-other-layer and train.init_from '{t.init_from}' both set the student's "
           "first weights: keep one")


# The model fields each kind of model reads (models/, and the tasks' use of block_size). A field
# set for a model that does not read it would be silently ignored: unused_options names it.
_EVERY_MODEL = ("family", "vocab_size", "dropout", "bias", "tie_weights", "labels")
_RNN_SIZE = ("cell", "num_layers", "hidden_size", "n_embd")
_TRANSFORMER_SIZE = ("n_layer", "n_head", "n_embd")
_SEQ2SEQ = ("arch", "share_embeddings", "src_vocab_size", "bos_id", "src_prefix_id", "tgt_prefix_id")
TRANSFORMER_LAYOUT = ("n_dec_layer", "ffn_dim", "activation", "gated_ffn", "norm", "norm_eps", "norm_first",
                      "positions", "rel_buckets", "rel_max_distance", "embed_scale", "embed_norm", "attn_scale",
                      "head_scale", "logits_bias", "hf_type")  # the seq2seq transformer's options (encdec.py)
ROPE_SCALING = ("rope_factor", "rope_type", "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_context",
                "rope_beta_fast", "rope_beta_slow", "rope_attention_factor", "rope_short_factor",
                "rope_long_factor")  # the gpt's rope scaling
ROPE_TYPES = ("llama3", "linear", "yarn", "longrope")
GPT_HF_TYPES = ("", "mistral", "phi3", "gemma")  # layouts a gpt's export names besides the ones its options imply
GPT_LAYOUT = ("ffn_dim", "activation", "gated_ffn", "norm", "norm_eps", "rope", "rope_theta", *ROPE_SCALING,
              "rope_dim", "embed_multiplier", "n_kv_head", "qkv_bias", "head_dim", "qk_norm",
              "hf_type")  # the gpt's options besides its sizes (Llama style)
MODEL_FIELDS = {  # model_kind -> the fields besides _EVERY_MODEL it reads
    "gpt": (*_TRANSFORMER_SIZE, "block_size", *GPT_LAYOUT),
    "rnn": (*_RNN_SIZE, "block_size"),
    "seq2seq rnn": (*_SEQ2SEQ, *_RNN_SIZE, "attention", "bidirectional", "input_feeding", "teacher_forcing"),
    "seq2seq transformer": (*_SEQ2SEQ, *_TRANSFORMER_SIZE, *TRANSFORMER_LAYOUT),  # block_size: learned positions only
}
_KIND_NAMES = {"gpt": "a gpt model", "rnn": "an rnn model", "seq2seq rnn": "a seq2seq model with model.arch=rnn",
               "seq2seq transformer": "a seq2seq model with model.arch=transformer"}
SEQ2SEQ_OPTIONS = ("data.joint_vocab", "data.max_src_len", "data.max_tgt_len", "data.truncate_src",
                   "train.eval_bleu_samples")  # read only when training an encoder-decoder


def model_kind(m: ModelConfig) -> str:
    """gpt, rnn, seq2seq rnn or seq2seq transformer: what decides which model fields are read."""
    return f"{m.family} {m.arch}" if m.family == "seq2seq" else m.family


def model_fields(m: ModelConfig) -> set[str]:
    """The names of the model fields that the model ``m`` configures reads."""
    # a classifier cuts its texts to block_size tokens; learned positions have block_size rows
    text_length = ("block_size",) if m.labels or m.positions == "learned" else ()
    return {*_EVERY_MODEL, *MODEL_FIELDS[model_kind(m)], *text_length}


def _listed(cfg: Config, keys: list[str]) -> tuple[str, str, str]:
    """``model.a=1 and model.b=2``, and the verb and pronoun that agree with it."""
    shown = [f"{key}={getattr(getattr(cfg, key.split('.')[0]), key.split('.')[1])}" for key in keys]
    text = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
    return (text, "is", "it") if len(shown) == 1 else (text, "are", "them")


def unused_options(cfg: Config, keys: set[str]) -> list[str]:
    """Warnings for the options among ``keys`` (dotted: those a file or the command line set)
    that the configured model does not read, each saying what it reads instead; [] if none."""
    m, kind, used = cfg.model, model_kind(cfg.model), model_fields(cfg.model)
    out = []
    model_keys = sorted(k for k in keys if k.startswith("model.") and k.split(".")[1] not in used)
    if model_keys:
        text, verb, it = _listed(cfg, model_keys)
        size = _RNN_SIZE if kind in ("rnn", "seq2seq rnn") else _TRANSFORMER_SIZE
        out.append(f"{text} {verb} ignored: {_KIND_NAMES[kind]} does not read {it}; its size is set by "
                   f"model.{', '.join(size)}")
    seq2seq_keys = [k for k in SEQ2SEQ_OPTIONS if k in keys]
    if seq2seq_keys and m.family != "seq2seq":
        text, verb, it = _listed(cfg, seq2seq_keys)
        out.append(f"{text} {verb} ignored: only seq2seq models read {it}, and this is {_KIND_NAMES[kind]}")
    return out


ATTENTIONS = ("bahdanau", "luong-dot", "luong-general", "none")


def is_jinja(template: str) -> bool:
    """Whether data.chat_template is a Jinja template (a checkpoint's own) rather than a name."""
    return "{{" in template or "{%" in template


def _validate_transformer(m: ModelConfig) -> None:
    """The fields a GPT and a Transformer encoder-decoder share."""
    _check(m.n_layer >= 1 and m.n_head >= 1 and m.n_embd >= 1, "model.n_layer, n_head and n_embd must be >= 1")
    _check(m.n_embd % m.n_head == 0 or (m.family == "gpt" and m.head_dim > 0),
           f"model.n_embd ({m.n_embd}) must be divisible by model.n_head ({m.n_head})"
           + (" (or give a gpt its head width, model.head_dim)" if m.family == "gpt" else ""))


def _validate_rnn(m: ModelConfig) -> None:
    """The fields an RNN language model and an RNN encoder-decoder share."""
    _check(m.cell in ("rnn", "lstm", "gru"), f"model.cell must be rnn, lstm or gru, got '{m.cell}'")
    _check(m.hidden_size >= 1 and m.num_layers >= 1 and m.n_embd >= 1,
           "model.hidden_size, num_layers and n_embd must be >= 1")
    _check(not m.tie_weights or m.n_embd == m.hidden_size,
           f"model.tie_weights needs model.n_embd == model.hidden_size (got {m.n_embd} and {m.hidden_size}); "
           "set model.tie_weights=false or make them equal")


def _validate_seq2seq(m: ModelConfig, d: DataConfig) -> None:
    _check(m.arch in ("rnn", "transformer"), f"model.arch must be rnn or transformer, got '{m.arch}'")
    _check(0.0 <= m.teacher_forcing <= 1.0, f"model.teacher_forcing must be in [0, 1], got {m.teacher_forcing}")
    _check(m.src_vocab_size >= 0, "model.src_vocab_size must be >= 0 (0 = from the source tokenizer)")
    # an imported checkpoint's sides index one vocabulary even with two segmenters (Marian's source.spm, target.spm)
    _check(not m.share_embeddings or d.joint_vocab or bool(m.hf_type),
           "model.share_embeddings needs one vocabulary for both sides: set data.joint_vocab=true")
    _check(m.src_prefix_id >= -1 and m.tgt_prefix_id >= -1,
           "model.src_prefix_id and model.tgt_prefix_id must be token ids >= 0, or -1 (none)")
    if m.arch == "transformer":
        _validate_transformer(m)
        _validate_layout(m)
        return
    _validate_rnn(m)
    _check(m.attention in ATTENTIONS, f"model.attention must be one of {', '.join(ATTENTIONS)}, got '{m.attention}'")
    _check(m.attention != "luong-dot" or not m.bidirectional,
           "model.attention=luong-dot scores the decoder state against encoder states of the same width, but a "
           "bidirectional encoder's are twice as wide: use luong-general, or model.bidirectional=false")


def _validate_blocks(m: ModelConfig) -> None:
    """The feed-forward and norm options both Transformer families read (models/encdec.py)."""
    _check(m.ffn_dim >= 0, f"model.ffn_dim must be >= 0 (0 = 4 x n_embd), got {m.ffn_dim}")
    _check(m.activation in ("gelu_tanh", "gelu", "relu", "silu"),
           f"model.activation must be gelu_tanh, gelu, relu or silu, got '{m.activation}'")
    _check(m.norm in ("layernorm", "rmsnorm"), f"model.norm must be layernorm or rmsnorm, got '{m.norm}'")
    _check(0 < m.norm_eps < 1, f"model.norm_eps must be in (0, 1), got {m.norm_eps}")


def _validate_gpt_layout(m: ModelConfig) -> None:
    """The gpt's Llama-style options (models/gpt.py)."""
    _validate_blocks(m)
    _check(m.n_kv_head >= 0 and (m.n_kv_head == 0 or m.n_head % m.n_kv_head == 0),
           f"model.n_kv_head must divide model.n_head ({m.n_head}) (0 = n_head), got {m.n_kv_head}")
    _check(m.head_dim >= 0, f"model.head_dim must be >= 0 (0 = n_embd / n_head), got {m.head_dim}")
    _check(not m.rope or m.head_size() % 2 == 0,
           f"model.rope needs an even head size, got {m.head_size()} "
           f"({'model.head_dim' if m.head_dim else 'n_embd / n_head'})")
    _check(m.rope_theta > 0, f"model.rope_theta must be > 0, got {m.rope_theta}")
    _check(m.rope_dim >= 0 and m.rope_dim % 2 == 0 and m.rope_dim <= m.head_size(),
           f"model.rope_dim must be even and at most the head size ({m.head_size()}) (0 = all), got {m.rope_dim}")
    _check(m.hf_type in GPT_HF_TYPES, f"a gpt's model.hf_type must be mistral, phi3, gemma or empty, got "
                                      f"'{m.hf_type}'")
    _check(m.embed_multiplier >= 0, f"model.embed_multiplier must be >= 0 (0 = none), got {m.embed_multiplier}")
    _check(m.rope_factor == 0 or m.rope_factor >= 1,
           f"model.rope_factor must be 0 (no scaling) or >= 1, got {m.rope_factor}")
    _check(m.rope_type in ROPE_TYPES, f"model.rope_type must be one of {', '.join(ROPE_TYPES)}, got '{m.rope_type}'")
    if not m.rope_factor or m.rope_type == "linear":
        return
    _check(m.rope_original_context >= 1, f"model.rope_original_context must be >= 1, got {m.rope_original_context}")
    if m.rope_type == "llama3":
        _check(0 < m.rope_low_freq_factor < m.rope_high_freq_factor,
               f"model.rope_type llama3 needs 0 < rope_low_freq_factor < rope_high_freq_factor, got "
               f"{m.rope_low_freq_factor} and {m.rope_high_freq_factor}")
        return
    if m.rope_type == "longrope":
        half = (m.rope_dim or m.head_size()) // 2
        for name in ("rope_short_factor", "rope_long_factor"):
            factors = getattr(m, name)
            _check((len(factors) == half or (name == "rope_long_factor" and not factors))
                   and all(f > 0 for f in factors),
                   f"model.rope_type longrope needs model.{name} to hold {half} numbers > 0 (one per rotary "
                   f"frequency{'; or none' if name == 'rope_long_factor' else ''}), got {len(factors)}")
    else:
        _check(0 < m.rope_beta_slow < m.rope_beta_fast,
               f"model.rope_type yarn needs 0 < rope_beta_slow < rope_beta_fast, got {m.rope_beta_slow} and "
               f"{m.rope_beta_fast}")
    _check(m.rope_attention_factor >= 0,  # yarn and longrope
           f"model.rope_attention_factor must be >= 0 (0 = {m.rope_type}'s default), got {m.rope_attention_factor}")


def _validate_layout(m: ModelConfig) -> None:
    """The seq2seq transformer's layout options (models/encdec.py)."""
    _check(m.n_dec_layer >= 0, f"model.n_dec_layer must be >= 0 (0 = model.n_layer), got {m.n_dec_layer}")
    _validate_blocks(m)
    _check(m.positions in ("sinusoidal", "learned", "relative"),
           f"model.positions must be sinusoidal, learned or relative, got '{m.positions}'")
    _check(m.rel_buckets >= 4 and m.rel_max_distance > m.rel_buckets // 2,
           f"model.rel_buckets must be >= 4 and model.rel_max_distance > rel_buckets / 2, got {m.rel_buckets} "
           f"and {m.rel_max_distance}")
    _check(m.hf_type in ("", "marian", "bart", "t5"),
           f"model.hf_type must be marian, bart, t5 or empty, got '{m.hf_type}'")


# Bytes per parameter: float32 weights to use a model; to train it, also their gradients and
# AdamW's two moments (activations come on top, and depend on the batch).
INFERENCE_BYTES, TRAINING_BYTES = 4, 16
_GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # weight matrices per recurrent layer and direction


def model_parts(m: ModelConfig) -> dict[tuple[str, ...], int]:
    """The parameters of the model ``m`` configures, from its sizes alone (nothing is built):
    the model fields that size each part -> its weight matrices' entries. Biases, norms and
    attention scorers are left out: the sum is a lower bound, within a few percent of the
    model as built (a classifier then drops its LM head, a seq2seq one its decoder)."""
    V, Vs, C, H = m.vocab_size, m.src_vocab_size or m.vocab_size, m.n_embd, m.hidden_size
    transformer = m.family == "gpt" or (m.family == "seq2seq" and m.arch == "transformer")
    embeddings = V * C + (0 if m.tie_weights else V * (C if transformer else H))  # + an untied head
    if m.family == "gpt":  # a block: attention 2 C^2 + the keys' and values' 2 C x kv width, the MLP 2 or 3 C x F
        q, kv = m.n_head * m.head_size(), (m.n_kv_head or m.n_head) * m.head_size()  # the projections' widths
        F = (m.ffn_dim or 4 * C) * C * (3 if m.gated_ffn else 2)
        return {("vocab_size", "n_embd"): embeddings, ("block_size", "n_embd"): 0 if m.rope else m.block_size * C,
                ("n_layer", "n_embd"): m.n_layer * (2 * C * q + 2 * C * kv + F)}
    if m.family == "seq2seq":
        embeddings += 0 if m.share_embeddings else Vs * C
    vocab = ("vocab_size", "src_vocab_size", "n_embd") if m.family == "seq2seq" else ("vocab_size", "n_embd")
    if transformer:  # an encoder block 4 C^2 + its feed-forward, a decoder block 8 C^2 (cross-attention) + its own
        F = (m.ffn_dim or 4 * C) * C * (3 if m.gated_ffn else 2)
        return {vocab: embeddings, ("n_layer", "n_embd"): m.n_layer * (4 * C * C + F)
                + (m.n_dec_layer or m.n_layer) * (8 * C * C + F)}
    G, L = _GATES.get(m.cell, 4), m.num_layers
    if m.family == "rnn":
        return {vocab: embeddings, ("num_layers", "hidden_size"): G * H * (C + H + (L - 1) * 2 * H)}
    dirs, attends = 2 if m.bidirectional else 1, m.attention != "none"
    encoder = dirs * G * H * (C + H + (L - 1) * (dirs * H + H)) + dirs * H * H  # + the bridge
    feed = H if attends and m.input_feeding else 0
    decoder = G * H * (C + feed + H + (L - 1) * 2 * H) + (H + dirs * H) * H * attends  # + Luong's W_c
    return {vocab: embeddings, ("num_layers", "hidden_size"): encoder + decoder}


def available_memory() -> int | None:
    """Bytes of memory a new allocation can still get on this machine (RAM and swap, within
    the container's limit), or None where that cannot be read."""
    try:
        info = {k: int(v.split()[0]) * 1024 for k, v in
                (line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())}
        free = info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, KeyError, ValueError):
        try:  # no /proc (macOS): the physical memory, all of it
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return None
    try:  # cgroup v2: a container may hold far less than the machine
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return free


def check_memory(m: ModelConfig, per_param: int = INFERENCE_BYTES, available: int | None = None,
                 where: str = "this machine") -> None:
    """Refuse (ConfigError) a model whose parameters cannot fit in memory, before any is allocated.

    Args:
        m: the model config; a vocab_size of 0 (not known before the tokenizer) counts nothing.
        per_param: bytes per parameter: INFERENCE_BYTES, or TRAINING_BYTES for training.
        available: free bytes where the model goes (default: ``available_memory()``).
        where: that place, for the message (``cuda:0``).
    """
    parts = model_parts(m)
    params, free = sum(parts.values()), available_memory() if available is None else available
    if free is None or params * per_param <= free:
        return
    fields = max(parts, key=parts.get)
    named = " and ".join(f"model.{f}={getattr(m, f)}" for f in fields)
    what = "float32 weights" if per_param == INFERENCE_BYTES else "float32 weights, gradients and optimizer state"
    raise ConfigError(f"{named} make a model of at least {params / 1e9:,.1f} billion parameters, "
                      f"{params * per_param / 1e9:,.1f} GB of {what}: more than the {free / 1e9:,.1f} GB of memory "
                      f"available on {where}; make the model smaller")


def effective_generation(g: GenerationConfig) -> GenerationConfig:
    """``g`` as the decoding engine reads it: temperature 0 is greedy decoding (do_sample=False).

    OpenAI's API and every transformers-style server mean greedy by temperature 0; the limit
    of dividing logits by a shrinking temperature is the argmax. The config itself keeps what
    the user set, so a run saved with temperature 0 samples again under a later temperature > 0.
    Decoding starts in two places, ``decoding.generate``/``stream`` (the Python API, the CLI)
    and the server engine's ``Job``; both apply this, so every path agrees.
    """
    if g.do_sample and g.temperature == 0:
        return dataclasses.replace(g, do_sample=False)
    return g


def validate_generation(g: GenerationConfig) -> None:
    """Raise ConfigError naming the first generation field with an impossible value."""
    def need(ok: bool, name: str, what: str) -> None:
        _check(ok, f"generation.{name} {what}, got {getattr(g, name)!r}")

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    need(isinstance(g.do_sample, bool), "do_sample", "must be true or false")  # "no" is a truthy string
    need(isinstance(g.output_scores, bool), "output_scores", "must be true or false")
    need(is_int(g.max_new_tokens) and g.max_new_tokens >= 0, "max_new_tokens", "must be an integer >= 0")
    need(is_int(g.min_new_tokens) and g.min_new_tokens >= 0, "min_new_tokens", "must be an integer >= 0")
    need(isinstance(g.temperature, (int, float)) and g.temperature >= 0, "temperature",
         "must be >= 0 (0 = greedy decoding)")
    need(is_int(g.top_k) and g.top_k >= 0, "top_k", "must be an integer >= 0 (0 = off)")
    need(isinstance(g.top_p, (int, float)) and 0 < g.top_p <= 1, "top_p", "must be in (0, 1]")
    need(isinstance(g.min_p, (int, float)) and 0 <= g.min_p <= 1, "min_p", "must be in [0, 1]")
    need(isinstance(g.typical_p, (int, float)) and 0 < g.typical_p <= 1, "typical_p", "must be in (0, 1]")
    need(isinstance(g.repetition_penalty, (int, float)) and g.repetition_penalty > 0, "repetition_penalty",
         "must be > 0 (1 = off)")
    need(is_int(g.no_repeat_ngram_size) and g.no_repeat_ngram_size >= 0, "no_repeat_ngram_size",
         "must be an integer >= 0 (0 = off)")
    for name in ("presence_penalty", "frequency_penalty"):
        need(isinstance(getattr(g, name), (int, float)) and -2 <= getattr(g, name) <= 2, name,
             "must be in [-2, 2] (0 = off), as in OpenAI's API")
    need(isinstance(g.logit_bias, dict) and all(is_int(i) and i >= 0 and isinstance(b, (int, float))
                                                and -100 <= b <= 100 for i, b in g.logit_bias.items()),
         "logit_bias", "must map token ids >= 0 to biases in [-100, 100], as in OpenAI's API")
    need(is_int(g.num_beams) and g.num_beams >= 1, "num_beams", "must be an integer >= 1")
    need(isinstance(g.length_penalty, (int, float)), "length_penalty", "must be a number")
    need(g.early_stopping in (True, False, "never"), "early_stopping", "must be true, false or 'never'")
    need(is_int(g.num_return_sequences) and g.num_return_sequences >= 1, "num_return_sequences",
         "must be an integer >= 1")
    if g.num_beams > 1:
        need(g.num_return_sequences <= g.num_beams, "num_return_sequences",
             f"must be <= num_beams ({g.num_beams}) in beam search")
    need(isinstance(g.stop, list) and all(isinstance(s, str) and s for s in g.stop), "stop",
         "must be a list of non-empty strings")
    eos = g.eos_token_id if isinstance(g.eos_token_id, list) else [g.eos_token_id]
    need(g.eos_token_id is None or all(is_int(e) and e >= 0 for e in eos), "eos_token_id",
         "must be a token id >= 0, a list of them, or null")
    need(g.seed is None or is_int(g.seed), "seed", "must be an integer or null")
    for name in ("forced_bos_token_id", "forced_eos_token_id"):
        need(getattr(g, name) is None or (is_int(getattr(g, name)) and getattr(g, name) >= 0), name,
             "must be a token id >= 0 or null")
    need(isinstance(g.suppress_tokens, list) and all(is_int(i) and i >= 0 for i in g.suppress_tokens),
         "suppress_tokens", "must be a list of token ids >= 0")
    need(isinstance(g.max_time, (int, float)) and g.max_time >= 0, "max_time", "must be >= 0 seconds (0 = no limit)")
