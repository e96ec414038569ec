"""The Python API behind ``proselab.load``: a loaded run that generates text."""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from pathlib import Path

import torch

from .checkpoint import load_run
from .config import Config, GenerationConfig, validate_generation
from .decoding import generate as generate_ids
from .tokenizers import Tokenizer


class Generator:
    """A trained model with its tokenizer and generation defaults (from the run's config.json)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, config: Config, run_dir: Path | None = None):
        self.model, self.tokenizer, self.config, self.run_dir = model, tokenizer, config, run_dir

    @property
    def suppress_ids(self) -> list[int]:
        """<unk> is never generated: it stands for text the model cannot spell out."""
        return [self.tokenizer.unk_id] if self.tokenizer.unk_id is not None else []

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generation_config(self, **overrides) -> GenerationConfig:
        """The run's generation defaults with ``overrides`` applied and validated."""
        names = [f.name for f in dataclasses.fields(GenerationConfig)]
        for key in overrides:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"unknown generation option '{key}'{hint}")
        cfg = dataclasses.replace(self.config.generation, **overrides)
        validate_generation(cfg)
        return cfg

    def encode_prompt(self, prompt: str) -> list[int]:
        if prompt:
            ids = self.tokenizer.encode(prompt)
            if self.tokenizer.count_unknown(ids):
                missing = ", ".join(repr(t) for t in self.tokenizer.unknown_tokens(prompt))
                warnings.warn(f"the prompt has text this model's vocabulary lacks, read as <unk>: {missing}",
                              stacklevel=3)
            return ids
        if self.tokenizer.bos_id is not None:
            return [self.tokenizer.bos_id]
        raise ValueError(
            "this model has no beginning-of-sequence token, so it needs a non-empty prompt "
            "(e.g. prompt='\\n' for a character model)"
        )

    def generate(self, prompt: str | list[str] = "", **overrides) -> str | list[str]:
        """Continue ``prompt`` and return the new text (not the prompt).

        Args:
            prompt: one prompt, or a list of prompts.
            **overrides: GenerationConfig fields, e.g. ``max_new_tokens=100, temperature=0.7,
                top_k=50, do_sample=False, num_return_sequences=3, seed=0``.

        Returns:
            A string for one prompt and one sequence; otherwise a list of strings, grouped by prompt.
        """
        cfg = self.generation_config(**overrides)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        outs: list[str] = []
        for p in prompts:
            idx = torch.tensor([self.encode_prompt(p)], dtype=torch.long, device=self.device)
            new = generate_ids(self.model, idx, cfg, self.suppress_ids)
            outs.extend(self._decode(row.tolist()) for row in new)
        single = isinstance(prompt, str) and cfg.num_return_sequences == 1
        return outs[0] if single else outs

    def _decode(self, ids: list[int]) -> str:
        eos = self.tokenizer.eos_id
        if eos is not None and eos in ids:
            ids = ids[: ids.index(eos)]
        return self.tokenizer.decode(ids)


def load(run_dir: str | Path, device: str = "auto") -> Generator:
    """Load a run directory for generation.

    Args:
        run_dir: a directory written by ``proselab train``.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda[:N]``.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer, cfg = load_run(run_dir, device)
    return Generator(model, tokenizer, cfg, Path(run_dir))
