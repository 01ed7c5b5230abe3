"""DDP from torchrun's environment: ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` read once into a :class:`DistInfo`.

NCCL on GPUs, gloo on CPU. Only the main rank logs and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that logs and saves."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def dist_info_from_env() -> DistInfo:
    """Read torchrun's variables (absent: a single process)."""
    return DistInfo(
        int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    )


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group (NCCL for CUDA devices, gloo otherwise); a no-op for one process."""
    if info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def broadcast_flag(info: DistInfo, flag: bool) -> bool:
    """Rank 0's value of ``flag`` on every rank (so all ranks stop together, e.g. on a signal)."""
    if not (info.enabled and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.broadcast(t, 0)
    return bool(t.item())


def shutdown(info: DistInfo) -> None:
    """Leave the process group."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
