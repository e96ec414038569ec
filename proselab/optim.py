"""What the training steps run with: AdamW (fused where available, decay on matrices only),
the learning-rate schedule (linear warmup, cosine decay by steps or by a time budget) and the
allocator setting that keeps CPU steps from page-faulting their activations back in."""

from __future__ import annotations

import ctypes
import math
from typing import Any

import torch


def keep_freed_memory() -> None:
    """Stop glibc from returning freed heap memory to the OS between training steps.

    PyTorch's CPU allocator does not cache: every step frees its activations, glibc unmaps or
    trims them, and the next step page-faults them back in. On the nanogpt-cpu config that was
    ~2,400 page faults per step and ~10% of the step time. Process-wide, and a no-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's own ceiling for its adaptive threshold
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


# A time-boxed run anneals in the last fifth of its budget and holds the peak learning rate
# before it (warmup-stable-decay). A cosine over the whole budget lost to no decay at all on
# bible-en-es in 20 minutes of one core (dev BLEU 5.34 against 8.64): ~1,000 steps leave the
# model far from converged, and the decay slowed it from the start (bench/time_budget.py).
TIME_DECAY_FRACTION = 0.2


def _cosine(ratio: float, cfg) -> float:
    if ratio >= 1.0:
        return cfg.min_lr
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * max(ratio, 0.0))) * (cfg.lr - cfg.min_lr)


def lr_at(step: int, cfg, budget_used: float = 0.0) -> float:
    """Linear warmup then cosine decay to min_lr by step (nanoGPT's schedule, to lr_decay_iters
    or max_iters). With ``budget_used``, the fraction of ``train.max_time`` spent, the rate also
    follows the budget: the peak until its last TIME_DECAY_FRACTION, then a cosine to min_lr at
    its end; the lower of the two applies, so a run ends annealed whichever limit comes first."""
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    by_steps = _cosine((step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters), cfg)
    if budget_used <= 0.0:
        return by_steps
    return min(by_steps, _cosine((budget_used - 1.0 + TIME_DECAY_FRACTION) / TIME_DECAY_FRACTION, cfg))


def make_optimizer(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only: biases and norms are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs: dict[str, Any] = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2)}
    try:  # fused kernels exist for CPU and CUDA in recent PyTorch; fall back quietly elsewhere
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, **kwargs)


class WeightAverage:
    """An exponential moving average of a model's weights (``train.ema_decay``), kept beside the
    model it follows: ``module`` is a copy that evaluations and model.safetensors use.

    torch's ``AveragedModel`` holds the copy; the decay warms up as TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates`` does: ``min(decay, (1 + n) / (10 + n))``
    after n updates, so the first steps' weights, far from trained, fade out quickly instead of
    holding the average near the initialisation for ~1 / (1 - decay) steps."""

    def __init__(self, model: torch.nn.Module, decay: float):
        from torch.optim.swa_utils import AveragedModel

        self.decay, self.updates = decay, 0
        self.averaged = AveragedModel(model, multi_avg_fn=self._lerp)
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> torch.nn.Module:
        return self.averaged.module

    def _lerp(self, averages: list[torch.Tensor], current: list[torch.Tensor], n) -> None:
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        get_ema_multi_avg_fn(min(self.decay, (1 + self.updates) / (10 + self.updates)))(averages, current, n)

    def update(self, model: torch.nn.Module) -> None:
        """Fold the model's weights after an optimizer step into the average."""
        self.averaged.update_parameters(model)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"averaged": self.averaged.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state["averaged"])
        self.updates = int(state["updates"])
