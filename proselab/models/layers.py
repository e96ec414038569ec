"""Blocks shared by the Transformer families: the GPT and the seq2seq Transformer.

Parameter names follow GPT-2 (``c_attn``, ``c_proj``, ``c_fc``) so Hugging Face GPT-2 weights
map one-to-one. LayerNorm needs no wrapper: ``nn.LayerNorm(n, bias=False)`` exists since
torch 2.1.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection, optionally causal.

    With ``cache=(k, v)`` (each (B, nh, S, hs), written in place) the new keys and values are
    stored at positions [pos, pos + T) and the queries attend over [0, pos + T): a static KV
    cache, no concatenation per step.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True, causal: bool = True):
        super().__init__()
        assert n_embd % n_head == 0, f"n_embd ({n_embd}) must be divisible by n_head ({n_head})"
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # fused q, k, v: one matmul instead of three
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head = n_head
        self.dropout = dropout
        self.causal = causal

    def forward(self, x: Tensor, cache: tuple[Tensor, Tensor] | None = None, pos: int = 0) -> Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        causal = self.causal
        if cache is not None:
            # SDPA's causal mask is aligned top-left, which is only right when queries and keys
            # start together (a prefill from 0) or there is a single query (which sees everything).
            assert pos == 0 or T == 1, f"cached attention takes a prefill at 0 or one token, got T={T} at pos={pos}"
            cache_k, cache_v = cache
            cache_k[:, :, pos : pos + T] = k
            cache_v[:, :, pos : pos + T] = v
            k = cache_k[:, :, : pos + T].to(q.dtype)  # (B, nh, pos + T, hs)
            v = cache_v[:, :, : pos + T].to(q.dtype)  # (B, nh, pos + T, hs)
            causal = causal and T > 1
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=causal
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """The Transformer feed-forward block: 4x expansion and GELU, as in GPT-2."""

    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        # GPT-2's "gelu_new" is the tanh approximation; the exact erf GELU drifts from its logits
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))
