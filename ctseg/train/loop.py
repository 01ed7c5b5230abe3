"""The training step and the validation pass (real sliding-window inference, per-class Dice)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ctseg.infer.pipeline import make_predictor
from ctseg.infer.sliding_window import predict_labels

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Amp:
    """Mixed precision: bf16 on CPUs that support it, fp16 (+ GradScaler) on CUDA, or off."""

    enabled: bool
    dtype: torch.dtype
    device_type: str


@dataclass(frozen=True)
class StepResult:
    """What one optimiser step did."""

    loss: float
    skipped: bool


def train_step(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp: Amp,
    *,
    grad_clip: float,
    accumulation: int = 1,
) -> StepResult:
    """One optimiser step over ``accumulation`` micro-batches split from ``batch``.

    A non-finite loss skips the step (no weight update) and is reported, instead of corrupting the weights.
    """
    images, labels = batch
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for x, y in zip(images.chunk(accumulation), labels.chunk(accumulation), strict=True):
        with torch.autocast(amp.device_type, dtype=amp.dtype, enabled=amp.enabled):
            loss = loss_fn(model(x), y) / accumulation
        if not torch.isfinite(loss):
            optimizer.zero_grad(set_to_none=True)
            return StepResult(float("nan"), skipped=True)
        scaler.scale(loss).backward()
        total += float(loss.detach())
    scaler.unscale_(optimizer)
    norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if not math.isfinite(float(norm)):
        optimizer.zero_grad(set_to_none=True)
        scaler.update()
        return StepResult(total, skipped=True)
    scaler.step(optimizer)
    scaler.update()
    return StepResult(total, skipped=False)


def dice_per_class(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> list[float]:
    """Dice of classes 1..C-1; NaN where both are empty."""
    out = []
    for c in range(1, num_classes):
        p, r = pred == c, ref == c
        denom = int(p.sum()) + int(r.sum())
        out.append(float("nan") if denom == 0 else 2.0 * int((p & r).sum()) / denom)
    return out


def validate(
    model: nn.Module,
    cases: list[tuple[np.ndarray, np.ndarray]],
    patch_size: tuple[int, int, int],
    num_classes: int,
    device: torch.device,
    *,
    amp: bool,
    pad_value: float,
) -> list[float]:
    """Mean per-class Dice of sliding-window predictions on preprocessed ``(image, labels)`` cases."""
    was_training = model.training
    model.eval()
    predictor = make_predictor(model, device, amp=amp)
    scores = []
    for image, labels in cases:
        pred = predict_labels(
            torch.from_numpy(np.array(image, dtype=np.float32))[None],
            predictor,
            patch_size,
            overlap=0.5,
            pad_value=pad_value,
        )
        scores.append(dice_per_class(pred, np.asarray(labels), num_classes))
    model.train(was_training)
    with np.errstate(all="ignore"):
        return [float(v) for v in np.nanmean(np.array(scores, dtype=float), axis=0)]
