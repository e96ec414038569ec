"""Run-directory files: their names, safetensors weights, trainer state, atomic writes.

A run directory (see DESIGN.md) holds:

    config.json          the full Config plus the tokenizer kind and format version
    model.safetensors    the best weights by validation loss (what every command reads)
    last.safetensors     the latest weights, which trainer_state.pt belongs to
    tokenizer.json
    src_tokenizer.json   a seq2seq run's source tokenizer, when the sides have separate vocabularies
    trainer_state.pt     optimizer, step, RNG states: exact resume (loaded weights_only)
    metrics.jsonl, loss.png

Every file is written to a temporary name in the same directory and renamed into place, and
a checkpoint's files commit together (see ``save_checkpoint``), so a run killed at any instant
either resumes exactly or is refused in one line. This is the leaf of run handling:
``interop/`` maps Hugging Face layouts onto it, and ``runs.py`` loads runs.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .atomic import atomic_path, atomic_write_bytes, atomic_write_text, fsync_dir, stale_temporaries
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


def _weights_checkpoint_id(path: Path) -> str | None:
    """The id of the checkpoint a weights file was saved by (None: saved without one); a file
    that is not readable safetensors is a RunError."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("checkpoint")
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError, OverflowError) as e:
        raise RunError(f"{path}: not readable safetensors weights ({_reason(e)}); the file is truncated or corrupt, "
                       "e.g. by a crash while it was copied") from None


def _pending_id(path: Path) -> str | None:
    """The checkpoint id of a pending file; None when it is missing or incomplete."""
    try:
        return _weights_checkpoint_id(path) if path.is_file() else None
    except RunError:
        return None


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
    if not cfg_path.is_file() and _holds_run_files(run_dir):
        raise _no_checkpoint_yet(run_dir)
    if not cfg_path.is_file():
        raise RunError(f"'{run_dir}' is not a proselab run directory (no {CONFIG_FILE}); train one with `proselab train`")
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or "model" not in data:
        raise RunError(f"{cfg_path}: not a proselab run config (no 'model' section)")
    if not (run_dir / WEIGHTS_FILE).is_file():
        complete_interrupted_save(run_dir)
    if not holds_checkpoint(run_dir):
        raise _no_checkpoint_yet(run_dir)
    for name in (WEIGHTS_FILE, TOKENIZER_FILE):
        if not (run_dir / name).is_file():
            raise RunError(f"'{run_dir}' is incomplete: {name} is missing")
    return data


def _no_checkpoint_yet(run_dir: Path) -> RunError:
    return RunError(f"'{run_dir}' holds no checkpoint yet: its training stopped (or is still running) before the "
                    "first save; run the same `proselab train` command again to start it afresh")


def load_src_tokenizer(run_dir: str | Path) -> Tokenizer | None:
    """A seq2seq run's source tokenizer, or None when source and target share the run's tokenizer."""
    path = Path(run_dir) / SRC_TOKENIZER_FILE
    return load_tokenizer(path) if path.is_file() else None


PENDING_DIR = ".pending"  # a save's weights before it commits (and safetensors' own temporaries)


def _pending(path: Path) -> Path:
    """Where a checkpoint's file waits, complete, for the checkpoint to commit."""
    return path.parent / PENDING_DIR / path.name


def save_checkpoint(run_dir: Path, config: dict[str, Any], tokenizers: dict[str, Tokenizer],
                    model: torch.nn.Module, state: dict[str, Any], best: bool,
                    kept: torch.nn.Module | None = None) -> None:
    """Write a training checkpoint: config.json, the tokenizer files (once), last.safetensors with
    the trainer state that belongs to it, and model.safetensors when ``best`` (or when missing).

    The checkpoint commits in one rename. Its weights are written first, complete and synced, in
    the run's ``.pending/`` directory, tagged with a new checkpoint id; then trainer_state.pt,
    naming that id and those files, atomically replaces the previous one: the commit; then the
    pending files are renamed into place. A process killed before the
    commit leaves the previous checkpoint whole; killed after it, the next ``train`` or
    ``--resume`` finishes the renames (``settle_checkpoint``), and so does loading the run.

    Args:
        config: the run's config as a dict, with the format version and the tokenizer kind.
        tokenizers: file name -> tokenizer, e.g. ``{"tokenizer.json": tok}``.
        state: the trainer state (optimizer, step, RNG states, ...), saved with ``torch.save``.
        kept: the weights model.safetensors gets, when they are not ``model``'s (the average
            of ``train.ema_decay``); last.safetensors always holds ``model``'s, which resume.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG_FILE, config)
    for name, tokenizer in tokenizers.items():
        if not (run_dir / name).exists():
            tokenizer.save(run_dir / name)
    ident = uuid.uuid4().hex
    names = [LAST_WEIGHTS_FILE] + ([WEIGHTS_FILE] if best or not (run_dir / WEIGHTS_FILE).exists() else [])
    weights = {LAST_WEIGHTS_FILE: _state_dict_for_saving(model)}
    weights[WEIGHTS_FILE] = weights[LAST_WEIGHTS_FILE] if kept is None else _state_dict_for_saving(kept)
    (run_dir / PENDING_DIR).mkdir(exist_ok=True)
    for name in names:
        pending = _pending(run_dir / name)
        save_file(weights[name], str(pending), metadata={"format": "pt", "checkpoint": ident, "step": str(state["step"])})
        _fsync_file(pending)
    fsync_dir(run_dir / PENDING_DIR)  # the pending files' names reach the disk before the commit can
    save_trainer_state({**state, "checkpoint": {"id": ident, "files": names}}, run_dir / TRAINER_STATE_FILE)
    _finish_renames(run_dir, ident, names)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish_renames(run_dir: Path, ident: str, names: list[str], tidy: bool = True) -> None:
    """Move a committed checkpoint's pending files into place (those another process has moved
    already are skipped); ``tidy``: the writer's call, which also removes the emptied directory."""
    for name in names:
        pending = _pending(run_dir / name)
        if _pending_id(pending) == ident:
            try:
                os.replace(pending, run_dir / name)
            except FileNotFoundError:  # a reader of the run finished this rename first
                pass
    fsync_dir(run_dir)
    if tidy:
        try:
            (run_dir / PENDING_DIR).rmdir()
        except OSError:  # gone already
            pass


