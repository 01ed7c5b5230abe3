"""Planning from a dataset fingerprint: target spacing, normalisation, network size, patch and batch size.

Rules (after nnU-Net v2, simplified and written down):

* target spacing: the per-axis median spacing; if the coarsest axis is over 3x the finest (anisotropic data), that
  axis takes its 10th percentile instead, so thin-slice cases are not thrown away;
* normalisation: percentile clip (0.5/99.5 of foreground HU) + z-score with the foreground mean/std;
* network and patch from a budget: ``cpu`` gives a 4-level U-Net (16..128 channels) and a patch of at most 64^3
  that trains in minutes on a laptop; ``gpu`` gives nnU-Net's DynUNet shape (32..320, deep supervision) with a
  128^3-class patch and batch 2. The patch never exceeds the median image (in voxels), rounded to the network's
  divisor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctseg.config import ModelConfig, PreprocessConfig, RunConfig, TrainConfig
from ctseg.model.unet import divisor
from ctseg.preprocess.intensity import IntensityStats
from ctseg.volume import Volume

ANISOTROPY_RATIO = 3.0
BUDGETS = ("cpu", "gpu")


@dataclass(frozen=True)
class Fingerprint:
    """What planning needs to know about a dataset."""

    spacings_mm: tuple[tuple[float, float, float], ...]
    shapes: tuple[tuple[int, int, int], ...]
    intensity: IntensityStats
    num_classes: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {
            "spacings_mm": [list(s) for s in self.spacings_mm],
            "shapes": [list(s) for s in self.shapes],
            "intensity": vars(self.intensity),
            "num_classes": self.num_classes,
        }


def fingerprint(images: list[Volume], stats: IntensityStats, num_classes: int) -> Fingerprint:
    """Spacing/shape per case plus pooled foreground intensity statistics."""
    return Fingerprint(tuple(v.geometry.spacing_mm for v in images), tuple(v.shape for v in images), stats, num_classes)


def target_spacing(fp: Fingerprint) -> tuple[float, float, float]:
    """Median spacing per axis, with nnU-Net's anisotropy rule."""
    sp = np.array(fp.spacings_mm)
    target = np.median(sp, axis=0)
    coarse = int(np.argmax(target))
    if target[coarse] > ANISOTROPY_RATIO * target.min():
        target[coarse] = max(np.percentile(sp[:, coarse], 10), target.min())
    return (float(target[0]), float(target[1]), float(target[2]))


def _patch(median_shape: np.ndarray, max_edge: int, div: tuple[int, int, int]) -> tuple[int, int, int]:
    out = []
    for n, d in zip(median_shape, div, strict=True):
        edge = min(max_edge, int(n))
        out.append(max(d, (edge // d) * d))
    return (out[0], out[1], out[2])


def make_plan(fp: Fingerprint, *, budget: str = "cpu") -> RunConfig:
    """The run configuration planned for a fingerprint and a compute budget (``"cpu"`` or ``"gpu"``).

    Raises
    ------
    ValueError
        For an unknown budget.
    """
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; expected one of {BUDGETS}")
    spacing = target_spacing(fp)
    median_shape = np.median(
        [np.array(s) * np.array(sp) / np.array(spacing) for s, sp in zip(fp.shapes, fp.spacings_mm, strict=True)],
        axis=0,
    )
    if budget == "cpu":
        model = ModelConfig(architecture="unet", channels=(16, 32, 64, 128), strides=((2, 2, 2),) * 3, num_res_units=1)
        patch = _patch(median_shape, 64, divisor(model))
        train = TrainConfig(batch_size=2, patch_size=patch, epochs=40, steps_per_epoch=25)
    else:
        model = ModelConfig(
            architecture="dynunet",
            channels=(32, 64, 128, 256, 320, 320),
            strides=((2, 2, 2),) * 5,
            num_res_units=0,
            deep_supervision=True,
        )
        patch = _patch(median_shape, 128, divisor(model))
        train = TrainConfig(
            batch_size=2,
            patch_size=patch,
            epochs=1000,
            steps_per_epoch=250,
            optimizer="sgd",
            learning_rate=1e-2,
            weight_decay=3e-5,
            num_workers=6,
        )
    s = fp.intensity
    pre = PreprocessConfig(
        target_spacing_mm=spacing,
        normalization="zscore",
        clip_lower_hu=s.lower_hu,
        clip_upper_hu=s.upper_hu,
        mean_hu=s.mean_hu,
        std_hu=s.std_hu,
    )
    return RunConfig(model=model, preprocess=pre, train=train)
