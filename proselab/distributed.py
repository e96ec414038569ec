"""Where the maths runs: the device and autocast dtype (the one place that picks them), and
multi-process training under torchrun (process group setup and the few collectives used).

Without torchrun's environment (WORLD_SIZE unset or 1) every Dist method is a cheap no-op, so
the training loop has one code path. Backend: nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.distributed as tdist

from .config import ConfigError


def pick_device(name: str = "auto", setting: str = "train.device") -> torch.device:
    """``auto`` (CUDA if available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; ``setting``
    names where the choice came from, for the error when CUDA is asked for but absent."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise ConfigError(f"{setting} must be auto, cpu, cuda, cuda:N or mps; got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{setting}={name} but CUDA is not available; use {setting}=cpu")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX), where autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.dtype`` (auto, float32, bfloat16) on ``device``, or None for plain fp32."""
    if name == "float32":
        return None
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``; nothing when dtype is None."""
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


class Dist:
    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, device: torch.device | None = None):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device = device or torch.device("cpu")
        self.enabled = world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.local_rank] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids)

    def maybe_no_sync(self, model: torch.nn.Module, sync: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
        if self.enabled and not sync:
            return model.no_sync()
        return nullcontext()

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return t
        t = t.detach().clone()
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t / self.world_size

    def main_value(self, value: float) -> float:
        """Rank 0's ``value`` on every process (each rank's own clock would give each its own)."""
        if not self.enabled:
            return value
        t = torch.tensor([value if self.is_main else -math.inf], dtype=torch.float64, device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return float(t.item())

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    @contextmanager
    def rank0_first(self):
        """Let rank 0 run the block first (e.g. to fill a cache), then the others."""
        if self.enabled and not self.is_main:
            tdist.barrier()
        yield
        if self.enabled and self.is_main:
            tdist.barrier()

    def close(self) -> None:
        if self.enabled and tdist.is_initialized():
            tdist.destroy_process_group()


def setup_distributed(device_name: str = "auto") -> Dist:
    """A Dist for this process: initialises the process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world_size, local_rank, device)
