"""Hugging Face checkpoint layouts: read them as proselab models, write proselab runs as them.

One file per architecture (``gpt2.py``, ``llama.py``, and the encoder-decoders ``marian.py``, ``bart.py``,
``t5.py`` over ``encdec.py``) maps its config and weights; ``common.py`` reads weights and
generation configs. This module tells a Hugging Face directory from a proselab
run and dispatches on ``model_type``; ``runs.py`` calls it wherever a run is read or exported.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from ..chat import chat_stop_ids, is_jinja
from ..checkpoint import RunError
from ..config import Config, apply_dict
from ..decoding.stopping import eos_ids_for
from ..tokenizers import Tokenizer
from ..tokenizers import load_tokenizer
from . import bart, encdec, gpt2, llama, marian, t5
from .common import apply_generation_config, read_chat_template, read_state_dict

ARCHITECTURES = {"gpt2": gpt2, "llama": llama, "qwen2": llama, "qwen3": llama, "mistral": llama, "phi3": llama,
                 "gemma": llama, "marian": marian, "bart": bart,
                 "t5": t5}  # model_type -> its module (Qwen2, Qwen3, Mistral, Phi-3, Gemma: Llama's layout, and a part)
SEQ2SEQ_EXPORTS = {"marian": marian, "bart": bart, "t5": t5}  # a seq2seq run's model.hf_type -> its layout
EXPORTS = {"gpt": gpt2}  # model family -> the module that writes it (seq2seq: by model.hf_type; Llama style: llama)


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
                       "GPT-2, Llama, Qwen2, Qwen3, Mistral, Phi-3, Gemma, Marian, BART and T5 checkpoints (model_type "
                       "gpt2, llama, qwen2, qwen3, mistral, phi3, gemma, marian, bart, t5)")
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
    cfg.data.joint_vocab = getattr(arch, "JOINT_VOCAB", True)  # False: a source tokenizer of its own (Marian)
    template = read_chat_template(d) if cfg.model.family == "gpt" else None
    if template is not None:  # a chat model's own layout of conversations (chat.py renders it)
        cfg.data.chat_template = template
    gen_path = d / "generation_config.json"
    # without one, transformers reads an encoder-decoder's generation settings from config.json
    gen = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.is_file() else None
    if gen is None and cfg.model.family == "seq2seq":
        gen, gen_path = hf, d / "config.json"
    if gen is not None:
        try:
            apply_generation_config(cfg, gen)
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
    if is_jinja(cfg.data.chat_template):  # a reply also ends at the template's end-of-turn token
        g = cfg.generation
        own = eos_ids_for(g.eos_token_id, None)  # the generation config's own, first
        g.eos_token_id = list(dict.fromkeys([*own, *chat_stop_ids(tokenizer, cfg.data.chat_template)]))
    return model.to(device).eval(), tokenizer, cfg


def load_hf_tokenizers(path: str | Path) -> tuple[Tokenizer, Tokenizer | None]:
    """A Hugging Face checkpoint's tokenizers: (target, source or None when the sides share one).
    (Not named ``hf_tokenizers``: importing the submodule of that name would replace it.)"""
    d = Path(path)
    hf, arch = _read(d)
    if hasattr(arch, "load_model"):  # an encoder-decoder: its tokenizer files (Marian: one per side)
        return encdec.tokenizers(d, hf["model_type"])
    return load_tokenizer(d), None


def load_hf_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Config]:
    """An encoder-decoder checkpoint's model (in eval mode) and Config, without its tokenizers
    (to decode token ids)."""
    d = Path(path)
    _, arch = _read(d)
    if not hasattr(arch, "load_model"):
        raise RunError(f"'{d}' is not an encoder-decoder checkpoint; load it with load_hf")
    cfg = hf_config(d)
    return arch.load_model(cfg, read_state_dict(d), d).to(device).eval(), cfg


def export_hf(model: torch.nn.Module, tokenizer: Tokenizer, cfg: Config, out: Path, run_dir: Path,
              src_tokenizer: Tokenizer | None = None) -> None:
    """Write a loaded run in its architecture's Hugging Face layout (config, weights, generation
    config, tokenizer files) into ``out``, which must be new or empty; ``src_tokenizer`` is a
    seq2seq run's separate source tokenizer."""
    m = cfg.model
    seq2seq = m.family == "seq2seq" and m.hf_type in SEQ2SEQ_EXPORTS and not m.labels
    if m.family not in EXPORTS and not seq2seq:
        raise RunError(f"'{run_dir}' is a {m.family} run; Hugging Face layouts exist for gpt runs (GPT-2) and for "
                       "seq2seq runs fine-tuned from a Marian, BART or T5 checkpoint")
    if m.family == "gpt":  # before anything is written
        (llama if llama.is_llama_style(m) else gpt2).check_exportable(m, run_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"'{out}' exists and is not an empty directory; choose a new output directory")
    out.mkdir(parents=True, exist_ok=True)
    if seq2seq:
        SEQ2SEQ_EXPORTS[m.hf_type].export(model, tokenizer, cfg, out, src_tokenizer)
    elif m.family == "gpt" and llama.is_llama_style(m):
        llama.export(model, tokenizer, cfg, out)
    else:
        EXPORTS[m.family].export(model, tokenizer, cfg, out)