def _committed(state: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The (id, files) of the checkpoint a trainer state commits; None for runs saved before ids."""
    info = state.get("checkpoint")
    if isinstance(info, dict) and isinstance(info.get("id"), str) and isinstance(info.get("files"), list):
        return info["id"], [n for n in info["files"] if n in (LAST_WEIGHTS_FILE, WEIGHTS_FILE)]
    return None


def settle_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """Before training writes into ``run_dir`` again: finish the renames of a checkpoint whose
    save was killed after its commit, delete the files of a save killed before it and stale
    temporaries; then check that last.safetensors belongs to trainer_state.pt. Returns the
    trainer state (None when the run has none yet); a mismatch is a RunError."""
    state_path = run_dir / TRAINER_STATE_FILE
    state = load_trainer_state(state_path) if state_path.is_file() else None
    committed = _committed(state) if state is not None else None
    if committed:
        _finish_renames(run_dir, *committed)
    remove_uncommitted(run_dir)
    if committed:
        found = _weights_checkpoint_id(run_dir / LAST_WEIGHTS_FILE)
        if found != committed[0]:
            raise RunError(
                f"{run_dir / LAST_WEIGHTS_FILE} does not belong to {TRAINER_STATE_FILE} "
                f"(saved at step {state['step']}): the files are from different checkpoints, so resuming would mix "
                "them; start again with --train.overwrite=true, or fine-tune from the run's best weights with "
                "--train.init_from=RUN")
    return state


def complete_interrupted_save(run_dir: Path) -> None:
    """For a reader of a run whose model.safetensors is missing: if a committed checkpoint's
    files still wait under their pending names (the save was killed after its commit), move them
    into place. Never deletes anything; a run it cannot complete is left as it is."""
    state_path = run_dir / TRAINER_STATE_FILE
    if not _pending(run_dir / WEIGHTS_FILE).is_file() or not state_path.is_file():
        return
    try:
        state = load_trainer_state(state_path)
        committed = _committed(state)
        if committed:
            _finish_renames(run_dir, *committed, tidy=False)  # a training may be about to write there
    except (RunError, OSError):
        return


def remove_uncommitted(run_dir: Path) -> None:
    """Delete what saves killed before their commit left: the pending directory (its files were
    never committed, or ``settle_checkpoint`` has moved them already) and stale temporaries."""
    shutil.rmtree(run_dir / PENDING_DIR, ignore_errors=True)
    for tmp in stale_temporaries(run_dir, RUN_FILES):
        tmp.unlink(missing_ok=True)


def remove_run(run_dir: Path) -> None:
    """Delete a run's files from ``run_dir`` (what starting it afresh does), and nothing else."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    remove_uncommitted(run_dir)


def _holds_run_files(run_dir: Path) -> bool:
    return (run_dir / PENDING_DIR).exists() or any((run_dir / n).exists() for n in RUN_FILES) \
        or bool(stale_temporaries(run_dir, RUN_FILES))


def holds_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run with at least one committed checkpoint (or its weights):
    a directory whose training was killed before its first save holds nothing to keep."""
    return any((run_dir / name).exists() for name in (TRAINER_STATE_FILE, WEIGHTS_FILE))


def _step_of(line: str) -> float:
    """The step a metrics line was logged at; inf for what is not a record, and for the final
    evaluation's record (a resumed run that finishes logs it again)."""
    try:
        record = json.loads(line)
        step = record["step"]
    except (json.JSONDecodeError, KeyError, TypeError, IndexError):
        return math.inf
    if "final_val_loss" in record or not isinstance(step, (int, float)) or isinstance(step, bool):
        return math.inf
    return step


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop the metrics.jsonl lines logged after ``step`` (a resumed run logs them again), and
    lines that are not records (a torn line of a killed run, bytes appended by accident)."""
    path = run_dir / METRICS_FILE
    if path.exists():
        text = path.read_bytes().decode("utf-8", errors="replace")
        keep = [ln for ln in text.splitlines() if _step_of(ln) <= step]
        atomic_write_text(path, "".join(ln + "\n" for ln in keep))
