"""Segmentation losses: Dice + cross-entropy (default) or Dice only, via MONAI, with deep-supervision weighting."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ctseg.errors import ConfigError

LOSSES = ("dice_ce", "dice")


def build_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A loss ``(logits (B, C, ...) or deep-supervised (B, K, C, ...), labels (B, 1, ...) int) -> scalar``.

    Dice is soft Dice over softmax probabilities, per class averaged (background included, as nnU-Net does not,
    excluded); cross-entropy is the plain multi-class CE. Deep-supervision heads are weighted 1, 1/2, 1/4, ...
    and normalised.

    Raises
    ------
    ConfigError
        For an unknown loss name.
    """
    from monai.losses import DiceCELoss, DiceLoss

    if name == "dice_ce":
        base: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = DiceCELoss(
            include_background=False, to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=False
        )
    elif name == "dice":
        base = DiceLoss(
            include_background=False, to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=False
        )
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
