"""Typed configuration: dataclasses with defaults, YAML files, presets and dotted overrides.

A config has four sections, each a dataclass: ``model``, ``data``, ``train`` and
``generation``. Files are YAML with those sections as top-level keys; on the command
line any field can be overridden as ``--train.lr=3e-4``. Unknown keys are errors that
name the closest valid key, so a typo never silently falls back to a default.

The defaults (``proselab train --data FILE``, no preset) are a character-level GPT of the demo's
size and schedule: minutes on a laptop CPU, readable samples. Presets set the fields they need,
so a default changes only what they leave out (``proselab config PRESET`` shows the result).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import functools
import inspect
import io
import textwrap
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .checks import ATTENTIONS, validate, validate_generation
from .values import ConfigError, coerce, field_types

__all__ = [
    "ATTENTIONS",
    "SECTIONS",
    "Config",
    "ConfigError",
    "DataConfig",
    "FieldDoc",
    "GenerationConfig",
    "ModelConfig",
    "TrainConfig",
    "all_keys",
    "apply_dict",
    "apply_overrides",
    "config_from_dict",
    "describe_presets",
    "explicit_keys",
    "field_docs",
    "list_presets",
    "load_config",
    "override_generation",
    "parse_overrides",
    "section_doc",
    "validate_generation",
    "with_updates",
]

PRESETS_DIR = Path(__file__).parent.parent / "configs"


@dataclass
class ModelConfig:
    """The network: its family and size (fine-tuning takes these from train.init_from)."""

    family: str = "gpt"  # gpt | rnn | seq2seq
    vocab_size: int = 0  # 0 = take it from the tokenizer
    block_size: int = 128  # context length in tokens (training blocks; gpt's window)
    # gpt
    n_layer: int = 4  # transformer blocks
    n_head: int = 8  # attention heads per block (n_embd / n_head wide each)
    n_embd: int = 128  # embedding width (also the rnn's embedding size)
    dropout: float = 0.0  # dropout on embeddings, attention, residuals and between rnn layers
    bias: bool = True  # bias in Linear and LayerNorm layers, like GPT-2
    # gpt, Llama style (Touvron et al. 2023): rope, norm=rmsnorm, activation=silu, gated_ffn, bias=false
    rope: bool = False  # gpt: rotary position embeddings (Su et al. 2021) instead of GPT-2's learned table
    rope_theta: float = 10000.0  # gpt: the rotary base (Llama 3: 500000)
    rope_factor: float = 0.0  # gpt: rope scaling (longer contexts), slow frequencies divided by this (0 = none)
    rope_type: str = "llama3"  # gpt, rope_factor > 0: llama3 (Llama 3.1), linear (every frequency), yarn or longrope
    rope_low_freq_factor: float = 1.0  # gpt, llama3: wavelengths over original / this are scaled
    rope_high_freq_factor: float = 4.0  # gpt, llama3: wavelengths under original / this are kept
    rope_original_context: int = 8192  # gpt, llama3, yarn, longrope: the context the model was first trained for
    rope_beta_fast: float = 32.0  # gpt, yarn: frequencies turning more than this often in the original context are kept
    rope_beta_slow: float = 1.0  # gpt, yarn: ... fewer than this often are scaled; those between are blended
    rope_attention_factor: float = 0.0  # gpt, yarn and longrope: cos and sin scaled by this (0 = the kind's default)
    rope_short_factor: list[float] = field(default_factory=list)  # gpt, longrope: each frequency's divisor (Phi-3)
    rope_long_factor: list[float] = field(default_factory=list)  # gpt, longrope: past the original context (kept
    # for export: proselab's context is the original one)
    rope_dim: int = 0  # gpt: the leading dimensions of each head that rotate (0 = all; Phi-4-mini's partial rotary)
    embed_multiplier: float = 0.0  # gpt: token embeddings multiplied by this (0 = not; Gemma: sqrt(n_embd))
    n_kv_head: int = 0  # gpt: key/value heads shared by groups of query heads (GQA; 0 = n_head)
    qkv_bias: bool = False  # gpt: biases on the query, key and value projections even without model.bias (Qwen2)
    head_dim: int = 0  # gpt: each attention head's width (0 = n_embd / n_head; Mistral-Nemo and Qwen3 set their own)
    qk_norm: bool = False  # gpt: an RMSNorm on each query and key head before rotary positions (Qwen3)
    # rnn
    cell: str = "lstm"  # rnn | lstm | gru
    hidden_size: int = 128  # rnn hidden state width (= n_embd, so tie_weights works by default)
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
    src_prefix_id: int = -1  # a token put before every source, after truncation (BART's <s>; -1 = none)
    tgt_prefix_id: int = -1  # a token every target starts with, predicted first (BART's <s>; -1 = none)
    # transformer layout (the defaults are proselab's own seq2seq and GPT-2; imported Marian, BART, T5 and
    # Llama checkpoints set them; a gpt reads ffn_dim, activation, gated_ffn, norm and norm_eps)
    n_dec_layer: int = 0  # decoder blocks (0 = n_layer)
    ffn_dim: int = 0  # feed-forward width (0 = 4 x n_embd)
    activation: str = "gelu_tanh"  # feed-forward activation: gelu_tanh | gelu (exact) | relu | silu
    gated_ffn: bool = False  # gated feed-forward, act(x W_gate) * (x W_fc) (T5 v1.1, Flan-T5)
    norm: str = "layernorm"  # layernorm | rmsnorm (T5)
    norm_eps: float = 1e-5  # the norms' epsilon
    norm_first: bool = True  # norms at the sublayer inputs and a final one (pre-LN), or after each residual (Marian, BART)
    positions: str = "sinusoidal"  # sinusoidal | learned (BART: block_size rows, offset 2) | relative (T5's buckets)
    rel_buckets: int = 32  # relative positions: buckets per head
    rel_max_distance: int = 128  # relative positions: the distance where the last bucket starts
    embed_scale: bool = True  # multiply token embeddings by sqrt(n_embd)
    embed_norm: bool = False  # a norm on the embeddings once positions are added (BART)
    attn_scale: bool = True  # divide attention scores by sqrt(head size) (T5 does not)
    head_scale: bool = False  # multiply the decoder output by n_embd ** -0.5 before the head (T5 v1.0's tied head)
    logits_bias: bool = False  # a fixed bias on the output logits (Marian's and BART's final_logits_bias)
    hf_type: str = ""  # the Hugging Face model_type the weights came from (marian | bart | t5, and for a gpt
    # mistral | phi3 | gemma, which export writes back; "" = proselab's own or the layout its options imply)
    # classification (any family with labels is a classifier; seq2seq: its Transformer encoder)
    labels: list[str] = field(default_factory=list)  # label names in id order (empty = a generator; else from the data)

    def head_size(self) -> int:
        """A gpt's attention head width: model.head_dim, or n_embd / n_head."""
        return self.head_dim or self.n_embd // self.n_head


