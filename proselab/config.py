"""Typed configuration: dataclasses with defaults, YAML files, presets and dotted overrides.

A config has four sections, each a dataclass: ``model``, ``data``, ``train`` and
``generation``. Files are YAML with those sections as top-level keys; on the command
line any field can be overridden as ``--train.lr=3e-4``. Unknown keys are errors that
name the closest valid key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRESETS_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A configuration value or key supplied by the user is wrong."""


@dataclass
class ModelConfig:
    family: str = "gpt"  # gpt | rnn | seq2seq
    vocab_size: int = 0  # 0 = take it from the tokenizer
    block_size: int = 256  # context length in tokens (training blocks; gpt's window)
    # gpt
    n_layer: int = 6  # transformer blocks
    n_head: int = 6  # attention heads per block
    n_embd: int = 384  # embedding width (also the rnn's embedding size)
    dropout: float = 0.0  # dropout on embeddings, attention, residuals and between rnn layers
    bias: bool = True  # bias in Linear and LayerNorm layers, like GPT-2
    # rnn
    cell: str = "lstm"  # rnn | lstm | gru
    hidden_size: int = 512  # rnn hidden state width
    num_layers: int = 2  # stacked rnn layers
    tie_weights: bool = True  # share input embedding and output head (rnn needs n_embd == hidden_size)
    # seq2seq (an rnn one also uses cell, hidden_size, num_layers; a transformer n_layer, n_head, n_embd)
    arch: str = "rnn"  # rnn (recurrent encoder-decoder) | transformer
    attention: str = "luong-general"  # rnn: bahdanau | luong-dot | luong-general | none (only the final state)
    bidirectional: bool = True  # rnn: the encoder reads the source in both directions
    input_feeding: bool = True  # rnn: feed each attentional vector to the next step (Luong et al. 2015)
    teacher_forcing: float = 1.0  # chance that training feeds the gold previous token (< 1 = scheduled sampling)
    share_embeddings: bool = False  # one embedding matrix for source and target (needs data.joint_vocab)
    src_vocab_size: int = 0  # source vocabulary (0 = from the source tokenizer)
    bos_id: int = -1  # the token the decoder starts from (-1 = set from the tokenizer at training)


@dataclass
class DataConfig:
    dataset: str | list[str] = "shakespeare"  # built-in name (see `proselab data list`) or .txt files / directories
    tokenizer: str = "char"  # char | word | bpe | gpt2, or a path to a tokenizer.json / vocab.json+merges.txt dir
    vocab_size: int = 8000  # target vocabulary for word and bpe tokenizers trained on the corpus
    val_fraction: float = 0.1  # the last fraction of the token stream is validation, like nanoGPT
    encoding_errors: str = "strict"  # strict: stop at a non-UTF-8 byte; replace: substitute U+FFFD
    clean: bool = False  # normalise Unicode (NFC), line endings and trailing spaces before tokenizing
    format: str = "auto"  # text (a token stream) | sft (JSONL examples) | pairs (TSV/JSONL src-tgt) | auto (by file)
    chat_template: str = "chatml"  # layout of {"messages": ...} examples; its tokens join the vocabulary
    special_tokens: list[str] = field(default_factory=list)  # extra tokens added to the tokenizer (the model grows)
    # sentence pairs (data.format=pairs, for seq2seq)
    val_dataset: str | list[str] = ""  # the dev pairs (files, or a built-in's split like aclsum:dev); "" = last val_fraction
    joint_vocab: bool = True  # one tokenizer for source and target, trained on both sides
    max_src_len: int = 0  # leave out pairs whose source has more tokens than this (0 = keep all)
    max_tgt_len: int = 0  # leave out pairs whose target has more tokens than this (0 = keep all)
    truncate_src: int = 0  # read only a source's first N tokens, in training, evaluation and serving (0 = all)
    bad_lines: str = "error"  # a malformed pair line stops loading (error) or is skipped and counted (skip)


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"  # the run directory this training writes
    init_from: str = "scratch"  # scratch | resume (continue out_dir) | a run or Hugging Face GPT-2 dir to fine-tune
    overwrite: bool = False  # allow scratch training to replace a run already in out_dir
    seed: int = 1337  # seeds model init, batch sampling and dropout
    batch_size: int = 12  # sequences per micro-batch (per process under torchrun)
    grad_accum: int = 1  # micro-batches per optimizer step
    max_iters: int = 2000  # optimizer steps
    max_time: float = 0.0  # stop after this many seconds of training (0 = no limit)
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-4  # floor of the cosine decay
    warmup_iters: int = 100  # linear warmup steps
    lr_decay_iters: int = 0  # end of the cosine decay (0 = max_iters)
    weight_decay: float = 0.1  # AdamW decay, applied to matrices only (not biases, norms)
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # clip the global grad norm to this (0 = off)
    eval_interval: int = 250  # steps between quick val estimates and checkpoints
    eval_iters: int = 20  # batches in a quick val estimate
    log_interval: int = 10  # steps between metrics.jsonl lines
    final_eval: bool = True  # a full pass over the val split at the end
    dtype: str = "auto"  # auto | float32 | bfloat16 (auto = bf16 autocast where the hardware has it)
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    progress: bool = True  # show a progress bar
    # fine-tuning (with init_from)
    freeze_layers: int = 0  # freeze the embeddings and the first N blocks / rnn layers
    lora_rank: int = 0  # train LoRA adapters of this rank instead of the weights (0 = off)
    lora_alpha: float = 16.0  # LoRA scale: the adapters' output is multiplied by alpha / rank
    lora_dropout: float = 0.0  # dropout on the LoRA adapters' input
    lora_targets: list[str] = field(default_factory=lambda: ["c_attn", "c_proj", "c_fc"])  # linear layers given adapters
    # seq2seq
    label_smoothing: float = 0.0  # spread this much of each target's probability over the vocabulary
    eval_bleu_samples: int = 200  # val pairs greedy-decoded for BLEU and chrF at each eval (0 = off)
    best_by: str = "loss"  # which eval picks model.safetensors: loss | bleu | chrf (those two: seq2seq)


