"""torchrun's environment read once: ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` into a validated :class:`DistInfo`.

Used by training (DDP) and batch prediction (one shard of the cases per process) alike. The process group is NCCL
for CUDA devices and gloo otherwise; every helper is a no-op for a single process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ctseg.errors import ConfigError

#: torchrun's variables, read only here.
ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (``world_size`` 1: a single process)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ConfigError(f"WORLD_SIZE is {self.world_size}; expected 1 or more (torchrun sets it)")
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(
                f"RANK is {self.rank}; expected 0..{self.world_size - 1} for WORLD_SIZE {self.world_size}"
            )
        if not 0 <= self.local_rank < self.world_size:
            raise ConfigError(
                f"LOCAL_RANK is {self.local_rank}; expected 0..{self.world_size - 1} for WORLD_SIZE {self.world_size}"
            )

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that logs and saves."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def dist_info_from_env(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Read torchrun's variables from ``environ`` (default ``os.environ``); absent: a single process.

    Raises
    ------
    ConfigError
        If a variable is not an integer or the three do not fit together.
    """
    env = os.environ if environ is None else environ
    values: dict[str, int] = {}
    for key, default in zip(ENV_KEYS, (0, 0, 1), strict=True):
        text = env.get(key)
        try:
            values[key] = default if text is None else int(text)
        except ValueError:
            raise ConfigError(f"{key} is {text!r}; expected an integer (torchrun sets it)") from None
    return DistInfo(values["RANK"], values["LOCAL_RANK"], values["WORLD_SIZE"])


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group (NCCL for CUDA devices, gloo otherwise); a no-op for one process."""
    if info.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL collectives run on the current device
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def broadcast_flag(info: DistInfo, flag: bool) -> bool:
    """Rank 0's value of ``flag`` on every rank (so all ranks stop together, e.g. on a signal)."""
    if not (info.enabled and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, 0)
    return bool(t.item())


def broadcast_ints(info: DistInfo, values: list[int]) -> list[int]:
    """Rank 0's ``values`` on every rank (e.g. a schedule fitted from rank 0's timings)."""
    if not (info.enabled and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.int64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(t, 0)
    return [int(v) for v in t.tolist()]


def shutdown(info: DistInfo) -> None:
    """Leave the process group."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
