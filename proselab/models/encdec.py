"""The parts TransformerSeq2Seq is configured from: attention (with a KV cache, an additive
position bias and optional scaling), the feed-forward block (ReLU, GELU, SiLU, gated), the
norms (LayerNorm, RMSNorm) and the position schemes (sinusoidal, learned, T5's relative buckets).

Each option exists to compute what a pretrained family computes: Marian (post-LN, sinusoidal,
SiLU), BART (post-LN, learned positions, a layernorm on the embeddings, exact GELU) and T5
(pre-RMSNorm, relative position buckets, unscaled attention, ReLU or gated GELU, no biases).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..config import ModelConfig
from .layers import gelu_tanh
from .prepack import fused

ACTIVATIONS = {"gelu_tanh": gelu_tanh, "gelu": F.gelu, "relu": F.relu, "silu": F.silu}
LEARNED_OFFSET = 2  # BART's position table starts at row 2 (fairseq kept rows for padding)


def sinusoids(positions: Tensor, dim: int) -> Tensor:
    """Sinusoidal position encodings (T,) -> (T, dim) (Vaswani et al. 2017, sin and cos halves,
    the layout Marian uses too)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / max(half, 1))  # (half,)
    angles = positions[..., None].float() * freq  # (..., half)
    pe = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (..., 2 * half)
    return F.pad(pe, (0, dim - 2 * half))


def make_norm(cfg: ModelConfig) -> nn.Module:
    """A LayerNorm or (T5's) RMSNorm of width n_embd."""
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)


def ffn_width(cfg: ModelConfig) -> int:
    return cfg.ffn_dim or 4 * cfg.n_embd


class FeedForward(nn.Module):
    """Position-wise feed-forward: c_proj(act(c_fc(x))), or with ``gated_ffn`` (T5 v1.1, Shazeer
    2020) c_proj(act(c_gate(x)) * c_fc(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C, H = cfg.n_embd, ffn_width(cfg)
        self.c_fc = nn.Linear(C, H, bias=cfg.bias)
        self.c_gate = nn.Linear(C, H, bias=cfg.bias) if cfg.gated_ffn else None
        self.c_proj = nn.Linear(H, C, bias=cfg.bias)
        self.activation, self.act = cfg.activation, ACTIVATIONS[cfg.activation]
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.c_gate is not None:
            h = self._activated(self.c_gate, x) * self.c_fc(x)
        else:
            h = self._activated(self.c_fc, x)
        return self.dropout(self.c_proj(h))

    def _activated(self, linear: nn.Module, x: Tensor) -> Tensor:
        y = fused(linear, x, self.activation)  # the activation inside the matmul when decoding on CPU
        return self.act(linear(x)) if y is None else y


def relative_buckets(relative: Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> Tensor:
    """T5's relative position buckets (Raffel et al. 2020): ``relative`` = key - query positions
    -> bucket ids. Half the buckets are exact small distances, the rest grow logarithmically up
    to ``max_distance``; a bidirectional (encoder) scheme gives each direction half the buckets,
    a causal one uses them all for the past."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = (-relative).clamp(min=0)  # the future is masked anyway
    exact = num_buckets // 2
    far = exact + (torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                   * (num_buckets - exact)).long()
    far = far.clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < exact, distance, far)


class RelativeBias(nn.Module):
    """A learned bias per head and relative-position bucket, added to the attention scores of
    every layer (T5 learns it in the first layer and shares it)."""

    def __init__(self, cfg: ModelConfig, bidirectional: bool):
        super().__init__()
        self.bias = nn.Embedding(cfg.rel_buckets, cfg.n_head)
        self.bidirectional = bidirectional
        self.num_buckets, self.max_distance = cfg.rel_buckets, cfg.rel_max_distance

    def forward(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Positions of queries (T,) and keys (S,) -> the bias (1, nh, T, S)."""
        relative = keys[None, :] - queries[:, None]  # (T, S)
        b = relative_buckets(relative, self.bidirectional, self.num_buckets, self.max_distance)
        return self.bias(b).permute(2, 0, 1)[None]  # (1, nh, T, S)


class Attention(nn.Module):
    """Multi-head attention, self (fused q, k, v: ``c_attn``) or over a memory (``c_q`` and fused
    ``c_kv``), with an optional additive bias (positions, masks) and optional 1/sqrt(hs) scaling
    (T5 leaves it out: its initialisation absorbs it)."""

    def __init__(self, cfg: ModelConfig, cross: bool = False):
        super().__init__()
        C = cfg.n_embd
        assert C % cfg.n_head == 0, f"n_embd ({C}) must be divisible by n_head ({cfg.n_head})"
        if cross:
            self.c_q = nn.Linear(C, C, bias=cfg.bias)
            self.c_kv = nn.Linear(C, 2 * C, bias=cfg.bias)  # keys and values in one matmul
        else:
            self.c_attn = nn.Linear(C, 3 * C, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(C, C, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.scale = None if cfg.attn_scale else 1.0  # None = SDPA's 1/sqrt(hs)

    def _heads(self, t: Tensor) -> Tensor:
        B, T, C = t.shape
        return t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

    def memory(self, mem: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder output (B, S, C) -> keys and values, each (B, nh, S, hs)."""
        k, v = self.c_kv(mem).split(mem.size(-1), dim=2)
        return self._heads(k), self._heads(v)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: tuple[Tensor, Tensor] | None = None,
                pos: int = 0, kv: tuple[Tensor, Tensor] | None = None, need_weights: bool = False,
                ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, C) -> (B, T, C), and the weights (B, nh, T, S) when asked for.

        Args:
            mask: (B or 1, 1 or nh, T, S) bool (True = may attend) or float (added to the scores).
            cache: self-attention's (k, v) buffers (B, nh, capacity, hs): this call's keys and
                values are written at [pos, pos + T) and the queries attend over [0, pos + T).
            kv: cross-attention's memory keys and values (``memory``).
        """
        B, T, C = x.shape
        if kv is None:
            q, k, v = (self._heads(t) for t in self.c_attn(x).split(C, dim=2))
            if cache is not None:
                cache[0][:, :, pos : pos + T], cache[1][:, :, pos : pos + T] = k, v
                k, v = cache[0][:, :, : pos + T].to(q.dtype), cache[1][:, :, : pos + T].to(q.dtype)  # (B, nh, S, hs)
        else:
            q, (k, v) = self._heads(self.c_q(x)), kv
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights or (q.device.type == "cpu" and (q.requires_grad or (T == 1 and cache is not None
                                                                               and q.dtype == torch.float32))):
            # written out: the weights are wanted, or training on CPU, where SDPA's backward is slow, or
            # one float32 query per row over a cache on CPU, where SDPA's kernel took 1.16-1.37x as long
            # (BART-base's decoder at 80 rows, 8-31 cached positions)
            att = q @ k.transpose(-2, -1) * (self.scale or 1.0 / math.sqrt(q.size(-1)))  # (B, nh, T, S)
            if mask is not None:
                att = att.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else att + mask
            weights = att.softmax(dim=-1)
            y = (F.dropout(weights, dropout) if dropout > 0 else weights) @ v  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=self.scale)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y)), weights


def causal_mask(T: int, S: int, device: torch.device) -> Tensor:
    """(T, S) bool, True where query t (the last T of S positions) may see key s."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)