@dataclass
class GenerationConfig:
    """Decoding settings; the names (and meanings) are those of transformers' GenerationConfig."""

    max_new_tokens: int = 200  # tokens to generate after the prompt, at most
    min_new_tokens: int = 0  # eos cannot end a sequence before this many new tokens
    do_sample: bool = True  # sample; False = greedy (num_beams=1) or beam search
    temperature: float = 0.8  # divide logits by this before sampling
    top_k: int = 200  # keep the k most likely tokens (0 = off)
    top_p: float = 1.0  # nucleus sampling: keep the smallest set with this much probability (1 = off)
    min_p: float = 0.0  # drop tokens less likely than min_p x the top token's probability (0 = off)
    typical_p: float = 1.0  # locally typical sampling mass (1 = off)
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in the text (CTRL; 1 = off)
    no_repeat_ngram_size: int = 0  # no n-gram of this size occurs twice (0 = off)
    num_beams: int = 1  # beam search with this many beams when > 1
    length_penalty: float = 1.0  # beam score = log-prob / length ** length_penalty
    early_stopping: bool | str = False  # beam search: True, False (heuristic) or "never"
    num_return_sequences: int = 1  # sequences per prompt (samples, or the n best beams)
    stop: list[str] = field(default_factory=list)  # strings that end a sequence; not returned
    eos_token_id: int | list[int] | None = None  # None: the tokenizer's end-of-text token, if any
    seed: int | None = None  # fixes each prompt's samples, whatever else is in the batch
    output_scores: bool = False  # return per-token log-probabilities
    max_time: float = 0.0  # seconds after which generation stops (0 = no limit)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "generation": GenerationConfig,
}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        _validate(self)
        return self


def all_keys() -> list[str]:
    """Every valid dotted key, e.g. ``train.lr``."""
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


def _closest(key: str, candidates: list[str]) -> str:
    exact = [c for c in candidates if c.split(".")[-1] == key.split(".")[-1]]  # right field, wrong section
    match = exact or difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not match:  # try the bare field name against the bare names
        bare = {c.split(".")[-1]: c for c in candidates}
        m = difflib.get_close_matches(key.split(".")[-1], list(bare), n=1, cutoff=0.6)
        match = [bare[m[0]]] if m else []
    return f"; did you mean '{match[0]}'?" if match else ""


