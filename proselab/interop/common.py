"""What every Hugging Face layout shares: reading its weights, and its generation_config.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..checkpoint import RunError
from ..config import Config, GenerationConfig

GENERATION_FIELDS = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "min_p", "typical_p",
                     "repetition_penalty", "no_repeat_ngram_size", "num_beams", "length_penalty")


def read_state_dict(d: Path) -> dict[str, torch.Tensor]:
    """The weights of a Hugging Face directory: safetensors (one file or shards) or pytorch_model.bin."""
    if (d / "model.safetensors").is_file():
        return load_file(str(d / "model.safetensors"))
    if (d / "pytorch_model.bin").is_file():
        # weights_only: a pickle from the internet must not run code
        return torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
    if (d / "model.safetensors.index.json").is_file():
        index = json.loads((d / "model.safetensors.index.json").read_text(encoding="utf-8"))
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(str(d / shard)))
        return state
    raise RunError(f"'{d}' has no weights: expected model.safetensors or pytorch_model.bin")


def apply_generation_config(cfg: Config, hf_gen: dict[str, Any]) -> None:
    """Take a generation_config.json's settings as the run's generation defaults."""
    for name in GENERATION_FIELDS:
        if hf_gen.get(name) is not None:
            setattr(cfg.generation, name, hf_gen[name])
    if isinstance(hf_gen.get("eos_token_id"), list):  # several end tokens (a chat model's end of turn)
        cfg.generation.eos_token_id = [int(i) for i in hf_gen["eos_token_id"]]


def generation_config(g: GenerationConfig, bos: int | None, eos: int | list[int] | None) -> dict[str, Any]:
    """A generation_config.json for a run's generation defaults (None values left out)."""
    gen = {name: getattr(g, name) for name in GENERATION_FIELDS}
    gen.update({"bos_token_id": bos, "eos_token_id": eos, "top_k": g.top_k or None})
    return {k: v for k, v in gen.items() if v is not None}
