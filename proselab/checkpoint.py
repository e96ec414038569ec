"""Run-directory files: their names, safetensors weights, trainer state, atomic writes.

A run directory (see DESIGN.md) holds:

    config.json          the full Config plus the tokenizer kind and format version
    model.safetensors    the best weights by validation loss (what every command reads)
    last.safetensors     the latest weights, which trainer_state.pt belongs to
    tokenizer.json
    src_tokenizer.json   a seq2seq run's source tokenizer, when the sides have separate vocabularies
    trainer_state.pt     optimizer, step, RNG states: exact resume (loaded weights_only)
    metrics.jsonl, loss.png

Every file is written to a temporary name in the same directory and renamed into place,
so a run killed at any moment keeps its last complete checkpoint. This is the leaf of run
handling: ``interop/`` maps Hugging Face layouts onto it, and ``runs.py`` loads runs.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_path, atomic_write_bytes, atomic_write_text
from .tokenizers import Tokenizer, load_tokenizer

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
    """Load safetensors weights into ``model``; tied weights may be absent from the file. A file
    that is not readable safetensors (truncated, empty, corrupt, not weights at all) or whose
    tensors do not fit the model is a RunError naming it."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError, OverflowError) as e:
        raise RunError(f"{path}: not readable safetensors weights ({_reason(e)}); the file is truncated or corrupt, "
                       "e.g. by a crash while it was copied") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape than the config's model
        raise RunError(f"{path}: weights do not fit the model of config.json ({_reason(e)}); "
                       "are they from the same run?") from None
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


TRAINER_STATE_KEYS = ("optimizer", "step", "best_val_loss", "data_rng", "torch_rng")


def load_trainer_state(path: Path) -> dict[str, Any]:
    """The trainer state a resume continues from, or a RunError saying why it cannot be read.
    weights_only: loading a run never executes code from the file (a pickle that would is refused)."""
    refuse = "resume cannot continue from it: start again with --train.overwrite=true, or fine-tune from the run's " \
             "weights with --train.init_from=RUN"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 (torch.load raises what its unpickler meets: corrupt, hostile, truncated)
        raise RunError(f"{path}: not a readable trainer state ({_reason(e)}); {refuse}") from None
    missing = [k for k in TRAINER_STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise RunError(f"{path}: not a proselab trainer state (no {', '.join(missing)}); {refuse}")
    return state


def _reason(e: BaseException) -> str:
    """An exception's first line, short enough for a one-line error."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


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


def load_src_tokenizer(run_dir: str | Path) -> Tokenizer | None:
    """A seq2seq run's source tokenizer, or None when source and target share the run's tokenizer."""
    path = Path(run_dir) / SRC_TOKENIZER_FILE
    return load_tokenizer(path) if path.is_file() else None


def save_checkpoint(run_dir: Path, config: dict[str, Any], tokenizers: dict[str, Tokenizer],
                    model: torch.nn.Module, state: dict[str, Any], best: bool) -> None:
    """Write a training checkpoint: config.json, the tokenizer files (once), last.safetensors with
    the trainer state that belongs to it, and model.safetensors when ``best`` (or when missing).

    Args:
        config: the run's config as a dict, with the format version and the tokenizer kind.
        tokenizers: file name -> tokenizer, e.g. ``{"tokenizer.json": tok}``.
        state: the trainer state (optimizer, step, RNG states, ...), saved with ``torch.save``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG_FILE, config)
    for name, tokenizer in tokenizers.items():
        if not (run_dir / name).exists():
            tokenizer.save(run_dir / name)
    save_weights(model, run_dir / LAST_WEIGHTS_FILE)
    save_trainer_state(state, run_dir / TRAINER_STATE_FILE)
    if best or not (run_dir / WEIGHTS_FILE).exists():
        save_weights(model, run_dir / WEIGHTS_FILE)


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop the metrics.jsonl lines logged after ``step`` (a resumed run logs them again)."""
    path = run_dir / METRICS_FILE
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if _step_of(ln) <= step]
        atomic_write_text(path, "".join(ln + "\n" for ln in keep))
