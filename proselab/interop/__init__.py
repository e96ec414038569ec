"""Hugging Face checkpoint layouts: read them as proselab models, write proselab runs as them.

One file per architecture (today ``gpt2.py``) maps its config and weights; ``common.py`` reads
weights and generation configs. This module tells a Hugging Face directory from a proselab
run and dispatches on ``model_type``; ``runs.py`` calls it wherever a run is read or exported.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import RunError
from ..config import Config, apply_dict
from ..tokenizers import Tokenizer
from . import gpt2
from .common import apply_generation_config, read_state_dict

ARCHITECTURES = {"gpt2": gpt2}  # model_type -> the module that maps it (model_config, load, export)
EXPORTS = {"gpt": gpt2}  # model family -> the module that writes it


def is_hf_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a directory with a Hugging Face config.json (not a proselab run)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "model" not in data and ("model_type" in data or "architectures" in data)


def _read(d: Path) -> tuple[dict[str, Any], Any]:
    """A checkpoint's config.json and the module of its architecture."""
    hf = json.loads((d / "config.json").read_text(encoding="utf-8"))
    kind = hf.get("model_type")
    if kind not in ARCHITECTURES:
        archs = ", ".join(hf.get("architectures") or []) or "unknown"
        raise RunError(f"{d / 'config.json'}: model_type '{kind}' ({archs}) is not supported; proselab imports "
                       "GPT-2 checkpoints (model_type gpt2)")
    return hf, ARCHITECTURES[kind]


def hf_config(path: str | Path) -> Config:
    """The proselab Config of a Hugging Face checkpoint directory (no weights are read)."""
    d = Path(path)
    hf, arch = _read(d)
    cfg = Config()
    try:  # through the config's coercion and checks: a size written "big", or too large for this machine, is refused
        apply_dict(cfg, {"model": dataclasses.asdict(arch.model_config(hf, d / "config.json"))}).validate()
    except RunError:
        raise
    except ValueError as e:  # a ConfigError, or a value float() cannot read
        raise RunError(f"{d / 'config.json'}: {e}") from None
    cfg.data.tokenizer = str(d)
    gen_path = d / "generation_config.json"
    if gen_path.is_file():
        try:
            apply_generation_config(cfg, json.loads(gen_path.read_text(encoding="utf-8")))
            cfg.validate()
        except ValueError as e:
            raise RunError(f"{gen_path}: {e}") from None
    return cfg


def load_hf(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Tokenizer, Config]:
    """Load a Hugging Face checkpoint directory.

    Returns:
        (model in eval mode, tokenizer, Config), as ``runs.load_run`` returns a run.
    """
    d = Path(path)
    _, arch = _read(d)
    cfg = hf_config(d)
    model, tokenizer = arch.load(d, cfg, read_state_dict(d))
    return model.to(device).eval(), tokenizer, cfg


def export_hf(model: torch.nn.Module, tokenizer: Tokenizer, cfg: Config, out: Path, run_dir: Path) -> None:
    """Write a loaded run in its architecture's Hugging Face layout (config, weights, generation
    config, tokenizer files) into ``out``, which must be new or empty."""
    if cfg.model.family not in EXPORTS:
        raise RunError(f"'{run_dir}' is a {cfg.model.family} run; only gpt runs (language models and classifiers) "
                       "have a Hugging Face (GPT-2) layout")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"'{out}' exists and is not an empty directory; choose a new output directory")
    out.mkdir(parents=True, exist_ok=True)
    EXPORTS[cfg.model.family].export(model, tokenizer, cfg, out)