@dataclass
class DataConfig:
    """What to train on, and how text becomes tokens."""

    dataset: str | list[str] = "shakespeare"  # built-in name (see `proselab data list`) or .txt files / directories
    tokenizer: str = "char"  # char | word | bpe | gpt2, or a path to a tokenizer.json / vocab.json+merges.txt dir
    vocab_size: int = 8000  # target vocabulary for word and bpe tokenizers trained on the corpus
    val_fraction: float = 0.1  # the last fraction of the token stream is validation, like nanoGPT
    encoding_errors: str = "strict"  # strict: stop at a non-UTF-8 byte; replace: substitute U+FFFD
    clean: bool = False  # normalise Unicode (NFC), line endings and trailing spaces before tokenizing
    tweet_placeholders: bool = False  # a trained tokenizer reads links as "http" and @mentions as "@user" (TweetEval)
    format: str = "auto"  # text (a token stream) | sft (JSONL examples) | pairs (TSV/JSONL src-tgt) | labels (texts and labels) | auto (by file)
    chat_template: str = "chatml"  # layout of {"messages": ...}: chatml (its tokens join the vocabulary), or a Jinja template (an imported checkpoint's)
    special_tokens: list[str] = field(default_factory=list)  # extra tokens added to the tokenizer (the model grows)
    # sentence pairs (data.format=pairs, for seq2seq)
    val_dataset: str | list[str] = ""  # the dev pairs (files, or a built-in's split like aclsum:dev); "" = last val_fraction
    joint_vocab: bool = True  # one tokenizer for source and target, trained on both sides
    max_src_len: int = 0  # leave out pairs whose source has more tokens than this (0 = keep all)
    max_tgt_len: int = 0  # leave out pairs whose target has more tokens than this (0 = keep all)
    truncate_src: int = 0  # read only a source's first N tokens, in training, evaluation and serving (0 = all)
    bad_lines: str = "error"  # a malformed pair or labelled row stops loading (error) or is skipped and counted (skip)
    # labelled texts (data.format=labels, for classifiers)
    text_column: str = "text"  # the CSV/TSV column or JSONL key holding the text
    label_column: str = "label"  # the CSV/TSV column or JSONL key holding the label
    test_fraction: float = 0.1  # one labelled file: this stratified fraction is held out as test (never trained on)