def _coerce(key: str, value: Any, default: Any, annotation: str) -> Any:
    """Convert a YAML/CLI value to the field's type, with a clear error."""
    if annotation == "list[str]":  # stop, special_tokens, lora_targets: one string or a list of them
        if isinstance(value, str) and value.strip().startswith("["):
            value = yaml.safe_load(value)
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(f"{key} must be a string or a list of strings, got {value!r}")
    if annotation == "int | list[int] | None":  # generation.eos_token_id
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else None
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
        if ok:
            return value
        raise ConfigError(f"{key} must be a token id, a list of token ids or null, got {value!r}")
    if annotation == "bool | str":  # generation.early_stopping: true, false or "never"
        if value == "never":
            return value
        annotation = "bool"
    if isinstance(value, str) and "list" not in annotation and "str" not in annotation:
        value = yaml.safe_load(value) if value.strip() else value
    if "None" in annotation and value in (None, "none", "None", "null"):
        return None
    try:
        if "bool" in annotation:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
                return value.lower() in ("true", "yes", "1", "on")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise TypeError
        if annotation.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if annotation.startswith("float"):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if "list" in annotation:  # str | list[str]
            if isinstance(value, str) and value.strip().startswith("["):
                value = yaml.safe_load(value)  # --data.dataset='[a.txt, b.txt]'
            if isinstance(value, (list, tuple)):
                return [str(v) for v in value]
            return str(value)
        if annotation.startswith("str"):
            if isinstance(value, (dict, list)):
                raise TypeError
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    kind = annotation.replace(" | None", " or none")
    raise ConfigError(f"{key} must be {kind}, got {value!r}")


