"""Pure ``Volume -> Volume`` preprocessing: intensity windows and normalisation, resampling."""

from ctseg.preprocess.intensity import (
    WINDOW_PRESETS,
    IntensityStats,
    apply_window,
    apply_zscore,
    compute_intensity_stats,
    window_preset,
)
from ctseg.preprocess.spatial import resample_to, resample_to_spacing, spacing_grid

__all__ = [
    "WINDOW_PRESETS",
    "IntensityStats",
    "apply_window",
    "apply_zscore",
    "compute_intensity_stats",
    "resample_to",
    "resample_to_spacing",
    "spacing_grid",
    "window_preset",
]