@dataclass
class TrainConfig:
    """The run: where it is written, the optimizer, the schedule, evaluation, fine-tuning."""

    out_dir: str = "runs/default"  # the run directory this training writes
    init_from: str = "scratch"  # scratch | resume (continue out_dir) | a run or Hugging Face GPT-2 dir to fine-tune
    overwrite: bool = False  # allow scratch training to replace a run already in out_dir
    seed: int = 1337  # seeds model init, batch sampling and dropout
    batch_size: int = 16  # sequences per micro-batch (per process under torchrun)
    grad_accum: int = 1  # micro-batches per optimizer step
    max_iters: int = 1500  # optimizer steps
    max_time: float = 0.0  # stop after this many seconds of training, resumed sessions added up (0 = no limit)
    decay_by_time: bool = True  # with max_time, the cosine decay also follows the budget (false: by steps only, reproducible)
    lr: float = 2e-3  # peak learning rate (left unset with init_from: 1e-4, or 5e-4 for LoRA)
    min_lr: float = 2e-4  # floor of the cosine decay (left unset with init_from: a tenth of that lr)
    warmup_iters: int = 100  # linear warmup steps (left unset with init_from: 20)
    lr_decay_iters: int = 0  # end of the cosine decay (0 = max_iters)
    weight_decay: float = 0.1  # AdamW decay, applied to matrices only (not biases, norms)
    beta1: float = 0.9  # AdamW's first-moment decay
    beta2: float = 0.99  # AdamW's second-moment decay (0.99, not 0.999: small batches, as nanoGPT's char config)
    grad_clip: float = 1.0  # clip the global grad norm to this (0 = off)
    ema_decay: float = 0.0  # evaluate and keep an exponential moving average of the weights, e.g. 0.998 (0 = off)
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
    best_by: str = "loss"  # which eval picks model.safetensors: loss | bleu | chrf (seq2seq) | accuracy | macro_f1 (classifiers)
    class_weights: str = "none"  # classifiers: none | balanced (each class weighted by n / (n_classes x its count))
    aux_lm_weight: float = 0.0  # GPT classifiers: add this x the texts' next-token loss, GPT-1's auxiliary LM objective (0 = off)
    # knowledge distillation (lm, sft and seq2seq; also spelled train.distill.teacher, ...)
    distill_teacher: str = ""  # a run or Hugging Face GPT-2 dir the student also learns to imitate ("" = off)
    distill_alpha: float = 0.5  # weight of the KD term: (1 - alpha) x CE(gold) + alpha x T^2 x KL(teacher_T || student_T)
    distill_temperature: float = 2.0  # T, softening both distributions (2, as DistilGPT2)
    distill_top_k: int = 0  # KD over the teacher's k most likely tokens, renormalised (0 = the full distribution)
    distill_init: str = "scratch"  # scratch | every-other-layer (the teacher's embeddings, head and every other block)


