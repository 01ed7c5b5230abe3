"""Training checkpoints: atomic writes, and everything needed to resume exactly.

A checkpoint holds the model, optimiser, scheduler and scaler states, the step and epoch, the best validation Dice
and the torch RNG state. Patch sampling needs no saved state: it is a function of (seed, sample index), and the
step fixes the index. Files load with ``weights_only=True``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from ctseg.errors import CheckpointError
from ctseg.io.atomic import write_bytes_atomic

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file + rename)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(Path(path), buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If it is missing or cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; start without --resume, or point --out at the run folder")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
    except Exception as exc:  # torch raises several types for damaged files
        raise CheckpointError(f"{path} cannot be loaded: {exc}") from exc
