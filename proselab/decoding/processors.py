"""Logits processors: small ``(ids, logits) -> logits`` callables applied in order.

``ids`` is (B, T) — every token so far — and ``logits`` is (B, V) for the next token. Greedy
decoding is the argmax of the processed logits, so it needs no loop of its own.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..config import GenerationConfig

LogitsProcessor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SuppressTokens:
    """Never produce ``ids`` (e.g. a char model's <unk>, which the training text never holds)."""

    def __init__(self, ids: list[int]):
        self.ids = torch.tensor(sorted(set(ids)), dtype=torch.long)

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        logits[:, self.ids.to(logits.device)] = float("-inf")
        return logits


class Temperature:
    """Divide logits by ``temperature``: < 1 sharpens the distribution, > 1 flattens it."""

    def __init__(self, temperature: float):
        assert temperature > 0, f"temperature must be > 0, got {temperature}"
        self.temperature = temperature

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature


class TopK:
    """Keep the ``k`` most likely tokens (ties at the k-th value are all kept)."""

    def __init__(self, k: int):
        assert k >= 1, f"top_k must be >= 1, got {k}"
        self.k = k

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        k = min(self.k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, float("-inf"))


def build_processors(cfg: GenerationConfig, suppress_ids: Sequence[int] = ()) -> list[LogitsProcessor]:
    """The processors ``cfg`` asks for, in the order they apply."""
    procs: list[LogitsProcessor] = [SuppressTokens(list(suppress_ids))] if suppress_ids else []
    if cfg.do_sample and cfg.temperature != 1.0:
        procs.append(Temperature(cfg.temperature))
    if cfg.do_sample and cfg.top_k > 0:
        procs.append(TopK(cfg.top_k))
    return procs


def apply_processors(procs: list[LogitsProcessor], ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    for p in procs:
        logits = p(ids, logits)
    return logits
