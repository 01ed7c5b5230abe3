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


#: Most voxels a volume may have once resampled to the model's spacing (4 GB as float32); a CT at 0.5 mm over a
#: 2 m body has about 10**9 / 16 at 1.5 mm, so more is a wrong spacing in the header, not anatomy.
MAX_WORK_VOXELS = 1_000_000_000


def check_work_size(volume: Volume, spacing_mm: tuple[float, float, float]) -> None:
    """Refuse a volume whose grid, resampled to ``spacing_mm``, exceeds :data:`MAX_WORK_VOXELS` or is under a voxel.

    Raises
    ------
    InputQAError
        Naming the input's spacing and extent: a header spacing of e.g. 500 mm would otherwise ask for terabytes,
        one of 0.01 mm shrinks the whole volume below one voxel of the model.
    """
    g = volume.geometry
    extent_mm = [n * s for n, s in zip(g.shape, g.spacing_mm, strict=True)]
    sizes = [e / t for e, t in zip(extent_mm, spacing_mm, strict=True)]
    if min(sizes) < 1.0:
        raise InputQAError(
            f"voxel spacing {tuple(round(s, 4) for s in g.spacing_mm)} mm makes the {g.shape} grid "
            f"{tuple(round(e, 3) for e in extent_mm)} mm long, less than one voxel at the model's spacing "
            f"{tuple(spacing_mm)} mm; check the spacing in the file's header"
        )
    voxels = float(np.prod(sizes))
    if voxels > MAX_WORK_VOXELS:
        raise InputQAError(
            f"voxel spacing {tuple(round(s, 4) for s in g.spacing_mm)} mm makes the {g.shape} grid "
            f"{tuple(round(e) for e in extent_mm)} mm long, {voxels:.3g} voxels at the model's spacing "
            f"{tuple(spacing_mm)} mm (limit {MAX_WORK_VOXELS:.0e}); check the spacing in the file's header"
        )
