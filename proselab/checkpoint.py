"""Run directories: atomic writes, safetensors weights, and loading a run back.

A run directory (see DESIGN.md) holds:

    config.json          the full Config plus the tokenizer kind and format version
    model.safetensors    the best weights by validation loss (what every command reads)
    last.safetensors     the latest weights, which trainer_state.pt belongs to
    tokenizer.json
    src_tokenizer.json   a seq2seq run's source tokenizer, when the sides have separate vocabularies
    trainer_state.pt     optimizer, step, RNG states: exact resume (loaded weights_only)
    metrics.jsonl, loss.png

Every file is written to a temporary name in the same directory and renamed into place,
so a run killed at any moment keeps its last complete checkpoint.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_path, atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LAST_WEIGHTS_FILE = "last.safetensors"
TOKENIZER_FILE = "tokenizer.json"
SRC_TOKENIZER_FILE = "src_tokenizer.json"
TRAINER_STATE_FILE = "trainer_state.pt"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
RUN_FILES = (CONFIG_FILE, WEIGHTS_FILE, LAST_WEIGHTS_FILE, TOKENIZER_FILE, SRC_TOKENIZER_FILE, TRAINER_STATE_FILE,
             METRICS_FILE, PLOT_FILE)


class RunError(ValueError):
    """A path given as a run directory is not one, or is incomplete."""


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _state_dict_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, with tied duplicates dropped (safetensors forbids shared storage)."""
    seen: dict[tuple[int, int], str] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen:
            continue  # tied to seen[key]; restored by the model's own tying on load
        seen[key] = name
        out[name] = t.detach().to("cpu").contiguous()
    return out


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write a model's weights to ``path`` as safetensors, atomically."""
    with atomic_path(path) as tmp:
        save_file(_state_dict_for_saving(model), str(tmp), metadata={"format": "pt"})


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model``; tied weights may be absent from the file."""
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    really_missing = [k for k in missing if not _is_tied_copy(own, k, state)]
    if really_missing or unexpected:
        raise RunError(
            f"{path}: weights do not fit the model "
            f"(missing: {really_missing[:5]}, unexpected: {unexpected[:5]}); is the config.json from the same run?"
        )


def _is_tied_copy(own: dict[str, torch.Tensor], key: str, saved: dict[str, torch.Tensor]) -> bool:
    t = own[key]
    return any(k in saved and own[k].data_ptr() == t.data_ptr() for k in own if k != key)


def save_trainer_state(state: dict[str, Any], path: Path) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_trainer_state(path: Path) -> dict[str, Any]:
    # weights_only: loading a run never executes code from the file
    return torch.load(path, map_location="cpu", weights_only=True)


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The parsed config.json of a run, or RunError saying why ``run_dir`` is not a run."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunError(f"run directory '{run_dir}' does not exist")
    if not run_dir.is_dir():
        raise RunError(f"'{run_dir}' is a file, not a run directory")
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.is_file():
        raise RunError(f"'{run_dir}' is not a proselab run directory (no {CONFIG_FILE}); train one with `proselab train`")
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or "model" not in data:
        raise RunError(f"{cfg_path}: not a proselab run config (no 'model' section)")
    for name in (WEIGHTS_FILE, TOKENIZER_FILE):
        if not (run_dir / name).is_file():
            raise RunError(f"'{run_dir}' is incomplete: {name} is missing")
    return data


def load_run_config(path: str | Path):
    """The Config of a run directory or a Hugging Face GPT-2 checkpoint, without loading weights."""
    from .config import config_from_dict
    from .hf import hf_config, is_hf_checkpoint

    path = Path(path)
    if is_hf_checkpoint(path):
        return hf_config(path)
    data = read_run_config(path)
    try:
        return config_from_dict(data)
    except ValueError as e:
        raise RunError(f"{path / CONFIG_FILE}: {e}") from None


ARCHITECTURE = ("family", "vocab_size", "n_layer", "n_head", "n_embd", "bias", "cell", "hidden_size", "num_layers",
                "tie_weights", "arch", "attention", "bidirectional", "input_feeding", "share_embeddings",
                "src_vocab_size", "bos_id")


# Fine-tuning starts from weights that already work: a scratch learning rate and warmup would
# wreck them. These replace the defaults (not values set in a file or on the command line).
FINE_TUNE_DEFAULTS = {"train.lr": 1e-4, "train.min_lr": 1e-5, "train.warmup_iters": 20}
LORA_DEFAULTS = {"train.lr": 5e-4, "train.min_lr": 5e-5, "train.warmup_iters": 20}  # adapters start at zero


def fine_tune_config(cfg):
    """Fine-tuning: the architecture and tokenizer of ``cfg`` come from ``train.init_from``.

    The checkpoint fixes every architecture field; ``model.dropout`` stays the config's, and a
    GPT's ``model.block_size`` may be smaller than the checkpoint's (its position table is then
    cropped, as nanoGPT does). The learning rate, its floor and the warmup take fine-tuning
    defaults (FINE_TUNE_DEFAULTS, LORA_DEFAULTS) unless the config sets them.
    """
    from .config import TrainConfig, explicit_keys

    src = Path(cfg.train.init_from).expanduser()
    if not src.is_dir():
        raise RunError(f"train.init_from must be scratch, resume, or a run / Hugging Face checkpoint "
                       f"directory; '{cfg.train.init_from}' is none of these")
    src_cfg = load_run_config(src)
    for name in ARCHITECTURE:
        setattr(cfg.model, name, getattr(src_cfg.model, name))
    if cfg.model.family == "gpt":
        cfg.model.block_size = min(cfg.model.block_size, src_cfg.model.block_size)
    cfg.data.tokenizer = str(src)  # a run's tokenizer.json, or the checkpoint's tokenizer files
    if cfg.model.family == "seq2seq":
        cfg.data.joint_vocab = src_cfg.data.joint_vocab  # and a separate source tokenizer comes along
    defaults, explicit = TrainConfig(), explicit_keys(cfg)
    for key, value in (LORA_DEFAULTS if cfg.train.lora_rank else FINE_TUNE_DEFAULTS).items():
        name = key.split(".")[1]
        if key not in explicit and getattr(cfg.train, name) == getattr(defaults, name):
            setattr(cfg.train, name, value)
    return cfg.validate()


def load_init_weights(model: torch.nn.Module, source: str | Path) -> None:
    """Copy the weights of ``source`` (a run or a HF checkpoint) into ``model``.

    A GPT's position table is cropped to the model's block_size. When the model's vocabulary
    is larger (special tokens were added), the embedding and head rows of the new tokens start
    at the mean of the old rows, which keeps their logits ordinary at first (as transformers'
    ``resize_token_embeddings`` does).
    """
    src_model, _, _ = load_run(Path(source).expanduser())
    state, own = src_model.state_dict(), model.state_dict()
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
    model.load_state_dict(state)


def load_src_tokenizer(run_dir: str | Path):
    """A seq2seq run's source tokenizer, or None when source and target share the run's tokenizer."""
    from .tokenizers import load_tokenizer

    path = Path(run_dir) / SRC_TOKENIZER_FILE
    return load_tokenizer(path) if path.is_file() else None


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", weights: str = WEIGHTS_FILE):
    """Load a run's model (in eval mode), tokenizer and Config.

    Args:
        run_dir: a run directory written by ``proselab train``, or a Hugging Face GPT-2
            checkpoint directory (see ``proselab.hf``).
        device: where to put the model.
        weights: ``model.safetensors`` (best) or ``last.safetensors`` (latest).

    Returns:
        (model, tokenizer, config)
    """
    from .hf import is_hf_checkpoint, load_hf_gpt2
    from .models import build_model
    from .tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    if is_hf_checkpoint(run_dir):
        return load_hf_gpt2(run_dir, device)
    cfg = load_run_config(run_dir)
    tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    model = build_model(cfg.model)
    if cfg.train.lora_rank:  # the file holds base weights and adapters: rebuild, load, then merge
        from .models.lora import apply_lora, merge_lora

        apply_lora(model, cfg.train.lora_rank, cfg.train.lora_alpha, cfg.train.lora_targets, cfg.train.lora_dropout)
        load_weights(model, run_dir / weights)
        merge_lora(model)
    else:
        load_weights(model, run_dir / weights)
    return model.to(device).eval(), tokenizer, cfg
