"""Training checkpoints: :class:`TrainState`, everything needed to resume exactly, written and read only here.

A checkpoint holds the model, optimiser, scheduler and scaler states, the step and epoch, the best validation Dice
and the torch (and CUDA) RNG states. Patch sampling needs no saved state: it is a function of (seed, sample index),
and the step fixes the index. The file is a plain dict of tensors and numbers (see :meth:`TrainState.to_dict`),
written atomically and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ctseg._version import __version__
from ctseg.errors import CheckpointError
from ctseg.io.atomic import write_bytes_atomic

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class TrainState:
    """A training run between two steps: what :func:`save_checkpoint` writes and :func:`load_checkpoint` reads.

    ``best`` is the best mean validation Dice so far (-1 before the first validation) and ``best_dice`` its
    per-class values; ``step`` counts optimiser steps, ``epoch`` finished epochs. ``epochs_total`` and ``val_every``
    are the schedule the run follows (fitted to its time budget, or the config's); 0 when not yet fitted.
    """

    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    epoch: int
    step: int
    best: float
    best_dice: tuple[float, ...]
    torch_rng: torch.Tensor
    cuda_rng: tuple[torch.Tensor, ...] = ()
    epochs_total: int = 0
    val_every: int = 0
    ctseg_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint content: plain containers of tensors and numbers only (``weights_only`` loads it)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["best_dice"] = list(self.best_dice)
        out["cuda_rng"] = list(self.cuda_rng)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = CHECKPOINT_NAME) -> TrainState:
        """Rebuild from :meth:`to_dict` output, checking every key and its type.

        Raises
        ------
        CheckpointError
            If a key is missing or a value has the wrong type or range.
        """
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: expected a mapping, got {type(data).__name__}")
        optional = ("cuda_rng", "epochs_total", "val_every", "ctseg_version")
        required = [f.name for f in fields(cls) if f.name not in optional]
        missing = [k for k in required if k not in data]
        if missing:
            raise CheckpointError(f"{where}: missing key(s) {', '.join(missing)}; it was not written by ctseg train")
        for key in ("model", "optimizer", "scheduler", "scaler"):
            if not isinstance(data[key], dict):
                raise CheckpointError(f"{where}: '{key}' must be a state dict, got {type(data[key]).__name__}")
        epoch, step, best = data["epoch"], data["step"], data["best"]
        if not (isinstance(epoch, int) and isinstance(step, int) and 0 <= epoch <= step):
            raise CheckpointError(
                f"{where}: epoch {epoch!r} and step {step!r} must be integers with 0 <= epoch <= step"
            )
        if not (isinstance(best, (int, float)) and (best == -1.0 or 0.0 <= best <= 1.0)):
            raise CheckpointError(f"{where}: best Dice {best!r} must be -1 (none yet) or in [0, 1]")
        if not isinstance(data["torch_rng"], torch.Tensor):
            raise CheckpointError(f"{where}: 'torch_rng' must be a tensor (torch.get_rng_state())")
        epochs_total, val_every = data.get("epochs_total", 0), data.get("val_every", 0)
        if not (isinstance(epochs_total, int) and isinstance(val_every, int) and epochs_total >= 0 and val_every >= 0):
            raise CheckpointError(
                f"{where}: epochs_total {epochs_total!r} and val_every {val_every!r} must be integers >= 0"
            )
        best_dice = tuple(float(v) for v in data["best_dice"])
        if any(not math.isnan(v) and not 0.0 <= v <= 1.0 for v in best_dice):
            raise CheckpointError(f"{where}: best_dice {list(best_dice)} must be values in [0, 1] or NaN")
        return cls(
            model=data["model"],
            optimizer=data["optimizer"],
            scheduler=data["scheduler"],
            scaler=data["scaler"],
            epoch=epoch,
            step=step,
            best=float(best),
            best_dice=best_dice,
            torch_rng=data["torch_rng"],
            cuda_rng=tuple(data.get("cuda_rng", ())),
            epochs_total=epochs_total,
            val_every=val_every,
            ctseg_version=str(data.get("ctseg_version", "")),
        )


def save_checkpoint(path: Path, state: TrainState) -> None:
    """Write ``state`` to ``path`` atomically (temporary file + rename)."""
    buffer = io.BytesIO()
    torch.save(state.to_dict(), buffer)
    write_bytes_atomic(Path(path), buffer.getvalue())


def load_checkpoint(path: Path) -> TrainState:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If it is missing, cannot be read, or its content is not a training state.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; start without --resume, or point --out at the run folder")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise CheckpointError(f"{path} cannot be loaded: {exc}") from exc
    return TrainState.from_dict(data, where=str(path))
