"""DICOM Segmentation (SEG) -> label :class:`~ctseg.volume.Volume`, each frame placed by its world position.

Reading uses pydicom (highdicom cannot parse big-endian files): BINARY, FRACTIONAL (a pixel is in a segment when its
value is at least half of MaximumFractionalValue) and LABELMAP. Where segments overlap, the highest segment number
wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.errors import DicomSegError
from ctseg.io.dicom_seg.grid import GRID_TOL_MM, MAX_LABEL, Plane, place, view
from ctseg.volume import Geometry, Volume

#: Segmentation Storage and Label Map Segmentation Storage.
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
#: A FRACTIONAL pixel belongs to its segment when value >= this fraction of MaximumFractionalValue.
FRACTION_THRESHOLD = 0.5


def _item(ds: Any, frame: int, sequence: str) -> Any:
    """The item of functional-group ``sequence`` for ``frame`` (0-based): per-frame, else shared; None if absent."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    for group in ([per_frame[frame]] if frame < len(per_frame) else []) + list(shared[:1]):
        items = group.get(sequence)
        if items:
            return items[0]
    return None


def _frame_plane(ds: Any, frame: int) -> Plane:
    position = _item(ds, frame, "PlanePositionSequence")
    orientation = _item(ds, frame, "PlaneOrientationSequence")
    measures = _item(ds, frame, "PixelMeasuresSequence")
    if position is None or orientation is None or measures is None or "PixelSpacing" not in measures:
        raise DicomSegError(
            f"SEG frame {frame + 1} has no plane position, orientation or pixel spacing; "
            "only SEGs of patient-space images (CT, MR) can be read"
        )
    iop = np.asarray(orientation.ImageOrientationPatient, float)
    return Plane(
        np.asarray(position.ImagePositionPatient, float),
        iop[:3],
        iop[3:],
        (float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1])),
        (int(ds.Rows), int(ds.Columns)),
    )


def _geometry_from_planes(planes: Sequence[Plane], step_hint_mm: float | None) -> Geometry:
    """The grid of a stack of parallel, aligned frames, sorted along the normal (frames may skip grid planes)."""
    first = planes[0]
    if any(
        not np.allclose(np.r_[p.row_cos, p.col_cos], np.r_[first.row_cos, first.col_cos], atol=1e-4)
        or not np.allclose(p.spacing, first.spacing, atol=1e-4)
        for p in planes
    ):
        raise DicomSegError("SEG frames differ in orientation or pixel spacing; pass the source geometry to read it")
    u, _, vt = np.linalg.svd(np.stack([np.cross(first.row_cos, first.col_cos), first.col_cos, first.row_cos], 1))
    direction = u @ vt  # DICOM cosines carry ~6 digits; re-orthonormalise as the series reader does
    ipps = np.stack([p.ipp for p in planes])
    along = ipps @ direction
    if np.ptp(along[:, 1:], axis=0).max() > GRID_TOL_MM:
        raise DicomSegError("SEG frames are shifted in plane against each other; pass the source geometry to read it")
    levels = np.unique(np.round(along[:, 0] / GRID_TOL_MM)) * GRID_TOL_MM
    steps = np.diff(levels)
    # The stated spacing first; else the smallest step (empty frames may be omitted, so steps can be multiples).
    for step in [s for s in (step_hint_mm, float(steps.min()) if steps.size else 1.0) if s]:
        counts = (levels - levels[0]) / step
        if np.abs(counts - np.round(counts)).max() * step <= GRID_TOL_MM:
            break
    else:
        raise DicomSegError(
            f"SEG frame positions {levels.round(3).tolist()} mm along the normal are not on one "
            "regular grid; pass the source geometry to read it"
        )
    origin = ipps[int(np.argmin(along[:, 0]))]
    shape = (int(np.round(counts[-1])) + 1, first.size[0], first.size[1])
    return Geometry(shape, (step, *first.spacing), tuple(origin), tuple(map(tuple, direction)))


def read_dicom_seg(path: Path, geometry: Geometry | None = None) -> tuple[Volume, dict[int, str]]:
    """Read a DICOM SEG (BINARY, FRACTIONAL or LABELMAP) as a label map; label value = segment number.

    Parameters
    ----------
    path
        The SEG file (any transfer syntax pydicom decodes, big endian included).
    geometry
        The grid to read onto, e.g. the source CT's ``read_dicom(...).volume.geometry``; each frame is placed by
        its world position. By default, the grid of the SEG's own frames, sorted along the slice normal.

    Returns
    -------
    tuple[Volume, dict[int, str]]
        ``(Z, Y, X)`` uint8 labels (overlaps: the highest segment number wins; FRACTIONAL: value >=
        half the maximum) and segment number -> SegmentLabel.

    Raises
    ------
    DicomSegError
        If the file is not a SEG, has segment numbers over 255, or a frame is not on ``geometry`` (or, without
        one, the frames do not form a regular stack).
    """
    import pydicom

    ds = pydicom.dcmread(Path(path))
    sop = str(ds.get("SOPClassUID", ""))
    if sop not in SEG_SOP_CLASSES:
        raise DicomSegError(
            f"{Path(path).name} is not a DICOM SEG (SOP class {sop or 'missing'}, modality "
            f"{ds.get('Modality', '?')}); expected Segmentation Storage"
        )
    names = {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in ds.SegmentSequence}
    names.pop(0, None)  # a LABELMAP SEG's background
    if max(names, default=0) > MAX_LABEL:
        raise DicomSegError(f"segment number {max(names)} does not fit a uint8 label map (max {MAX_LABEL})")
    pixels = ds.pixel_array.reshape(int(ds.get("NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns))
    planes = [_frame_plane(ds, f) for f in range(len(pixels))]
    labelmap = sop == SEG_SOP_CLASSES[1] or ds.get("SegmentationType") == "LABELMAP"
    if ds.get("SegmentationType") == "FRACTIONAL":
        pixels = pixels >= FRACTION_THRESHOLD * float(ds.MaximumFractionalValue)
    numbers = [
        0 if labelmap else int(_item(ds, f, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        for f in range(len(pixels))
    ]
    if geometry is None:
        hint = _item(ds, 0, "PixelMeasuresSequence").get("SpacingBetweenSlices")
        geometry = _geometry_from_planes(planes, float(hint) if hint else None)
    out = np.zeros(geometry.shape, np.uint8)
    for f in sorted(range(len(pixels)), key=lambda f: numbers[f]):  # ascending: the highest number wins
        where = place(geometry, planes[f])
        if where is None:
            raise DicomSegError(
                f"SEG frame {f + 1} at IPP {np.round(planes[f].ipp, 3).tolist()} does not lie on the "
                f"grid {geometry} (tolerance {GRID_TOL_MM} mm); pass the geometry of the SEG's "
                "source series, or none to use the SEG's own"
            )
        region, frame = view(out, where), pixels[f]
        if labelmap:
            region[frame != 0] = frame[frame != 0]
        else:
            region[frame != 0] = numbers[f]
    return Volume(out, geometry), names
