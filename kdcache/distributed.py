"""Process-group setup for ``torchrun`` (DDP) and single-process runs alike."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from kdcache.errors import KdcacheError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank among world_size, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise KdcacheError(f"--device {name}: no CUDA device is available (use --device cpu)")
        if name == "cuda":
            return torch.device("cuda", local_rank)
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KdcacheError(f"--device {name}: not a device name (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise KdcacheError(f"--device {name}: there are {torch.cuda.device_count()} CUDA device(s), "
                           f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


@contextlib.contextmanager
def full_precision(t: torch.Tensor) -> Iterator[None]:
    """Disable autocast for ``t``'s device type (where autocast exists for it): losses and scores are
    computed in at least float32 whatever the caller's autocast state."""
    if torch.amp.is_autocast_available(t.device.type):
        with torch.autocast(device_type=t.device.type, enabled=False):
            yield
    else:
        yield


def autocast_for(device: torch.device):
    """bf16 autocast for the models on GPU; a no-op context on CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def init_distributed(device: str = "auto", timeout: timedelta | None = None) -> DistContext:
    """Join the ``torchrun`` process group if one is described by the environment.

    gloo on CPU, nccl on CUDA. Without ``WORLD_SIZE`` > 1 this is a single-process context. ``timeout``:
    how long a collective (a barrier) waits for the other ranks; None keeps torch's default (30 min).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", timeout=timeout)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: float, ctx: DistContext) -> float:
    """Average a Python float over ranks (for logging)."""
    if not ctx.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return float(tensor.item()) / ctx.world_size
