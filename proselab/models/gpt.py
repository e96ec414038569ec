"""GPT: a decoder-only Transformer with GPT-2's architecture and parameter names.

Names match Hugging Face's GPT2LMHeadModel one-to-one (``transformer.h.0.attn.c_attn`` ...);
HF stores c_attn, c_proj and c_fc as Conv1D, so their weights are transposed on import.
Decoding uses a preallocated KV cache (``KVCache``) that travels through ``start``/``step``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from ..config import ModelConfig
from .layers import MLP, SelfAttention, lm_loss


@dataclass
class KVCache:
    """The GPT's decoding state: a static cache over one context window.

    Positions [0, length) of every buffer are valid; the rest is scratch space. A left-padding
    attention mask, when it comes, is one more (B, block_size) buffer beside ``idx``.
    """

    k: Tensor  # (n_layer, B, nh, block_size, hs) keys, written in place at position `length`
    v: Tensor  # (n_layer, B, nh, block_size, hs) values
    idx: Tensor  # (B, block_size) the tokens in the window, kept to re-prefill when it slides
    length: int  # tokens in the window


class Block(nn.Module):
    """A pre-LayerNorm Transformer block (GPT-2 moved the norms to the sublayer inputs)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=cfg.bias)
        self.attn = SelfAttention(cfg.n_embd, cfg.n_head, cfg.dropout, cfg.bias, causal=True)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=cfg.bias)
        self.mlp = MLP(cfg.n_embd, cfg.dropout, cfg.bias)

    def forward(self, x: Tensor, cache: tuple[Tensor, Tensor] | None = None, pos: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2: token + learned position embeddings, pre-LN blocks, a (tied) linear head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        assert cfg.vocab_size > 0 and cfg.block_size > 0, "GPT needs vocab_size and block_size > 0"
        self.config = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                # residual projections scaled by 1/sqrt(2 * n_layer), per the GPT-2 paper: each
                # block adds two of them to the residual stream, so its variance stays bounded
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.tie_weights:
            # one matrix for input and output embeddings (Press & Wolf 2017), as GPT-2 does
            self.lm_head.weight = self.transformer.wte.weight

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Number of parameters, a tied matrix counted once."""
        return sum(p.numel() for p in self.parameters())

    def _trunk(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        pos = 0 if cache is None else cache.length
        positions = torch.arange(pos, pos + idx.size(1), dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if cache is None else (cache.k[i], cache.v[i]), pos)
        return self.transformer.ln_f(x)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits for every position, and the loss when targets are given.

        Args:
            idx: (B, T) token ids, T <= block_size.
            targets: (B, T) next-token ids; -100 marks positions left out of the loss.

        Returns:
            logits (B, T, V) and the mean cross-entropy over non-ignored targets (float32,
            even under bf16 autocast), or None without targets.
        """
        T = idx.size(1)
        assert T <= self.config.block_size, f"sequence of {T} tokens exceeds block_size {self.config.block_size}"
        logits = self.lm_head(self._trunk(idx))  # (B, T, V)
        return logits, lm_loss(logits, targets)

    def _cache_dtype(self, device: torch.device) -> torch.dtype:
        # store k, v in the dtype c_attn produces them in, so autocast decoding keeps bf16 caches
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.lm_head.weight.dtype

    @torch.no_grad()
    def start(self, idx: Tensor) -> tuple[Tensor, KVCache]:
        """Prefill the KV cache with a prompt.

        Prompts longer than block_size keep their last block_size tokens.

        Args:
            idx: (B, T) prompt token ids, T >= 1.

        Returns:
            logits (B, V) for the token after the prompt, and the KVCache.
        """
        assert idx.dim() == 2 and idx.size(1) >= 1, f"prompt must be (B, T) with T >= 1, got {tuple(idx.shape)}"
        cfg = self.config
        idx = idx[:, -cfg.block_size :]  # (B, min(T, block_size))
        B, hs = idx.size(0), cfg.n_embd // cfg.n_head
        shape = (cfg.n_layer, B, cfg.n_head, cfg.block_size, hs)
        dtype = self._cache_dtype(idx.device)
        cache = KVCache(
            k=torch.empty(shape, dtype=dtype, device=idx.device),
            v=torch.empty(shape, dtype=dtype, device=idx.device),
            idx=torch.empty(B, cfg.block_size, dtype=torch.long, device=idx.device),
            length=0,
        )
        return self._extend(idx, cache), cache

    def _extend(self, idx: Tensor, cache: KVCache) -> Tensor:
        T = idx.size(1)
        assert cache.length + T <= self.config.block_size, "KV cache overflow: slide the window first"
        x = self._trunk(idx, cache)  # (B, T, C)
        cache.idx[:, cache.length : cache.length + T] = idx
        cache.length += T
        return self.lm_head(x[:, -1])  # (B, V)

    @torch.no_grad()
    def step(self, tokens: Tensor, state: KVCache) -> tuple[Tensor, KVCache]:
        """Append one token per row to the cache (in place) and return the next logits.

        When the window is full, it slides like a context shift: the cache is re-prefilled
        with the most recent block_size // 2 tokens (the new one included), so the model then
        conditions on the latest half-window and generation of any length never overflows.
        The positions restart at 0 after a slide, as they would for a fresh prompt.

        Args:
            tokens: (B,) token ids.
            state: the KVCache from ``start``, ``step`` or ``reorder`` (consumed).

        Returns:
            logits (B, V) and the updated KVCache.
        """
        bs = self.config.block_size
        if state.length < bs:
            return self._extend(tokens[:, None], state), state
        keep = max(1, bs // 2)
        window = torch.cat([state.idx[:, bs - keep + 1 :], tokens[:, None]], dim=1)  # (B, keep)
        state.length = 0  # reuse the buffers: only [0, length) is ever read
        return self._extend(window, state), state

    def reorder(self, state: KVCache, index: Tensor) -> KVCache:
        """Rows ``index`` (B',) of the cache, as a new KVCache (beams, num_return_sequences)."""
        return KVCache(
            k=state.k.index_select(1, index),
            v=state.v.index_select(1, index),
            idx=state.idx.index_select(0, index),
            length=state.length,
        )
