"""DICOM headers -> 2D slices: one per classic image, one per frame of an enhanced multi-frame image."""

from __future__ import annotations

from typing import Any

from ctseg.io.dicom.discover import SECONDARY_CAPTURE_SOP_PREFIX, DicomFile, SeriesGroup
from ctseg.io.dicom.plan import SliceRef


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _lut(item: object, default: tuple[float, float]) -> tuple[float, float]:
    slope = getattr(item, "RescaleSlope", None)
    intercept = getattr(item, "RescaleIntercept", None)
    return (
        float(slope) if slope not in (None, "") else default[0],
        float(intercept) if intercept not in (None, "") else default[1],
    )


def _functional(ds: Any, frame: int, seq: str, attr: str) -> Any:
    """An attribute from a per-frame functional group, falling back to the shared one."""
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    for item in (per_frame[frame] if per_frame else None, shared[0] if shared else None):
        sub = getattr(item, seq, None) if item is not None else None
        if sub:
            value = getattr(sub[0], attr, None) if attr else sub[0]
            if value is not None:
                return value
    return None


def slices_of(f: DicomFile) -> list[SliceRef]:
    """The 2D slices of a file: one for a classic image, one per frame for an enhanced multi-frame image."""
    ds = f.header
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    localizer = "LOCALIZER" in image_type
    secondary = f.sop_class.startswith(SECONDARY_CAPTURE_SOP_PREFIX) or int(ds.get("SamplesPerPixel", 1) or 1) > 1
    acquisition = str(ds.get("AcquisitionNumber", "") or "")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" not in ds and "SharedFunctionalGroupsSequence" not in ds:
        return [
            SliceRef(
                f,
                0,
                _floats(ds.get("ImagePositionPatient"), 3),
                _floats(ds.get("ImageOrientationPatient"), 6),
                _floats(ds.get("PixelSpacing"), 2),
                rows,
                cols,
                *_lut(ds, (1.0, 0.0)),
                localizer,
                secondary,
                acquisition,
            )  # type: ignore[arg-type]
        ]
    out = []
    base_lut = _lut(ds, (1.0, 0.0))
    for k in range(n_frames):
        lut_item = _functional(ds, k, "PixelValueTransformationSequence", "")
        out.append(
            SliceRef(
                f,
                k,
                _floats(_functional(ds, k, "PlanePositionSequence", "ImagePositionPatient"), 3),  # type: ignore[arg-type]
                _floats(_functional(ds, k, "PlaneOrientationSequence", "ImageOrientationPatient"), 6),
                _floats(_functional(ds, k, "PixelMeasuresSequence", "PixelSpacing"), 2),  # type: ignore[arg-type]
                rows,
                cols,
                *(_lut(lut_item, base_lut) if lut_item is not None else base_lut),
                localizer,
                secondary,
                acquisition,
            )
        )
    return out


def series_label(group: SeriesGroup) -> str:
    """A short, non-identifying name for messages: series number and description."""
    ds = group.first
    number = ds.get("SeriesNumber", "")
    desc = str(ds.get("SeriesDescription", "") or "").strip()
    return f"series {number if number not in (None, '') else '?'}" + (f" '{desc}'" if desc else "")
