"""Loading runs: a proselab run directory or a Hugging Face checkpoint, wherever a run is read;
fine-tuning from one (``train.init_from``); exporting a run to a Hugging Face layout.

Above ``checkpoint.py`` (the run directory's files) and ``interop/`` (Hugging Face layouts).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from . import interop
from .interop import hub
from .chat import is_jinja
from .checkpoint import (
    CONFIG_FILE,
    SRC_TOKENIZER_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    RunError,
    load_src_tokenizer,
    load_weights,
    read_run_config,
)
from .config import Config, ConfigError, ModelConfig, TrainConfig, config_from_dict, explicit_keys
from .config.checks import (INFERENCE_BYTES, ROPE_SCALING, TRAINING_BYTES, TRANSFORMER_LAYOUT, check_memory,
                            model_fields)
from .data import progress
from .models import build_model
from .models.heads import HEAD
from .models.lora import apply_lora, merge_lora
from .tokenizers import Tokenizer, TokenizerError, load_tokenizer, vocab_span

ARCHITECTURE = ("family", "vocab_size", "n_layer", "n_head", "n_embd", "bias", "rope", "rope_theta", *ROPE_SCALING,
                "rope_dim", "embed_multiplier", "n_kv_head", "qkv_bias", "head_dim", "qk_norm", "cell", "hidden_size",
                "num_layers", "tie_weights", "arch", "attention",
                "bidirectional", "input_feeding", "share_embeddings", "src_vocab_size", "bos_id", "src_prefix_id",
                "tgt_prefix_id", *TRANSFORMER_LAYOUT)
# Fine-tuning starts from weights that already work: a scratch learning rate and warmup would
# wreck them. These replace the defaults (not values set in a file or on the command line).
FINE_TUNE_DEFAULTS = {"train.lr": 1e-4, "train.min_lr": 1e-5, "train.warmup_iters": 20}
LORA_DEFAULTS = {"train.lr": 5e-4, "train.min_lr": 5e-5, "train.warmup_iters": 20}  # adapters start at zero


def load_run_config(path: str | Path) -> Config:
    """The Config of a run directory or a Hugging Face checkpoint (a directory or a model id),
    without loading weights."""
    path = resolve_run(path)
    if interop.is_hf_checkpoint(path):
        return interop.hf_config(path)
    data = read_run_config(path)
    try:
        return config_from_dict(data)
    except ValueError as e:
        raise RunError(f"{path / CONFIG_FILE}: {e}") from None


def resolve_run(path: str | Path) -> Path:
    """The local directory of a run, a Hugging Face checkpoint directory, or a Hugging Face model
    id (``gpt2``, ``org/name@revision``: downloaded once into the Hugging Face cache, see
    ``interop.hub``); a local path always wins."""
    return hub.resolve(path)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu",
             weights: str = WEIGHTS_FILE) -> tuple[torch.nn.Module, Tokenizer, Config]:
    """Load a run's model (in eval mode), tokenizer and Config.

    Args:
        run_dir: a run directory written by ``proselab train``, or a Hugging Face checkpoint
            directory or model id (see ``proselab.interop``).
        device: where to put the model.
        weights: ``model.safetensors`` (best) or ``last.safetensors`` (latest).

    Returns:
        (model, tokenizer, config)
    """
    run_dir = resolve_run(run_dir)
    cfg = load_run_config(run_dir)  # its sizes checked against this machine's memory
    try:
        check_fits(cfg.model, device)  # and a GPU's
    except ConfigError as e:
        raise RunError(f"{run_dir / CONFIG_FILE}: {e}") from None
    if interop.is_hf_checkpoint(run_dir):
        return interop.load_hf(run_dir, device)
    tokenizer = _run_tokenizer(run_dir / TOKENIZER_FILE, cfg.model.vocab_size)
    if cfg.model.family == "seq2seq" and (run_dir / SRC_TOKENIZER_FILE).is_file():  # checked here; api.load reads it
        _run_tokenizer(run_dir / SRC_TOKENIZER_FILE, cfg.model.src_vocab_size or cfg.model.vocab_size)
    model = build_model(cfg.model)
    if cfg.train.lora_rank:  # the file holds base weights and adapters: rebuild, load, then merge
        apply_lora(model, cfg.train.lora_rank, cfg.train.lora_alpha, cfg.train.lora_targets, cfg.train.lora_dropout)
        load_weights(model, run_dir / weights)
        merge_lora(model)
    else:
        load_weights(model, run_dir / weights)
    return model.to(device).eval(), tokenizer, cfg


def open_run(path: str | Path, device: str | torch.device = "cpu"
             ) -> tuple[Path, torch.nn.Module, Tokenizer, Config, Tokenizer | None]:
    """``load_run`` of a local path or model id (``resolve_run``), with the seq2seq source
    tokenizer (``source_tokenizer``; None for other families): (directory, model, tokenizer,
    config, source tokenizer)."""
    run_dir = resolve_run(path)
    model, tokenizer, cfg = load_run(run_dir, device)
    return run_dir, model, tokenizer, cfg, source_tokenizer(run_dir) if cfg.model.family == "seq2seq" else None


def run_tokenizers(run_dir: str | Path) -> tuple[Tokenizer, Tokenizer | None]:
    """A run's or a Hugging Face checkpoint's (target) tokenizer and its separate source tokenizer
    (None: the target's reads sources too), without the weights."""
    if interop.is_hf_checkpoint(run_dir):
        return interop.load_hf_tokenizers(run_dir)
    return load_tokenizer(Path(run_dir)), load_src_tokenizer(run_dir)


def source_tokenizer(run_dir: str | Path) -> Tokenizer | None:
    """A seq2seq run's separate source tokenizer (a run's src_tokenizer.json, a Marian
    checkpoint's source.spm), or None when the target's tokenizer reads sources too."""
    if interop.is_hf_checkpoint(run_dir):
        return interop.load_hf_tokenizers(run_dir)[1]
    return load_src_tokenizer(run_dir)


def _run_tokenizer(path: Path, vocab_size: int) -> Tokenizer:
    """A run's tokenizer file, or a RunError naming it when it is damaged or spans more ids than
    the model's ``vocab_size`` (they would index past the embedding). The span is read from the
    JSON first: a tokenizer of millions of tokens is refused in a second, not built in minutes."""
    try:
        span = vocab_span(path)
        tokenizer = None if span > vocab_size else load_tokenizer(path)
    except TokenizerError as e:
        raise RunError(f"{e}; restore the {path.name} the run was trained with") from None
    size = span if tokenizer is None else max(span, tokenizer.vocab_size)
    if size > vocab_size:
        raise RunError(f"{path} has {size:,} tokens but the model of config.json {vocab_size:,}: the files are "
                       "not from the same run")
    return tokenizer


def check_fits(m: ModelConfig, device: str | torch.device = "cpu", training: bool = False) -> None:
    """Refuse (ConfigError naming the sizes) a model that cannot fit where it goes, before it is
    built: its float32 weights, and for ``training`` their gradients and AdamW's moments too,
    against the free memory of ``device`` if it is a GPU, else of this machine."""
    device = torch.device(device)
    per_param = TRAINING_BYTES if training else INFERENCE_BYTES
    if device.type == "cuda":
        check_memory(m, per_param, available=torch.cuda.mem_get_info(device)[0], where=str(device))
    else:
        check_memory(m, per_param)


def fine_tune_config(cfg: Config) -> Config:
    """Fine-tuning: the architecture and tokenizer of ``cfg`` come from ``train.init_from``.

    The checkpoint fixes every architecture field; ``model.dropout`` stays the config's, and a
    GPT's ``model.block_size`` may be smaller than the checkpoint's (its position table is then
    cropped, as nanoGPT does). The learning rate, its floor and the warmup take fine-tuning
    defaults (FINE_TUNE_DEFAULTS, LORA_DEFAULTS) unless the config sets them.
    """
    src = resolve_run(cfg.train.init_from)
    if not src.is_dir():
        raise RunError(f"train.init_from must be scratch, resume, or a run / Hugging Face checkpoint "
                       f"directory or model id; '{cfg.train.init_from}' is none of these")
    cfg.train.init_from = str(src)  # a model id's snapshot: what loading the weights and tokenizer reads
    src_cfg = load_run_config(src)
    _check_same_family(cfg, src_cfg)
    _warn_overridden(cfg, src_cfg)
    for name in ARCHITECTURE:
        setattr(cfg.model, name, getattr(src_cfg.model, name))
    if cfg.model.family == "gpt":
        cfg.model.block_size = min(cfg.model.block_size, src_cfg.model.block_size)
    elif cfg.model.family == "seq2seq" and src_cfg.model.positions == "learned":  # the size of its position tables
        cfg.model.block_size = src_cfg.model.block_size
    cfg.data.tokenizer = str(src)  # a run's tokenizer.json, or the checkpoint's tokenizer files
    explicit = explicit_keys(cfg)
    if is_jinja(src_cfg.data.chat_template) and "data.chat_template" not in explicit:
        cfg.data.chat_template = src_cfg.data.chat_template  # a chat checkpoint's own layout of conversations
    t = cfg.train
    if t.lora_rank and cfg.model.gated_ffn and "train.lora_targets" not in explicit and "c_gate" not in t.lora_targets:
        t.lora_targets = [*t.lora_targets, "c_gate"]  # the default: every linear layer of the blocks
    if cfg.model.family == "seq2seq":
        cfg.data.joint_vocab = src_cfg.data.joint_vocab  # and a separate source tokenizer comes along
    defaults = TrainConfig()
    for key, value in (LORA_DEFAULTS if t.lora_rank else FINE_TUNE_DEFAULTS).items():
        name = key.split(".")[1]
        if key not in explicit and getattr(t, name) == getattr(defaults, name):
            setattr(t, name, value)
    return cfg.validate()


def _check_same_family(cfg: Config, src_cfg: Config) -> None:
    """A config that says which family it trains (a preset does) must name the checkpoint's:
    fine-tuning would silently train the checkpoint's family instead."""
    mine, theirs = cfg.model.family, src_cfg.model.family
    if "model.family" in explicit_keys(cfg) and mine != theirs:
        raise ConfigError(f"train.init_from '{cfg.train.init_from}' is a {theirs} model, but this config trains a "
                          f"{mine} model (model.family={mine}); fine-tuning keeps the checkpoint's architecture, so "
                          f"give a {mine} run as train.init_from, or leave train.init_from out to train from scratch")


def _warn_overridden(cfg: Config, src_cfg: Config) -> None:
    """Architecture fields the config sets to another value than the checkpoint's are ignored:
    say so (the fields the checkpoint's model does not read at all are build_task's warning)."""
    explicit, src, read = explicit_keys(cfg), src_cfg.model, model_fields(src_cfg.model)
    names = [n for n in ARCHITECTURE if f"model.{n}" in explicit and n in read and n != "family"
             and getattr(cfg.model, n) != getattr(src, n)]
    if names and progress.is_main_process():
        mine = ", ".join(f"model.{n}={getattr(cfg.model, n)}" for n in names)
        theirs = ", ".join(f"{n}={getattr(src, n)}" for n in names)
        verb = "is" if len(names) == 1 else "are"
        warnings.warn(f"{mine} {verb} ignored: fine-tuning keeps the architecture of '{cfg.train.init_from}' "
                      f"({theirs})", stacklevel=5)  # the caller of proselab.train


def load_init_weights(model: torch.nn.Module, source: str | Path) -> None:
    """Copy the weights of ``source`` (a run or a HF checkpoint) into ``model``.

    A GPT's position table is cropped to the model's block_size. When the model's vocabulary
    is larger (special tokens were added), the embedding and head rows of the new tokens start
    at the mean of the old rows, which keeps their logits ordinary at first (as transformers'
    ``resize_token_embeddings`` does). A classifier takes the body of a language model and
    keeps its own fresh head (and a classifier's head when the labels are the same).
    """
    with progress.working(f"loading the weights of {source}"):
        src_model, _, src_cfg = load_run(Path(source).expanduser())
    state, own = src_model.state_dict(), model.state_dict()
    classifier = HEAD + ".weight" in own
    if classifier:  # the language model's head (and a seq2seq decoder) have no place in a classifier
        state = {k: v for k, v in state.items() if k in own}
        if src_cfg.model.labels != model.config.labels:
            state.pop(HEAD + ".weight", None)
            if src_cfg.model.labels:
                warnings.warn(f"'{source}' classifies {', '.join(src_cfg.model.labels)}; the labels here are "
                              f"{', '.join(model.config.labels)}, so the classification head starts fresh",
                              stacklevel=3)
    missing = [k for k in own if k not in state and not (classifier and k.startswith(HEAD + "."))]
    if missing:
        raise RunError(f"'{source}' lacks weights this model needs ({', '.join(missing[:3])}): a classifier's "
                       "weights cannot start a generator; fine-tune a language model run instead")
    wpe = "transformer.wpe.weight"
    if wpe in state:
        state[wpe] = state[wpe][: own[wpe].size(0)]
    old_v, new_v = src_model.config.vocab_size, model.config.vocab_size
    if new_v != old_v:
        assert new_v > old_v, f"the model's vocabulary ({new_v}) is smaller than the checkpoint's ({old_v})"
        for name, t in state.items():
            if t.dim() >= 1 and t.size(0) == old_v and own[name].size(0) == new_v:
                extra = t.float().mean(0, keepdim=True).to(t.dtype).expand(new_v - old_v, *t.shape[1:])
                state[name] = torch.cat([t, extra])
    model.load_state_dict(state, strict=not classifier)


def export_hf(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a proselab run as a Hugging Face checkpoint directory (a GPT run: GPT-2's layout, or
    Llama's for a Llama-style one; a seq2seq run fine-tuned from a Marian, BART or T5 checkpoint:
    that checkpoint's layout).

    ``transformers.AutoModelForCausalLM.from_pretrained(out_dir)`` (AutoModelForSeq2SeqLM) and
    ``AutoTokenizer.from_pretrained(out_dir)`` load the result. A bias-free model is written
    with zero biases, which computes the same function.

    Returns:
        the output directory.
    """
    out = Path(out_dir)
    with progress.working(f"exporting {run_dir} to {out}"):
        model, tokenizer, cfg = load_run(run_dir)
        src_tokenizer = source_tokenizer(run_dir) if cfg.model.family == "seq2seq" else None
        interop.export_hf(model, tokenizer, cfg, out, Path(run_dir), src_tokenizer)
    return out
