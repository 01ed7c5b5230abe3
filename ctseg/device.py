"""Device and precision choice (CUDA, CPU instruction-set flags), used by training and inference alike."""

from __future__ import annotations

import torch


def resolve_device(name: str, *, local_rank: int | None = None) -> torch.device:
    """``auto`` -> CUDA when available (``cuda:<local_rank>`` when a rank is given, one device per process under
    torchrun), else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda") if local_rank is None else torch.device("cuda", local_rank)
    return torch.device(name)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a device: fp16 on CUDA, bf16 on CPUs that support it, else none."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and _cpu_has_bf16():
        return torch.bfloat16
    return None


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fp:
            flags = fp.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags or "avx512bf16" in flags