@dataclass
class GenerationConfig:
    """Decoding settings; the names (and meanings) are those of transformers' GenerationConfig,
    but for presence_penalty, frequency_penalty and logit_bias, which are OpenAI's."""

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
    presence_penalty: float = 0.0  # subtracted from the logit of each token already generated (OpenAI's; 0 = off)
    frequency_penalty: float = 0.0  # subtracted per time a token was generated so far (OpenAI's; 0 = off)
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit (-100 bans; OpenAI's)
    num_beams: int = 1  # beam search with this many beams when > 1
    length_penalty: float = 1.0  # beam score = log-prob / length ** length_penalty
    early_stopping: bool | str = False  # beam search: True, False (heuristic) or "never"
    num_return_sequences: int = 1  # sequences per prompt (samples, or the n best beams)
    stop: list[str] = field(default_factory=list)  # strings that end a sequence; not returned
    eos_token_id: int | list[int] | None = None  # None: the tokenizer's end-of-text token, if any
    forced_bos_token_id: int | None = None  # the first generated token is this one (BART's <s>; None = free)
    forced_eos_token_id: int | None = None  # the last token max_new_tokens allows is this one (None = free)
    suppress_tokens: list[int] = field(default_factory=list)  # token ids never generated (Marian's <pad>)
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

    def validate(self) -> Config:
        validate(self)
        return self


@dataclass(frozen=True)
class FieldDoc:
    """What the source says about one config field."""

    comment: str  # the comment beside the field
    heading: tuple[str, ...] = ()  # comment lines just above it, opening a group of fields ("gpt", "rnn", ...)


@functools.cache  # the source is read and parsed once
def _class_syntax(section: str) -> tuple[ast.ClassDef | None, list[tokenize.TokenInfo]]:
    """A section's class as ast, and its comment tokens (ast drops comments; tokenize keeps them)."""
    try:
        source = textwrap.dedent(inspect.getsource(SECTIONS[section]))
    except (OSError, TypeError):  # no source shipped (a frozen app): the config prints without comments
        return None, []
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return ast.parse(source).body[0], [t for t in tokens if t.type == tokenize.COMMENT]


def field_docs(section: str) -> dict[str, FieldDoc]:
    """Each field of ``section`` with the comment written beside it in this file: the comments
    are the reference documentation, so they live in one place and `proselab config` prints them."""
    cls, tokens = _class_syntax(section)
    text = {t.start[0]: t.string.lstrip("#").strip() for t in tokens}
    alone = {t.start[0] for t in tokens if not t.line[:t.start[1]].strip()}  # comment-only lines
    docs = {}
    for node in cls.body if cls else ():
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        heading, line = [], node.lineno - 1
        while line in alone:
            heading.insert(0, text[line])
            line -= 1
        inline = [text[n] for n in range(node.lineno, node.end_lineno + 1) if n in text and n not in alone]
        docs[node.target.id] = FieldDoc(" ".join(inline), tuple(heading))
    return docs


def section_doc(section: str) -> str:
    """The first line of a section class's docstring ("" if it has none)."""
    cls, _ = _class_syntax(section)
    doc = ast.get_docstring(cls) if cls else None
    return doc.strip().splitlines()[0] if doc else ""


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


def _set(cfg: Config, key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) == 3 and f"{parts[0]}.{parts[1]}_{parts[2]}" in all_keys():  # train.distill.teacher
        key, parts = f"{parts[0]}.{parts[1]}_{parts[2]}", [parts[0], f"{parts[1]}_{parts[2]}"]
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ConfigError(f"unknown config key '{key}'{_closest(key, all_keys())}")
    section, name = parts
    obj = getattr(cfg, section)
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        raise ConfigError(f"unknown config key '{key}'{_closest(key, all_keys())}")
    setattr(obj, name, coerce(key, value, field_types(type(obj))[name]))
    explicit_keys(cfg).add(key)


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """``cfg`` with dotted overrides (``{"train.lr": "3e-4"}``) set and coerced, validated."""
    for key, value in overrides.items():
        _set(cfg, key, value)
    return cfg.validate()


def with_updates(cfg: Config, updates: dict[str, Any]) -> Config:
    """A validated copy of ``cfg`` with ``updates`` (dotted keys, values of the fields' types)
    set: what a run's data fixes in its config (vocabulary sizes, special token ids)."""
    new = copy.deepcopy(cfg)
    for key, value in updates.items():
        section, name = key.split(".")
        assert hasattr(getattr(new, section), name), f"no config field {key}"
        setattr(getattr(new, section), name, value)
    return new.validate()


def override_generation(base: GenerationConfig, overrides: dict[str, Any]) -> GenerationConfig:
    """``base`` with generation ``overrides`` (Python values, e.g. ``{"top_p": 0.9}``) applied
    and validated; an unknown name is a ConfigError naming the closest one."""
    names = [f.name for f in dataclasses.fields(GenerationConfig)]
    for key in overrides:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown generation option '{key}'{hint}")
    if isinstance(overrides.get("stop"), str):
        overrides = {**overrides, "stop": [overrides["stop"]]}
    cfg = dataclasses.replace(base, **overrides)
    validate_generation(cfg)
    return cfg


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
            if isinstance(value, dict) and f"{section}.{name}" not in all_keys():  # train: {distill: {teacher: x}}
                for sub, v in value.items():
                    _set(cfg, f"{section}.{name}.{sub}", v)
                continue
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


def describe_presets() -> dict[str, str]:
    """Each preset's one-line description: the first line of the comment that opens its file."""
    out = {}
    for name in list_presets():
        with open(PRESETS_DIR / f"{name}.yaml", encoding="utf-8") as f:
            first = f.readline().strip()
        out[name] = first.lstrip("#").strip() if first.startswith("#") else ""
    return out


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
