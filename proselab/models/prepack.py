"""Prepacked linear weights for decoding on CPU.

At batch 1 a decoding step is a chain of matrix-vector products, bound by how fast the
weights are read. oneDNN reads a weight it has reordered once into its blocked layout much
faster than a plain row-major one: on the GPT-2-124M shape here, greedy bf16 decoding went
from 44 to 58 tok/s at batch 1 and from 188 to 324 at batch 8 (bench/decode_speed.py). The
ops are the ones inductor's ``freezing`` emits (``torch.ops.mkldnn``); where they are
missing or disagree with ``F.linear``, nothing is packed.

Packing keeps the module's parameters as they are (state_dict, training and CUDA are
unchanged); a packed copy is used only for CPU forward passes without grad or autocast, and
it is redone if the weight changes.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

_available: dict[torch.dtype, bool] = {}
# Small layers are bound by per-call overhead, which oneDNN's linear has more of: on the
# nanogpt-cpu model (128 x 384 weights) packing made sampling 1.3x slower. GPT-2's smallest
# layer is 768 x 768.
MIN_PACKED = 1 << 18


def _ops_work(dtype: torch.dtype = torch.float32) -> bool:
    """Whether the oneDNN ops exist here for ``dtype`` and agree with F.linear (checked once per
    dtype: oneDNN's bf16 path needs AVX-512 or AVX-NE-CONVERT, which many CPUs lack)."""
    if dtype not in _available:
        try:
            w, b, x = (torch.randn(24, 16, dtype=dtype), torch.randn(24, dtype=dtype),
                       torch.randn(3, 16, dtype=dtype))
            packed = torch.ops.mkldnn._reorder_linear_weight(w, 1)
            y = torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
            g = torch.ops.mkldnn._linear_pointwise(x, packed, b, "gelu", [], "none")  # a post-op (POST_OPS)
            tol = 1e-4 if dtype == torch.float32 else 5e-2
            _available[dtype] = bool(torch.allclose(y.float(), F.linear(x, w, b).float(), atol=tol)
                                     and torch.allclose(g.float(), F.gelu(F.linear(x, w, b)).float(), atol=tol))
        except (AttributeError, RuntimeError):
            _available[dtype] = False
    return _available[dtype]


# model.activation -> oneDNN's post-op (attr, algorithm): computed in the matmul's epilogue, while
# the output is still in cache, instead of in a second pass over it
POST_OPS = {"gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh"), "relu": ("relu", ""), "silu": ("swish", "")}


class PrepackedLinear(nn.Linear):
    """An nn.Linear that keeps a oneDNN-packed copy of its weight for CPU inference.

    The copy is redone when the weight's storage or version changes. A fused optimizer
    (``AdamW(fused=True)``) updates weights without bumping their version, so code that
    decodes a model while training it calls ``refresh`` first.
    """

    def forward(self, x: Tensor) -> Tensor:
        y = self.fused(x)
        return F.linear(x, self.weight, self.bias) if y is None else y

    def fused(self, x: Tensor, activation: str | None = None, bias: Tensor | None = None) -> Tensor | None:
        """``activation(self(x) + bias)`` in one oneDNN call, with ``activation`` a
        model.activation name of POST_OPS and ``bias`` (out,) one this layer does not have;
        None where the packed path does not apply (training, autocast, another device or
        dtype, one float32 row): the caller then computes it unfused."""
        w = self.weight
        # float32 with one row: MKL's gemv beat oneDNN's packed kernel by 5-25% here on every
        # shape tried (512-3072 x 512-65001); from 4 rows on the packed one wins
        if (torch.is_grad_enabled() or self.training or x.device.type != "cpu" or x.dtype != w.dtype
                or (w.dtype == torch.float32 and x.numel() == x.size(-1))
                or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling() or not _ops_work(w.dtype)
                or (activation is not None and activation not in POST_OPS)
                or (bias is not None and (self.bias is not None or bias.dtype != w.dtype))):
            return None
        key = (w.data_ptr(), w._version, w.dtype)
        if getattr(self, "_packed_key", None) != key:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), 1)
            self._packed_key = key
        attr, algorithm = POST_OPS[activation] if activation is not None else ("none", "")
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.size(-1)), self._packed,
                                               self.bias if bias is None else bias, attr, [], algorithm)
        return y.view(*x.shape[:-1], y.size(-1))  # (..., out)


def fused(linear: nn.Module, x: Tensor, activation: str | None = None, bias: Tensor | None = None) -> Tensor | None:
    """``PrepackedLinear.fused`` for any module: None unless ``linear`` is packed and its packed
    path applies to ``x``."""
    return linear.fused(x, activation, bias) if isinstance(linear, PrepackedLinear) else None


def prepack_for_cpu(model: nn.Module) -> nn.Module:
    """Turn the model's large nn.Linear layers (>= MIN_PACKED weights) into PrepackedLinear,
    in place, when it runs on CPU.

    Set PROSELAB_PREPACK=0 to keep plain nn.Linear (the packed copies double the memory of
    the linear weights).
    """
    if os.environ.get("PROSELAB_PREPACK", "1") == "0" or not _ops_work():
        return model
    if any(p.device.type != "cpu" for p in model.parameters()):
        return model
    for mod in model.modules():
        if type(mod) is nn.Linear and mod.weight.numel() >= MIN_PACKED:
            mod.__class__ = PrepackedLinear
    return model


def refresh(model: nn.Module) -> None:
    """Drop the packed copies of ``model``'s weights; the next forward packs them again."""
    for mod in model.modules():
        if isinstance(mod, PrepackedLinear):
            mod._packed_key = None


def overhead_bound(model: nn.Module) -> bool:
    """Whether no weight matrix of ``model`` reaches MIN_PACKED: its decoding steps are then
    bound by per-operation overhead, and a second CPU thread gains little.

    A server runs such a model on one thread. OpenMP's idle worker spins between operations,
    and on a small machine it took a core from the HTTP side: on the nanogpt-cpu model (largest
    matrix 128 x 512) one thread served 8 streaming clients 1.27x faster than two, and one
    client 1.12x (bench/serve_load.py, 2 cores). From 6 x 384 up (10.8M parameters) a step is
    1.3-1.7x faster on two threads.
    """
    return all(p.dim() < 2 or p.numel() < MIN_PACKED for p in model.parameters())
