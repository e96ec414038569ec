"""One decoding engine for every model family, written over the Decoder protocol only."""

from __future__ import annotations

from typing import Sequence

import torch

from ..config import GenerationConfig, validate_generation
from ..models.protocol import Decoder
from .search import sample_tokens

__all__ = ["generate", "stream", "GenerationConfig"]


def _prepare(model: Decoder, idx: torch.Tensor, cfg: GenerationConfig) -> tuple[torch.Tensor, torch.Generator]:
    validate_generation(cfg)
    assert idx.dim() == 2 and idx.size(1) >= 1, f"prompt ids must be (B, T) with T >= 1, got {tuple(idx.shape)}"
    if cfg.num_return_sequences > 1:
        idx = idx.repeat_interleave(cfg.num_return_sequences, dim=0)  # (B * n, T)
    gen = torch.Generator()
    if cfg.seed is not None:
        gen.manual_seed(cfg.seed)
    else:
        gen.seed()
    return idx, gen


@torch.no_grad()
def generate(
    model: Decoder, idx: torch.Tensor, cfg: GenerationConfig | None = None, suppress_ids: Sequence[int] = ()
) -> torch.Tensor:
    """Generate new tokens after each prompt.

    Args:
        model: a model implementing the Decoder protocol (in eval mode).
        idx: (B, T) prompt token ids.
        cfg: generation settings; defaults to GenerationConfig().
        suppress_ids: token ids never to generate (e.g. the tokenizer's <unk>).

    Returns:
        (B * num_return_sequences, max_new_tokens) new token ids, rows grouped by prompt.
    """
    cfg = cfg or GenerationConfig()
    idx, gen = _prepare(model, idx, cfg)
    out = list(sample_tokens(model, idx, cfg, gen, suppress_ids))
    if not out:
        return idx.new_zeros(idx.size(0), 0)
    return torch.stack(out, dim=1)


@torch.no_grad()
def stream(model: Decoder, idx: torch.Tensor, cfg: GenerationConfig | None = None, suppress_ids: Sequence[int] = ()):
    """Like ``generate`` but yields each step's (B * num_return_sequences,) tokens as they come."""
    cfg = cfg or GenerationConfig()
    idx, gen = _prepare(model, idx, cfg)
    yield from sample_tokens(model, idx, cfg, gen, suppress_ids)
