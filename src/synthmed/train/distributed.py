"""Multi-GPU / multi-node training through PyTorch's own engine (``torchrun`` + DDP).

``torchrun --nproc_per_node N -m synthmed train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; we then
join the process group (NCCL on CUDA, gloo on CPU) and wrap every trained network in
``DistributedDataParallel``.  Without those variables everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> DistInfo:
    """Join the process group if launched by torchrun; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not device_pref.startswith("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def resolve_device(pref: str, info: DistInfo) -> torch.device:
    """``auto`` → cuda (this process's local GPU) if available, else cpu."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    dev = torch.device(pref)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from synthmed.errors import ConfigError

        raise ConfigError(f"config key 'train.device': {pref!r} requested but no CUDA device is available")
    return dev


def wrap_ddp(nets: dict[str, nn.Module], info: DistInfo, device: torch.device) -> dict[str, nn.Module]:
    """Wrap each network with trainable parameters in DDP (identity when not distributed)."""
    if not info.enabled:
        return dict(nets)
    ids = [device.index] if device.type == "cuda" else None
    return {k: nn.parallel.DistributedDataParallel(m, device_ids=ids) for k, m in nets.items()}


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """All ranks' ``obj`` (a list of one element when not distributed)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself when not distributed)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
