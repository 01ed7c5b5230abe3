"""Planning from a dataset fingerprint: target spacing, normalisation, network size, patch and batch size.

Rules (after nnU-Net v2, simplified and written down):

* target spacing: the per-axis median spacing; if the coarsest axis is over 3x the finest (anisotropic data), that
  axis takes its 10th percentile instead, so thin-slice cases are not thrown away;
* normalisation: percentile clip (0.5/99.5 of foreground HU) + z-score with the foreground mean/std;
* network and patch from a budget: ``cpu`` gives a 4-level U-Net (16..128 channels) and a patch of at most 64^3
  that trains in minutes on a laptop; ``gpu`` gives nnU-Net's DynUNet shape (32..320, deep supervision) with a
  128^3-class patch and batch 2. The patch never exceeds the median image (in voxels), rounded to the network's
  divisor;
* mirroring: none, for every CT plan. ctseg reorients every CT to one canonical orientation before training, so each
  array axis carries anatomy (head-feet, front-back, left-right): mirroring left-right swaps kidney_left and
  kidney_right and puts the liver where the spleen belongs, and even mirroring only the other two axes cost 0.05-0.15
  Dice per class on the real abdominal CT (benchmarks/evidence/train_sweep_1500steps.txt: after 1500 steps, mirror on
  all axes 0.86/0.31/0.75/0.79/0.30 for liver/spleen/kidney_right/kidney_left/aorta; axes 0 and 1 only
  0.91/0.87/0.81/0.89/0.81; none 0.95/0.95/0.96/0.95/0.93);
* learning rate: AdamW 3e-3 on the ``cpu`` budget. 1e-3 and 3e-3 end level after 1500 steps (within 0.01 per class),
  3e-3 is ahead at 1000 steps on the weakest class (0.92 vs 0.90) and a time budget often stops there; 1e-2 is
  worse (aorta 0.90 at 1500). The ``gpu`` budget keeps nnU-Net's SGD 1e-2 with poly decay;
* augmentation: on. Switching it off gains about 0.01 Dice when a model is scored on its own training scan (the only
  score the 2-case sweep can give), while augmentation is what nnU-Net relies on for scans it has not seen;
* schedule: ``cpu`` trains for a time budget (:data:`CPU_BUDGET_MINUTES`) instead of a fixed step count: ``ctseg
  train`` measures its step time and fits epochs, validation cadence and the learning-rate horizon to the budget
  (:mod:`ctseg.train.budget`). ``gpu`` keeps nnU-Net's explicit 1000 x 250 steps unless a budget is given.

:func:`make_plan` returns the notes that say why, and ``ctseg train`` writes them as comments at the top of
``plan.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ctseg.config import ModelConfig, PreprocessConfig, RunConfig, TrainConfig
from ctseg.model.unet import divisor
from ctseg.preprocess.intensity import IntensityStats
from ctseg.volume import Volume

ANISOTROPY_RATIO = 3.0
BUDGETS = ("cpu", "gpu")
#: The ``cpu`` plan's default time budget. On the real 2-case abdominal CT every class passed Dice 0.9 after about
#: 1000 steps (benchmarks/evidence/train_sweep_1500steps.txt); an idle 2-core CPU runs the cpu plan's steps in about
#: 0.15-0.3 s, so 15 minutes buys 3000+ steps: room for a busier CPU or a larger dataset, and still a wait a user
#: accepts before seeing a first model.
CPU_BUDGET_MINUTES = 15.0
CPU_LEARNING_RATE = 3e-3
#: Label-name fragments of structures that exist on one side of the body (or are asymmetric across it).
LATERAL_HINTS = ("left", "right", "_l", "_r", "liver", "spleen", "stomach", "pancreas", "heart", "aorta")


@dataclass(frozen=True)
class Plan:
    """A planned run configuration and the notes that explain its choices (written to ``plan.yaml``)."""

    config: RunConfig
    notes: tuple[str, ...]


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


def mirror_note(labels: Sequence[str]) -> str:
    """Why the plan does not mirror, naming the label set's lateralised or asymmetric structures."""
    sided = [n for n in labels if any(h in n.lower() for h in LATERAL_HINTS)]
    which = f"; here {', '.join(sided)} would be swapped or misplaced" if sided else ""
    return (
        "mirror_axes []: CT is reoriented canonically, so every axis carries anatomy (left-right mirroring swaps "
        f"left/right organs{which}); mirroring cost 0.05-0.6 Dice per class on the real CT "
        "(benchmarks/evidence/train_sweep_1500steps.txt). --set train.mirror_axes=[0,1,2] overrides."
    )


def make_plan(fp: Fingerprint, *, budget: str = "cpu", labels: Sequence[str] = ()) -> Plan:
    """The run configuration planned for a fingerprint and a compute budget (``"cpu"`` or ``"gpu"``), with notes.

    ``labels`` (the foreground class names) only shape the notes: no CT plan mirrors (see the module docstring).

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
        # epochs and val_every are fitted to the time budget by ctseg train; the values here are its fallback.
        train = TrainConfig(
            batch_size=2,
            patch_size=patch,
            epochs=40,
            steps_per_epoch=25,
            learning_rate=CPU_LEARNING_RATE,
            mirror_axes=(),
            time_budget_minutes=CPU_BUDGET_MINUTES,
        )
        notes = [
            f"schedule: fitted to a {CPU_BUDGET_MINUTES:g}-minute budget from the measured step time "
            "(--time-budget or --epochs replace it)",
            f"learning_rate {CPU_LEARNING_RATE:g} (AdamW, cosine): level with 1e-3 after 1500 steps on the real CT, "
            "ahead at 1000 steps on the weakest class",
        ]
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
            mirror_axes=(),
        )
        notes = ["schedule: nnU-Net's 1000 epochs x 250 steps, SGD 1e-2 with poly decay (--time-budget fits it)"]
    s = fp.intensity
    pre = PreprocessConfig(
        target_spacing_mm=spacing,
        normalization="zscore",
        clip_lower_hu=s.lower_hu,
        clip_upper_hu=s.upper_hu,
        mean_hu=s.mean_hu,
        std_hu=s.std_hu,
    )
    notes += [mirror_note(labels), "augment on: it costs about 0.01 Dice on a training scan, and helps unseen scans"]
    return Plan(RunConfig(model=model, preprocess=pre, train=train), tuple(notes))
