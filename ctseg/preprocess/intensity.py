"""HU intensity transforms: window/level with named presets, and nnU-Net-style percentile clip + z-score.

Window/level is three in-place passes over one float32 output buffer (shift, scale, clip), which measured within
1.2x of a bare in-place numpy clip-and-scale and 8x faster than MONAI ``ScaleIntensityRange``
(``benchmarks/ingest.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ctseg.errors import ConfigError
from ctseg.volume import Volume

#: Named windows as (level, width) in HU.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 160.0),
}

#: nnU-Net's CT normalisation clips to these foreground percentiles before the z-score.
LOWER_PERCENTILE = 0.5
UPPER_PERCENTILE = 99.5
#: Voxels above this HU count as foreground (body) when no mask is given; air is about -1000.
FOREGROUND_MIN_HU = -500.0
#: Voxels sampled per volume for dataset statistics (keeps memory flat on big cohorts).
SAMPLES_PER_VOLUME = 200_000


def window_preset(name: str) -> tuple[float, float]:
    """(level, width) in HU of a named preset.

    Raises
    ------
    ConfigError
        For an unknown name; the message lists the known ones.

    Examples
    --------
    >>> window_preset("lung")
    (-600.0, 1500.0)
    """
    try:
        return WINDOW_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown window preset {name!r}; expected one of {', '.join(WINDOW_PRESETS)}") from None


def apply_window(volume: Volume, level_hu: float, width_hu: float) -> Volume:
    """Clip HU to ``[level - width/2, level + width/2]`` and scale to ``[0, 1]``.

    Parameters
    ----------
    volume
        ``(Z, Y, X)`` HU, any numeric dtype.
    level_hu, width_hu
        Window centre and width in HU; ``width_hu > 0``.

    Returns
    -------
    Volume
        ``(Z, Y, X)`` float32 in ``[0, 1]`` on the same geometry.

    Raises
    ------
    ConfigError
        If ``width_hu <= 0``.

    Examples
    --------
    >>> from ctseg.volume import Geometry
    >>> v = Volume(np.array([[[-1000, 40, 240, 3000]]], np.int16), Geometry((1, 1, 4)))
    >>> apply_window(v, 40, 400).array.tolist()
    [[[0.0, 0.5, 1.0, 1.0]]]
    """
    if not width_hu > 0:
        raise ConfigError(f"window width must be > 0 HU, got {width_hu}")
    lo = level_hu - width_hu / 2.0
    # (HU - lo) / width: exact at the window's edges, unlike a pre-multiplied scale and offset.
    out = np.subtract(volume.array, np.float32(lo), dtype=np.float32)
    out /= np.float32(width_hu)
    np.clip(out, 0.0, 1.0, out=out)
    return volume.with_array(out)


@dataclass(frozen=True)
class IntensityStats:
    """Dataset foreground intensity statistics (HU) for percentile clipping and z-scoring."""

    lower_hu: float
    upper_hu: float
    mean_hu: float
    std_hu: float


def compute_intensity_stats(
    volumes: Iterable[Volume],
    masks: Iterable[np.ndarray | None] | None = None,
    *,
    seed: int = 0,
) -> IntensityStats:
    """Foreground statistics over a dataset, as nnU-Net computes them for CT.

    Foreground is the label mask (``> 0``) when given, else voxels above ``FOREGROUND_MIN_HU``. Up to
    ``SAMPLES_PER_VOLUME`` foreground voxels per volume are sampled (seeded), pooled, and their 0.5/99.5 percentiles,
    mean and standard deviation (after clipping) returned.

    Raises
    ------
    ConfigError
        If no foreground voxel is found.
    """
    rng = np.random.default_rng(seed)
    mask_iter = iter(masks) if masks is not None else None
    pooled = []
    for vol in volumes:
        mask = next(mask_iter, None) if mask_iter is not None else None
        arr = np.asarray(vol.array)
        fg = arr[mask > 0] if mask is not None else arr[arr > FOREGROUND_MIN_HU]
        if fg.size > SAMPLES_PER_VOLUME:
            fg = rng.choice(fg, SAMPLES_PER_VOLUME, replace=False)
        pooled.append(fg.astype(np.float32))
    values = np.concatenate(pooled) if pooled else np.empty(0, np.float32)
    if values.size == 0:
        raise ConfigError("no foreground voxels found for intensity statistics; check that the images are HU CT")
    lower, upper = np.percentile(values, [LOWER_PERCENTILE, UPPER_PERCENTILE])
    clipped = np.clip(values, lower, upper)
    return IntensityStats(float(lower), float(upper), float(clipped.mean()), float(max(clipped.std(), 1e-6)))


def apply_zscore(volume: Volume, stats: IntensityStats) -> Volume:
    """Clip HU to ``[stats.lower_hu, stats.upper_hu]`` and z-score with the dataset mean and std.

    Returns
    -------
    Volume
        ``(Z, Y, X)`` float32 on the same geometry.
    """
    out = np.clip(volume.array, stats.lower_hu, stats.upper_hu).astype(np.float32, copy=False)
    out -= np.float32(stats.mean_hu)
    out *= np.float32(1.0 / stats.std_hu)
    return volume.with_array(out)
