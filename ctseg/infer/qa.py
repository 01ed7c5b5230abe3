"""Input QA gate: before predicting, check that the input looks like raw HU CT on a sane grid.

Other tools silently produce wrong masks on rescaled input (a PNG-like 0..255 volume, a 0..1 normalised one, MR
data); here such input is refused with the reason, and doubtful input gets warnings that go into the manifest.
"""

from __future__ import annotations

import numpy as np

from ctseg.errors import InputQAError
from ctseg.volume import Volume

#: Raw CT has air: its 1st percentile is far below this.
AIR_PERCENTILE_MAX_HU = -500.0
#: No CT voxel is above this (metal reaches ~30000 with extended-range scanners).
MAX_HU = 32767.0
#: Plausible voxel spacing range (mm).
MIN_SPACING_MM, MAX_SPACING_MM = 0.1, 12.0
#: Fraction of voxels denser than fat: below this, the body is nearly absent (a scout, an empty FOV).
MIN_BODY_FRACTION = 0.005
#: Sample at most this many voxels for the percentiles (fast on 1000-slice volumes).
SAMPLE = 2_000_000


def check_ct_input(volume: Volume) -> list[str]:
    """Refuse input that is clearly not raw HU CT; return warnings for doubtful input.

    Raises
    ------
    InputQAError
        When the intensities look rescaled/normalised or out of the CT range.
    """
    arr = np.asarray(volume.array)
    flat = arr.reshape(-1)
    if flat.size > SAMPLE:
        flat = flat[:: flat.size // SAMPLE]
    flat = flat.astype(np.float32)
    if not np.isfinite(flat).all():
        raise InputQAError("input has NaN/Inf voxels; expected raw HU CT. Replace them (e.g. with -1024 HU)")
    p1, p50, p99 = np.percentile(flat, [1, 50, 99])
    lo, hi = float(flat.min()), float(flat.max())
    if p1 > AIR_PERCENTILE_MAX_HU:
        raise InputQAError(
            f"intensities {lo:.4g}..{hi:.4g} (1st percentile {p1:.4g}) have no air near -1000 HU; the input looks "
            "rescaled or normalised, not raw HU CT. Use the original DICOM or an HU NIfTI (ctseg convert)"
        )
    if hi > MAX_HU:
        raise InputQAError(f"maximum {hi:.0f} is above the CT range ({MAX_HU:.0f} HU); expected raw HU CT")
    warnings = []
    spacing = volume.geometry.spacing_mm
    if min(spacing) < MIN_SPACING_MM or max(spacing) > MAX_SPACING_MM:
        warnings.append(f"unusual voxel spacing {tuple(round(s, 3) for s in spacing)} mm")
    if float((flat > -200).mean()) < MIN_BODY_FRACTION:
        warnings.append("almost no tissue denser than fat in the field of view")
    d = volume.geometry.direction_matrix
    # The most-aligned axis of each array axis should be within 45 degrees of a patient axis.
    if np.abs(d).max(axis=0).min() < np.cos(np.radians(45)):
        warnings.append("the grid is more than 45 degrees oblique to the patient axes")
    if p99 < 0:
        warnings.append(f"99th percentile {p99:.0f} HU is below water: check the rescale slope/intercept")
    return warnings
