"""The one definition of "the network's input" for a :class:`~ctseg.config.PreprocessConfig`.

Training (cache building) and inference both call these, so a model always sees what it was trained on.
"""

from __future__ import annotations

import numpy as np

from ctseg.config import PreprocessConfig
from ctseg.errors import ConfigError
from ctseg.preprocess.intensity import IntensityStats, apply_window, apply_zscore
from ctseg.preprocess.spatial import resample_to_spacing
from ctseg.volume import Volume

NORMALIZATIONS = ("window", "zscore")


def normalize(volume: Volume, config: PreprocessConfig) -> Volume:
    """HU -> network intensities (float32), by window or percentile z-score.

    Raises
    ------
    ConfigError
        For an unknown normalisation.
    """
    if config.normalization == "window":
        return apply_window(volume, config.window_level_hu, config.window_width_hu)
    if config.normalization == "zscore":
        stats = IntensityStats(config.clip_lower_hu, config.clip_upper_hu, config.mean_hu, config.std_hu)
        return apply_zscore(volume, stats)
    raise ConfigError(f"unknown preprocess.normalization {config.normalization!r}; expected one of {NORMALIZATIONS}")


def background_value(config: PreprocessConfig) -> float:
    """The normalised value of air (-1024 HU): what padding outside the image should hold."""
    air = np.full((1, 1, 1), -1024.0, np.float32)
    from ctseg.volume import Geometry

    return float(normalize(Volume(air, Geometry((1, 1, 1))), config).array.ravel()[0])


def _oriented(volume: Volume, config: PreprocessConfig) -> Volume:
    # A lossless axis permutation/flip: a prone, a flipped-x and an axial scan all reach the network S-P-L ordered.
    return volume.to_closest_canonical() if config.reorient else volume


def preprocess_image(volume: Volume, config: PreprocessConfig) -> Volume:
    """Reorient (optional), resample a HU volume to the target spacing (linear) and normalise: float32."""
    resampled = resample_to_spacing(_oriented(volume, config), config.target_spacing_mm, order="linear")
    return normalize(resampled, config)


def preprocess_labels(labels: Volume, config: PreprocessConfig) -> Volume:
    """The same reorientation and resampling for a label map (per-label linear, then arg-max): the image's grid."""
    return resample_to_spacing(_oriented(labels, config), config.target_spacing_mm, order="onehot")
