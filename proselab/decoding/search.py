"""The sampling loop over the Decoder protocol (greedy = argmax of the processed logits)."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ..config import GenerationConfig
from ..models.protocol import Decoder
from .processors import apply_processors, build_processors


def sample_tokens(
    model: Decoder,
    idx: torch.Tensor,
    cfg: GenerationConfig,
    generator: torch.Generator | None = None,
    suppress_ids: Sequence[int] = (),
) -> Iterator[torch.Tensor]:
    """Yield the next token for every row, one step at a time: (B,) int64 tensors.

    Args:
        model: anything implementing ``start``/``step``/``reorder``.
        idx: (B, T) prompt token ids, already repeated for num_return_sequences.
        cfg: generation settings (do_sample, temperature, top_k, max_new_tokens).
        generator: the random stream for sampling; fixed by ``cfg.seed`` for reproducibility.
        suppress_ids: tokens never to produce (e.g. <unk>).
    """
    procs = build_processors(cfg, suppress_ids)
    if cfg.max_new_tokens == 0:
        return
    logits, state = model.start(idx)
    ids = idx
    for i in range(cfg.max_new_tokens):
        logits = apply_processors(procs, ids, logits.float())
        if cfg.do_sample:
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(idx.device)
        else:
            nxt = logits.argmax(dim=-1)
        yield nxt
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if i + 1 < cfg.max_new_tokens:
            logits, state = model.step(nxt, state)
