"""Blocks shared by the model families: attention and MLP for the Transformers, and the loss.

Parameter names follow GPT-2 (``c_attn``, ``c_proj``, ``c_fc``) so Hugging Face GPT-2 weights
map one-to-one. LayerNorm needs no wrapper: ``nn.LayerNorm(n, bias=False)`` exists since
torch 2.1.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


IGNORE_INDEX = -100  # target value left out of the loss (padding, masked prompt tokens)


def lm_loss(logits: Tensor, targets: Tensor | None, label_smoothing: float = 0.0) -> Tensor | None:
    """Mean next-token cross-entropy over the targets that are not IGNORE_INDEX.

    Args:
        logits: (..., V) scores.
        targets: (...) token ids, or None (then the loss is None).
        label_smoothing: passed to ``F.cross_entropy``.

    Returns:
        A float32 scalar, also under bf16 autocast: a bf16 log-softmax over a large vocabulary
        loses the small probabilities.
    """
    if targets is None:
        return None
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)


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

    def forward(self, x: Tensor, cache: tuple[Tensor, Tensor] | None = None, pos: int = 0,
                attn_mask: Tensor | None = None) -> Tensor:
        """x (B, T, C) -> (B, T, C); ``attn_mask`` (B, 1, T, pos + T) bool, True = may attend,
        replaces the causal mask (it must include causality itself)."""
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
        dropout = self.dropout if self.training else 0.0
        if attn_mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)  # (B, nh, T, hs)
        elif q.requires_grad and q.device.type == "cpu":
            y = _explicit_attention(q, k, v, dropout, causal)  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


def _explicit_attention(q: Tensor, k: Tensor, v: Tensor, dropout: float, causal: bool) -> Tensor:
    """softmax(q k^T / sqrt(hs)) v written out, for training on CPU.

    PyTorch's CPU flash-attention backward is slow at small head sizes: on the nanogpt-cpu
    config (T=64, hs=32) it cost 3-5x the explicit form in bf16 and made attention a third of
    the step. Forward-only passes (evaluation, decoding) keep SDPA, which is faster there.
    """
    T, S = q.size(-2), k.size(-2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, nh, T, S)
    if causal:
        future = torch.ones(T, S, dtype=torch.bool, device=q.device).triu(1)  # (T, S), True above the diagonal
        att = att.masked_fill(future, float("-inf"))
    att = att.softmax(dim=-1)
    if dropout > 0:
        att = F.dropout(att, dropout)
    return att @ v  # (B, nh, T, hs)


def gelu_tanh(x: Tensor) -> Tensor:
    """GPT-2's "gelu_new", the tanh approximation (the exact erf GELU drifts from its logits)."""
    if torch.compiler.is_compiling():
        # 0.5 x (1 + tanh(u)) == x sigmoid(2u) with u = sqrt(2/pi) (x + 0.044715 x^3): the same
        # function, but inductor's CPU tanh is slow (the fused GELU forward + backward took twice
        # as long as this form on the nanogpt-cpu config)
        return x * torch.sigmoid(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x))
    return F.gelu(x, approximate="tanh")  # eager: one kernel, faster than five


class MLP(nn.Module):
    """The Transformer feed-forward block: 4x expansion and GELU, as in GPT-2."""

    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(gelu_tanh(self.c_fc(x))))
