"""Segmentation losses: batch Dice + cross-entropy (default) or Dice only, DDP-aware, with deep supervision."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ctseg.errors import ConfigError

LOSSES = ("dice_ce", "dice")


#: Numerator/denominator smoothing of the soft Dice.
SMOOTH = 1e-5


def _sum_across_processes(t: torch.Tensor) -> torch.Tensor:
    """Differentiable all-reduce (sum) under DDP; identity for a single process.

    With it, the batch Dice of a DDP step is the Dice of the global batch, and DDP's gradient averaging then gives
    exactly the single-process gradient (the all-reduce's backward sums the per-rank gradients).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(t)  # type: ignore[no-any-return]
    return t


def batch_dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 - mean foreground soft Dice, with true positives and sums pooled over the whole (global) batch.

    Pooling over the batch (nnU-Net's ``batch_dice``) matters: a per-sample Dice scores a class that is absent from
    a patch as 0 whatever the network does, which teaches it never to predict small structures.
    """
    probs = torch.softmax(logits, dim=1)
    onehot = torch.zeros_like(probs).scatter_(1, labels.long(), 1.0)
    dims = (0, *range(2, probs.dim()))
    stats = torch.stack([(probs * onehot).sum(dims), probs.sum(dims), onehot.sum(dims)])
    tp, pred, ref = _sum_across_processes(stats)
    dice = (2.0 * tp + SMOOTH) / (pred + ref + SMOOTH)
    return 1.0 - dice[1:].mean()


def build_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A loss ``(logits (B, C, ...) or deep-supervised (B, K, C, ...), labels (B, 1, ...) int) -> scalar``.

    Dice is the batch soft Dice of :func:`batch_dice_loss` (foreground classes, pooled over the global batch, also
    under DDP); cross-entropy is the plain multi-class CE averaged over voxels. Deep-supervision heads are weighted
    1, 1/2, 1/4, ... and normalised. (MONAI's ``DiceCELoss`` computes the same with ``batch=True``, but cannot pool
    across DDP processes.)

    Raises
    ------
    ConfigError
        For an unknown loss name.
    """
    if name == "dice_ce":

        def base(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return batch_dice_loss(logits, labels) + F.cross_entropy(logits, labels[:, 0].long())

    elif name == "dice":
        base = batch_dice_loss
    else:
        raise ConfigError(f"unknown train.loss {name!r}; expected one of {', '.join(LOSSES)}")

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.dim() == labels.dim() + 1:  # deep supervision: (B, K, C, ...)
            weights = torch.tensor([0.5**k for k in range(logits.shape[1])])
            weights = weights / weights.sum()
            return sum(w * base(logits[:, k], labels) for k, w in enumerate(weights))  # type: ignore[return-value]
        return base(logits, labels)

    return loss