def _set(cfg: Config, key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ConfigError(f"unknown config key '{key}'{_closest(key, all_keys())}")
    section, name = parts
    obj = getattr(cfg, section)
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        raise ConfigError(f"unknown config key '{key}'{_closest(key, all_keys())}")
    f = fields[name]
    setattr(obj, name, _coerce(key, value, getattr(obj, name), str(f.type)))
    explicit_keys(cfg).add(key)


def explicit_keys(cfg: Config) -> set[str]:
    """The dotted keys a file, an override or a saved config set (the rest are defaults)."""
    return cfg.__dict__.setdefault("_explicit", set())


def apply_dict(cfg: Config, d: dict[str, Any], source: str = "config") -> Config:
    """Apply a nested ``{section: {field: value}}`` dict onto ``cfg``."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping with sections {', '.join(SECTIONS)}")
    for section, values in d.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section '{section}'{_closest(str(section), list(SECTIONS))}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{section}' must be a mapping of field: value")
        for name, value in values.items():
            _set(cfg, f"{section}.{name}", value)
    return cfg


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse ``section.field=value`` strings (a leading ``--`` is allowed)."""
    out: dict[str, Any] = {}
    for item in items:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.field=value, e.g. train.lr=3e-4")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return data or {}


def load_config(path_or_preset: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None) -> Config:
    """Build a validated Config from defaults, a YAML file or preset name, then overrides.

    Args:
        path_or_preset: a YAML file, or the name of a preset in ``proselab/configs``.
        overrides: ``{"train.lr": 3e-4}`` or ``["train.lr=3e-4"]``.
    """
    cfg = Config()
    if path_or_preset:
        p = Path(path_or_preset)
        if not p.is_file():
            preset = PRESETS_DIR / f"{path_or_preset}.yaml"
            if not preset.is_file():
                hint = _closest(str(path_or_preset), list_presets())
                raise ConfigError(
                    f"config '{path_or_preset}' is neither a file nor a preset{hint} "
                    f"(presets: {', '.join(list_presets())})"
                )
            p = preset
        apply_dict(cfg, _read_yaml(p), source=str(p))
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for key, value in (overrides or {}).items():
        _set(cfg, key, value)
    return cfg.validate()


def config_from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config saved with ``to_dict`` (e.g. from a run's config.json)."""
    return apply_dict(Config(), {k: v for k, v in d.items() if k in SECTIONS}).validate()


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _validate(cfg: Config) -> None:
    m, d, t, g = cfg.model, cfg.data, cfg.train, cfg.generation
    _check(m.family in ("gpt", "rnn", "seq2seq"), f"model.family must be gpt, rnn or seq2seq, got '{m.family}'")
    _check(m.vocab_size >= 0, "model.vocab_size must be >= 0 (0 = from the tokenizer)")
    _check(m.block_size >= 1, f"model.block_size must be >= 1, got {m.block_size}")
    _check(0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}")
    if m.family == "seq2seq":
        _validate_seq2seq(m, d)
    elif m.family == "gpt":
        _validate_transformer(m)
    else:
        _validate_rnn(m)
    _check(d.vocab_size >= 1, "data.vocab_size must be >= 1")
    _check(0.0 < d.val_fraction < 1.0, f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    _check(d.encoding_errors in ("strict", "replace"), "data.encoding_errors must be strict or replace")
    _check(bool(d.dataset), "data.dataset must name a built-in corpus or text files")
    _check(d.format in ("auto", "text", "sft", "pairs"), f"data.format must be auto, text, sft or pairs, got '{d.format}'")
    _check(d.max_src_len >= 0 and d.max_tgt_len >= 0, "data.max_src_len and data.max_tgt_len must be >= 0 (0 = no limit)")
    _check(d.truncate_src >= 0, f"data.truncate_src must be >= 0 (0 = whole sources), got {d.truncate_src}")
    _check(d.bad_lines in ("error", "skip"), f"data.bad_lines must be error or skip, got '{d.bad_lines}'")
    _check(d.chat_template in ("chatml",), f"data.chat_template must be chatml, got '{d.chat_template}'")
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
    _check(t.best_by in ("loss", "bleu", "chrf"), f"train.best_by must be loss, bleu or chrf, got '{t.best_by}'")
    _check(t.best_by == "loss" or (m.family == "seq2seq" and t.eval_bleu_samples > 0),
           f"train.best_by={t.best_by} scores decoded dev pairs: it needs a seq2seq model and "
           f"train.eval_bleu_samples > 0")
    validate_generation(g)


ATTENTIONS = ("bahdanau", "luong-dot", "luong-general", "none")


def _validate_transformer(m: ModelConfig) -> None:
    """The fields a GPT and a Transformer encoder-decoder share."""
    _check(m.n_layer >= 1 and m.n_head >= 1 and m.n_embd >= 1, "model.n_layer, n_head and n_embd must be >= 1")
    _check(m.n_embd % m.n_head == 0, f"model.n_embd ({m.n_embd}) must be divisible by model.n_head ({m.n_head})")


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
    _check(not m.share_embeddings or d.joint_vocab,
           "model.share_embeddings needs one vocabulary for both sides: set data.joint_vocab=true")
    if m.arch == "transformer":
        _validate_transformer(m)
        return
    _validate_rnn(m)
    _check(m.attention in ATTENTIONS, f"model.attention must be one of {', '.join(ATTENTIONS)}, got '{m.attention}'")
    _check(m.attention != "luong-dot" or not m.bidirectional,
           "model.attention=luong-dot scores the decoder state against encoder states of the same width, but a "
           "bidirectional encoder's are twice as wide: use luong-general, or model.bidirectional=false")


def validate_generation(g: GenerationConfig) -> None:
    """Raise ConfigError naming the first generation field with an impossible value."""
    def need(ok: bool, name: str, what: str) -> None:
        _check(ok, f"generation.{name} {what}, got {getattr(g, name)!r}")

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    need(is_int(g.max_new_tokens) and g.max_new_tokens >= 0, "max_new_tokens", "must be an integer >= 0")
    need(is_int(g.min_new_tokens) and g.min_new_tokens >= 0, "min_new_tokens", "must be an integer >= 0")
    need(isinstance(g.temperature, (int, float)) and (g.temperature > 0 or not g.do_sample), "temperature",
         "must be > 0 when sampling (use do_sample=False for greedy decoding)")
    need(is_int(g.top_k) and g.top_k >= 0, "top_k", "must be an integer >= 0 (0 = off)")
    need(isinstance(g.top_p, (int, float)) and 0 < g.top_p <= 1, "top_p", "must be in (0, 1]")
    need(isinstance(g.min_p, (int, float)) and 0 <= g.min_p <= 1, "min_p", "must be in [0, 1]")
    need(isinstance(g.typical_p, (int, float)) and 0 < g.typical_p <= 1, "typical_p", "must be in (0, 1]")
    need(isinstance(g.repetition_penalty, (int, float)) and g.repetition_penalty > 0, "repetition_penalty",
         "must be > 0 (1 = off)")
    need(is_int(g.no_repeat_ngram_size) and g.no_repeat_ngram_size >= 0, "no_repeat_ngram_size",
         "must be an integer >= 0 (0 = off)")
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
    need(isinstance(g.max_time, (int, float)) and g.max_time >= 0, "max_time", "must be >= 0 seconds (0 = no limit)")
