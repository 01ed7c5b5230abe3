"""A deterministic stand-in model for inference tests: label 1 exactly where HU > ``THRESHOLD_HU``."""

from __future__ import annotations

import torch
from torch import nn

from ctseg.config import InferConfig, PreprocessConfig, to_dict
from ctseg.infer import LoadedModel

THRESHOLD_HU = 300.0
#: A window covering the whole CT range is an invertible map HU -> [0, 1].
FULL_RANGE = PreprocessConfig(normalization="window", window_level_hu=1023.5, window_width_hu=4095.0)


class ThresholdNet(nn.Module):
    """Logits (background, foreground) = +-(x - t): label 1 exactly where HU > THRESHOLD_HU."""

    def __init__(self) -> None:
        super().__init__()
        self.t = (THRESHOLD_HU - (1023.5 - 4095.0 / 2)) / 4095.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.t - x, x - self.t], dim=1) * 1000.0


def threshold_model(spacing_mm: tuple[float, float, float]) -> LoadedModel:
    """The stand-in as a loaded model working at ``spacing_mm`` (the input's own spacing makes resampling exact)."""
    pre = PreprocessConfig(**{**to_dict(FULL_RANGE), "target_spacing_mm": spacing_mm})
    return LoadedModel(
        ThresholdNet(),
        pre,
        (8, 8, 8),
        {0: "background", 1: "dense"},
        {1: (255, 0, 0)},
        InferConfig(amp=False, overlap=0.5),
    )
