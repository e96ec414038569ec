"""The Python API behind ``proselab.load``: a loaded run that generates text."""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from pathlib import Path
from typing import Iterator

import torch

from .checkpoint import load_run
from .config import Config, GenerationConfig, validate_generation
from .decoding import Delta, Generation
from .decoding import generate as generate_ids
from .decoding import stream as stream_ids
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
        if isinstance(overrides.get("stop"), str):
            overrides["stop"] = [overrides["stop"]]
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
            "the prompt is empty and this model has no beginning-of-sequence token to start from; "
            "give a non-empty prompt "
            "(e.g. prompt='\\n' for a character model)"
        )

    def _prompts(self, prompt: str | list[str]) -> list[list[int]]:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("prompt is an empty list; give at least one prompt")
        return [self.encode_prompt(p) for p in prompts]

    def complete(self, prompt: str | list[str] = "", **overrides) -> list[Generation]:
        """Continue each prompt; the full result of every sequence.

        Args:
            prompt: one prompt, or a list of prompts (batched together, any lengths).
            **overrides: GenerationConfig fields, e.g. ``max_new_tokens=100, top_p=0.9,
                num_beams=4, stop=["\\n\\n"], seed=0``.

        Returns:
            One Generation (text, tokens, finish_reason, score, ...) per sequence, grouped by
            prompt: num_return_sequences per prompt.
        """
        cfg = self.generation_config(**overrides)
        return generate_ids(self.model, self._prompts(prompt), cfg, tokenizer=self.tokenizer,
                            suppress_ids=self.suppress_ids)

    def generate(self, prompt: str | list[str] = "", **overrides) -> str | list[str]:
        """Continue ``prompt`` and return the new text (not the prompt).

        Args:
            prompt: one prompt, or a list of prompts.
            **overrides: GenerationConfig fields (see ``complete``).

        Returns:
            A string for one prompt and one sequence; otherwise a list of strings, grouped by prompt.
        """
        outs = [g.text for g in self.complete(prompt, **overrides)]
        single = isinstance(prompt, str) and len(outs) == 1
        return outs[0] if single else outs

    def stream(self, prompt: str | list[str] = "", **overrides) -> Iterator[Delta]:
        """Like ``complete``, but yield each sequence's new text as it is generated.

        Yields:
            Delta(index, text, tokens, finish_reason, logprobs); the texts of one index add up
            to that sequence's ``complete`` text.
        """
        cfg = self.generation_config(**overrides)
        yield from stream_ids(self.model, self._prompts(prompt), cfg, tokenizer=self.tokenizer,
                              suppress_ids=self.suppress_ids)


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
