"""Blocks shared by the model families: the GPT's attention (with rotary positions and grouped
key/value heads as options), and the loss.

Parameter names follow GPT-2 (``c_attn``, ``c_proj``, ``c_fc``) so Hugging Face GPT-2 weights
map one-to-one. LayerNorm needs no wrapper: ``nn.LayerNorm(n, bias=False)`` exists since
torch 2.1.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..data.batch import IGNORE_INDEX


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


HEAD_CHUNK_ELEMENTS = 1 << 22  # float32 logits converted at a time in head_loss: 16 MB, cache-sized


def head_loss(h: Tensor, weight: Tensor, targets: Tensor, bias: Tensor | None = None,
              label_smoothing: float = 0.0) -> Tensor:
    """``lm_loss(h @ weight.T + bias, targets, label_smoothing)`` for an output head, with less
    memory traffic.

    With a vocabulary as large as GPT-2's, the plain form is dominated by (N, V) tensors: the
    logits, their float32 copy, the log-softmax and its gradient, each hundreds of MB that
    are written, read and page-faulted in every step. This computes the loss and both
    gradients in the forward pass over one (N, V) buffer in the compute dtype, converting rows
    to float32 a cache-sized chunk at a time; the backward pass only scales the stored
    gradients (the approach of Liger Kernel's fused linear cross-entropy). The matmuls and the
    float32 loss are those of the plain form under autocast, so results agree to rounding. A
    bf16 training step of a 4-layer, 256-wide GPT with GPT-2's vocabulary (8 x 128 tokens)
    went from 0.75 to 0.47 s here.

    Args:
        h: (..., C) hidden states.
        weight: (V, C) the head's weight.
        targets: (...) next-token ids; IGNORE_INDEX marks positions left out.
        bias: (V,) added to the logits in float32 (Marian's and BART's final logits bias), or None.
        label_smoothing: as ``F.cross_entropy``'s: (1 - eps) of each target's weight stays on
            it and eps is spread evenly over the vocabulary.

    Returns:
        The mean cross-entropy over non-ignored targets, a float32 scalar.
    """
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    dev = h.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
    # False in evaluation
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, weight, bias))
    return _HeadLoss.apply(h.reshape(-1, h.size(-1)), weight, targets.reshape(-1), bias, label_smoothing,
                           dtype, grad)


class _HeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, targets: Tensor, bias: Tensor | None, eps: float,
                dtype: torch.dtype, grad: bool) -> Tensor:
        with torch.autocast(h.device.type, enabled=False):
            hc, wc = h.to(dtype), weight.to(dtype)
            fbias = None if bias is None else bias.float()  # (V,)
            valid = targets != IGNORE_INDEX  # (N,)
            safe = targets.masked_fill(~valid, 0)  # (N,)
            count = valid.sum()
            buf = hc @ wc.t()  # (N, V) logits, then their gradient, in place
            N, V = buf.shape
            rows = max(1, HEAD_CHUNK_ELEMENTS // V)
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            for s in range(0, N, rows):
                logits = buf[s : s + rows].float()  # (n, V): a view of buf in float32, overwritten below
                if fbias is not None:
                    logits.add_(fbias)
                lse = torch.logsumexp(logits, dim=-1)  # (n,)
                picked = logits.gather(1, safe[s : s + rows, None]).squeeze(1)  # (n,)
                ok = valid[s : s + rows]
                # -log p(target), smoothed: (1 - eps) of it plus eps times the mean of -log p(v) over v
                row_loss = lse - picked if eps == 0.0 else lse - (1.0 - eps) * picked - eps * logits.mean(dim=-1)
                total += (row_loss * ok).sum()
                if grad:  # d loss / d logits = (softmax - smoothed onehot) / count on kept rows
                    probs = logits.sub_(lse[:, None]).exp_()
                    if eps:
                        probs.sub_(eps / V)
                    probs[torch.arange(len(ok), device=h.device), safe[s : s + rows]] -= 1.0 - eps
                    buf[s : s + rows] = probs.mul_((ok / count)[:, None])
            if grad:
                ctx.save_for_backward(buf @ wc if ctx.needs_input_grad[0] else None,
                                      buf.t() @ hc if ctx.needs_input_grad[1] else None,
                                      buf.sum(0, dtype=torch.float32) if ctx.needs_input_grad[3] else None)
                ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total / count

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        return (None if grad_h is None else (grad_h * grad_out).to(h_dtype),
                None if grad_w is None else (grad_w * grad_out).to(w_dtype), None,
                None if grad_b is None else (grad_b * grad_out).to(b_dtype), None, None, None)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection, optionally causal, with grouped
    key/value heads (GQA, Ainslie et al. 2023: ``n_kv_head`` < ``n_head``) and rotary
    positions (``rope``) as options.

    With ``cache=(k, v)`` (each (B, n_kv_head, S, hs), written in place) the new keys and values
    are stored at positions [pos, pos + T) and the queries attend over [0, pos + T): a static KV
    cache, no concatenation per step. Keys are stored rotated.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True, causal: bool = True,
                 n_kv_head: int = 0, qkv_bias: bool = False, head_size: int = 0, qk_norm: bool = False,
                 norm_eps: float = 1e-6):
        super().__init__()
        assert head_size or n_embd % n_head == 0, f"n_embd ({n_embd}) must be divisible by n_head ({n_head})"
        hs = head_size or n_embd // n_head
        self.n_kv_head = n_kv_head or n_head
        assert n_head % self.n_kv_head == 0, f"n_kv_head ({n_kv_head}) must divide n_head ({n_head})"
        kv = hs * self.n_kv_head  # the keys' (and the values') width
        # fused q, k, v: one matmul instead of three; qkv_bias: biases here only (Qwen2)
        self.c_attn = nn.Linear(n_embd, n_head * hs + 2 * kv, bias=bias or qkv_bias)
        self.c_proj = nn.Linear(n_head * hs, n_embd, bias=bias)
        # qk_norm: each query and key head RMS-normalised before its rotation (Qwen3)
        self.q_norm = nn.RMSNorm(hs, eps=norm_eps) if qk_norm else None
        self.k_norm = nn.RMSNorm(hs, eps=norm_eps) if qk_norm else None
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head = n_head
        self.dropout = dropout
        self.causal = causal

    def forward(self, x: Tensor, cache: tuple[Tensor, Tensor] | None = None, pos: int = 0,
                attn_mask: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (B, T, C) -> (B, T, C); ``attn_mask`` (B, 1, T, pos + T) bool, True = may attend,
        replaces the causal mask (it must include causality itself)."""
        return self.resid_dropout(self.c_proj(self.attend(self.c_attn(x), cache, pos, attn_mask, rope)))

    def heads(self, qkv: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """c_attn's output (B, T, nh hs + 2 kv) -> q (B, nh, T, hs), k and v (B, n_kv_head, T, hs),
        q and k rotated by ``rope`` (cos, sin, each (B or 1, T, 1, hs))."""
        B, T, _ = qkv.size()
        nh, nkv = self.n_head, self.n_kv_head
        hs = qkv.size(2) // (nh + 2 * nkv)
        qk, v = qkv.split([(nh + nkv) * hs, nkv * hs], dim=2)
        qk = qk.view(B, T, nh + nkv, hs)  # (B, T, nh + n_kv_head, hs)
        if self.q_norm is not None:
            q, k = qk.split([nh, nkv], dim=2)
            qk = torch.cat([self.q_norm(q), self.k_norm(k)], dim=2)
        if rope is not None:  # queries and keys rotated together: half the kernels of two calls
            qk = rotate(qk, *rope)
        q, k = qk.split([nh, nkv], dim=2)
        q = q.transpose(1, 2)  # (B, nh, T, hs)
        k = k.transpose(1, 2)  # (B, n_kv_head, T, hs)
        v = v.view(B, T, nkv, hs).transpose(1, 2)  # (B, n_kv_head, T, hs)
        return q, k, v

    def attend(self, qkv: Tensor, cache: tuple[Tensor, Tensor] | None = None, pos: int = 0,
               attn_mask: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The attention between the projections: c_attn's output (B, T, C + 2 kv) -> the heads'
        outputs side by side (B, T, C), before c_proj. (A GPT decoding several batches in one
        pass projects their tokens together and attends per batch.)"""
        B, T, _ = qkv.size()
        q, k, v = self.heads(qkv, rope)
        causal = self.causal
        if cache is not None:
            # SDPA's causal mask is aligned top-left, which is only right when queries and keys
            # start together (a prefill from 0) or there is a single query (which sees everything);
            # several tokens after a cache (a speculative step) come with their own mask.
            assert pos == 0 or T == 1 or attn_mask is not None, \
                f"cached attention takes a prefill at 0, one token, or a mask; got T={T} at pos={pos}"
            cache_k, cache_v = cache
            cache_k[:, :, pos : pos + T] = k
            cache_v[:, :, pos : pos + T] = v
            k = cache_k[:, :, : pos + T].to(q.dtype)  # (B, n_kv_head, pos + T, hs)
            v = cache_v[:, :, : pos + T].to(q.dtype)  # (B, n_kv_head, pos + T, hs)
            causal = causal and T > 1
        dropout = self.dropout if self.training else 0.0
        gqa = self.n_kv_head != self.n_head
        if attn_mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout,
                                               enable_gqa=gqa)  # (B, nh, T, hs)
        elif q.requires_grad and q.device.type == "cpu":
            k, v = expand_kv(k, self.n_head), expand_kv(v, self.n_head)  # (B, nh, S, hs)
            y = _explicit_attention(q, k, v, dropout, causal)  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal,
                                               enable_gqa=gqa)  # (B, nh, T, hs)
        return y.transpose(1, 2).contiguous().view(B, T, -1)  # (B, T, C): heads side by side again


def expand_kv(t: Tensor, n_head: int) -> Tensor:
    """Grouped keys or values (B, n_kv_head, S, hs) -> one per query head (B, n_head, S, hs)."""
    groups = n_head // t.size(1)
    return t if groups == 1 else t.repeat_interleave(groups, dim=1)


class RopeScaling(NamedTuple):
    """How rotary positions stretch to contexts longer than the model first trained on: ``kind``
    llama3 (Llama 3.1), linear (position interpolation, Chen et al. 2023), yarn (Peng et al.
    2023), slow frequencies divided by ``factor``, or longrope (Phi-3's), each frequency divided
    by its own factor; the other fields are the kinds' parameters."""

    kind: str
    factor: float
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    original_context: int = 8192  # llama3, yarn, longrope
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    attention_factor: float = 0.0  # yarn, longrope: 0 = the kind's default
    short_factor: tuple[float, ...] = ()  # longrope: one divisor per frequency

    def magnitude(self) -> float:
        """What yarn and longrope multiply cos and sin by (1 for the other kinds): the attention
        factor, by default YaRN's 0.1 ln(factor) + 1 and longrope's sqrt(1 + ln(factor) /
        ln(original context))."""
        if self.kind not in ("yarn", "longrope"):
            return 1.0
        if self.attention_factor:
            return self.attention_factor
        if self.factor <= 1:
            return 1.0
        if self.kind == "yarn":
            return 0.1 * math.log(self.factor) + 1.0
        return math.sqrt(1 + math.log(self.factor) / math.log(self.original_context))


def rope_frequencies(head_size: int, theta: float, scaling: RopeScaling | None = None,
                     device: torch.device | None = None) -> Tensor:
    """The rotary angular frequencies (hs / 2,), theta ** (-2i / hs), stretched by ``scaling``:
    - linear: every frequency divided by the factor;
    - llama3: wavelengths longer than original / low_freq_factor are divided by the factor,
      those shorter than original / high_freq_factor are kept, and the ones between blend the
      two linearly in original / wavelength;
    - yarn: frequencies that turn more than beta_fast times over the original context are kept,
      those turning fewer than beta_slow times are divided by the factor, and the ones between
      blend linearly in their index (the ramp's ends rounded outwards, as transformers does);
    - longrope: each frequency divided by its own short factor."""
    freq = 1.0 / theta ** (torch.arange(0, head_size, 2, device=device, dtype=torch.float32) / head_size)
    if scaling is None:
        return freq
    if scaling.kind == "linear":
        return freq / scaling.factor
    if scaling.kind == "longrope":  # the short factors: longrope's long ones are for contexts past the original
        return freq / torch.tensor(scaling.short_factor, device=device, dtype=torch.float32)
    if scaling.kind == "llama3":
        low, high, original = scaling.low_freq_factor, scaling.high_freq_factor, scaling.original_context
        kept = ((original * freq / (2 * math.pi) - low) / (high - low)).clamp(0.0, 1.0)  # 0: scaled, 1: kept
    else:  # yarn: the index at which a frequency turns `turns` times over the original context

        def index(turns: float) -> float:
            return head_size * math.log(scaling.original_context / (turns * 2 * math.pi)) / (2 * math.log(theta))

        first = max(math.floor(index(scaling.beta_fast)), 0)
        last = min(math.ceil(index(scaling.beta_slow)), head_size - 1)
        ramp = (torch.arange(head_size // 2, device=device, dtype=torch.float32) - first) / ((last - first) or 1e-3)
        kept = 1.0 - ramp.clamp(0.0, 1.0)
    return (1.0 - kept) * freq / scaling.factor + kept * freq


def rope_tables(positions: Tensor, head_size: int, theta: float, dtype: torch.dtype,
                scaling: RopeScaling | None = None) -> tuple[Tensor, Tensor]:
    """Rotary embeddings' cos and sin (Su et al. 2021) for ``positions`` (T,) or (B, T): each
    (1 or B, T, 1, hs), in the layout Hugging Face's Llama uses (the two halves of a head rotate
    together, not interleaved pairs), computed in float32 and returned in ``dtype``. A
    ``head_size`` under the heads' width rotates their leading dimensions only (``rotate``)."""
    inv_freq = rope_frequencies(head_size, theta, scaling, positions.device)
    angles = positions.float()[..., None] * inv_freq  # (..., T, hs / 2)
    angles = torch.cat([angles, angles], dim=-1)  # (..., T, hs)
    if angles.dim() == 2:
        angles = angles[None]  # (1, T, hs)
    cos, sin = angles.cos(), angles.sin()
    if scaling is not None and scaling.magnitude() != 1.0:
        cos, sin = cos * scaling.magnitude(), sin * scaling.magnitude()
    return cos[:, :, None].to(dtype), sin[:, :, None].to(dtype)  # (B or 1, T, 1, hs)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, T, heads, hs) rotated by the angles of ``rope_tables``; with tables narrower than
    hs (a partial rotary factor, as Phi-4-mini's), the leading dimensions only."""
    if cos.size(-1) < x.size(-1):
        rot, kept = x.split([cos.size(-1), x.size(-1) - cos.size(-1)], dim=-1)
        return torch.cat([rotate(rot, cos, sin), kept], dim=-1)
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


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
