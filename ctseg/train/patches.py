"""Training patches: :class:`PatchDataset` (the torch ``Dataset`` the DataLoader reads) and :class:`StepSampler`.

Patches are sampled and augmented in DataLoader workers from the preprocessed cache (:mod:`ctseg.train.cache`)
of a :class:`~ctseg.train.dataset.DatasetFolder`.

Every sample is a pure function of ``(seed, global index)``: the case, the patch centre (foreground-oversampled),
and every augmentation draw come from ``numpy.random.default_rng([seed, index])``. So the data a step sees does not
depend on the number of workers or ranks, a resumed run sees exactly the data the interrupted one would have, and a
2-rank DDP run sees the same global batch as one process.

Augmentations (probabilities after nnU-Net): rotation (+-15 deg) and scaling (0.85-1.15) together via one
``grid_sample`` (p 0.2 each), mirroring on each axis (p 0.5), Gaussian noise (p 0.15), contrast (p 0.15), gamma
(p 0.15).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from ctseg.train.cache import CachedCase, open_case

ROTATION_DEG = 15.0
SCALE_RANGE = (0.85, 1.15)
P_ROTATE, P_SCALE, P_NOISE, P_CONTRAST, P_GAMMA, P_MIRROR = 0.2, 0.2, 0.15, 0.15, 0.15, 0.5
#: Crop this much larger than the patch before rotating/scaling, so the corners are real data.
CONTEXT = 1.5


class PatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``dataset[i]`` -> ``(image (1, pz, py, px) float32, labels (1, pz, py, px) int64)`` for global index ``i``."""

    def __init__(
        self,
        cache_dir: Path,
        case_names: list[str],
        patch_size: tuple[int, int, int],
        *,
        seed: int,
        foreground_fraction: float,
        augment: bool,
        pad_value: float,
        mirror_axes: tuple[int, ...] = (0, 1, 2),
        length: int = 1 << 62,
    ) -> None:
        self.cache_dir, self.case_names = Path(cache_dir), list(case_names)
        self.patch = np.array(patch_size)
        self.seed, self.fg_fraction, self.augment, self.pad_value = seed, foreground_fraction, augment, pad_value
        self.length, self.mirror_axes = length, tuple(mirror_axes)
        self._cases: dict[str, CachedCase] = {}

    def __len__(self) -> int:
        return self.length

    def _case(self, name: str) -> CachedCase:
        if name not in self._cases:  # opened lazily, once per worker process
            self._cases[name] = open_case(self.cache_dir, name)
        return self._cases[name]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(index)])
        case = self._case(self.case_names[int(rng.integers(len(self.case_names)))])
        shape = np.array(case.image.shape)
        classes = [c for c, v in case.foreground.items() if len(v)]
        if classes and rng.random() < self.fg_fraction:
            coords = case.foreground[int(rng.choice(classes))]
            centre = coords[int(rng.integers(len(coords)))].astype(np.float64)
        else:
            centre = np.array([rng.uniform(0, n) for n in shape])
        spatial = self.augment and (rng.random() < P_ROTATE or rng.random() < P_SCALE)
        size = np.ceil(self.patch * (CONTEXT if spatial else 1.0)).astype(int)
        image, labels = _crop(case, centre, size, self.pad_value)
        if spatial:
            image, labels = _rotate_scale(image, labels, self.patch, rng)
        if self.augment:
            image, labels = _mirror(image, labels, rng, self.mirror_axes)
            image = _intensity(image, rng)
        return image[None], labels[None].long()


def _crop(
    case: CachedCase, centre: np.ndarray, size: np.ndarray, pad_value: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``size`` box centred on ``centre`` (padded where it leaves the volume)."""
    shape = np.array(case.image.shape)
    start = np.round(centre - size / 2).astype(int)
    start = np.clip(start, -size // 2, np.maximum(shape - size + size // 2, 0))
    lo, hi = np.maximum(start, 0), np.minimum(start + size, shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    image = np.full(size, pad_value, np.float32)
    labels = np.zeros(size, np.uint8)
    dst = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start, strict=True))
    image[dst] = case.image[sl]
    labels[dst] = case.labels[sl]
    return torch.from_numpy(image), torch.from_numpy(labels)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    angles = np.radians(rng.uniform(-ROTATION_DEG, ROTATION_DEG, 3))
    out = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = out @ r
    return out


def _rotate_scale(
    image: torch.Tensor, labels: torch.Tensor, patch: np.ndarray, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate and scale about the crop centre, sampling a ``patch``-sized output."""
    size = np.array(image.shape)
    matrix = _rotation(rng) * rng.uniform(*SCALE_RANGE)
    # affine_grid works in normalised [-1, 1] coordinates of the input, with (x, y, z) order.
    out_to_in = matrix * (patch[:, None] / size[None, :]).T
    theta = torch.zeros(1, 3, 4)
    theta[0, :, :3] = torch.from_numpy(out_to_in[::-1, ::-1].copy())
    grid = F.affine_grid(theta, [1, 1, *patch.tolist()], align_corners=False)
    img = F.grid_sample(image[None, None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    lab = F.grid_sample(labels[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return img[0, 0], lab[0, 0].to(torch.uint8)


def _mirror(
    image: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator, allowed: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    draws = [rng.random() < P_MIRROR for _ in range(3)]  # always three draws: the stream does not depend on config
    axes = [a for a in range(3) if draws[a] and a in allowed]
    if axes:
        image, labels = torch.flip(image, axes), torch.flip(labels, axes)
    return image, labels


def _intensity(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    if rng.random() < P_NOISE:
        gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
        image = image + torch.randn(image.shape, generator=gen) * float(rng.uniform(0.0, 0.1))
    if rng.random() < P_CONTRAST:
        mean = image.mean()
        image = (image - mean) * float(rng.uniform(0.75, 1.25)) + mean
    if rng.random() < P_GAMMA:
        lo, hi = image.min(), image.max()
        rangev = (hi - lo).clamp_min(1e-6)
        image = ((image - lo) / rangev) ** float(rng.uniform(0.7, 1.5)) * rangev + lo
    return image


class StepSampler(Sampler[int]):
    """Global sample indices for one rank from ``start_step`` on: step s, rank r gets
    ``s * global_batch + r * local_batch + [0, local_batch)``. Resuming at a step continues the same sequence."""

    def __init__(self, start_step: int, total_steps: int, local_batch: int, rank: int, world_size: int) -> None:
        self.start, self.total, self.local, self.rank, self.world = (
            start_step,
            total_steps,
            local_batch,
            rank,
            world_size,
        )

    def __iter__(self) -> Iterator[int]:
        global_batch = self.local * self.world
        for step in range(self.start, self.total):
            first = step * global_batch + self.rank * self.local
            yield from range(first, first + self.local)

    def __len__(self) -> int:
        return max(0, self.total - self.start) * self.local
