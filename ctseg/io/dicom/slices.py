"""DICOM headers -> 2D slices: one per classic image, one per frame of an enhanced multi-frame image.

The geometry and modality-LUT values read here are range-checked, all slices at once, by
:func:`invalid_slice_value`: a NaN, an infinite or a zero value in them is damage or a bad export, never data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ctseg.io.dicom.discover import SECONDARY_CAPTURE_SOP_PREFIX, DicomFile, SeriesGroup
from ctseg.io.dicom.fast_header import FastHeader
from ctseg.io.dicom.plan import SliceRef

#: Largest |ImagePositionPatient| coordinate accepted (mm): 1 km, far outside any scanner's frame of reference.
MAX_ABS_POSITION_MM = 1e6
#: Accepted PixelSpacing (mm): from 0.1 micrometre to 1 m, bounds no real image comes near.
PIXEL_SPACING_RANGE_MM = (1e-4, 1e3)
#: Row and column cosines must be unit vectors within this, and this close to perpendicular (|cos angle|).
COSINE_TOL = 0.05


class _Unparsable:
    """A tag that is present but whose text is not a number (pydicom raises when it converts it)."""


_UNPARSABLE = _Unparsable()


def _get(item: object, keyword: str, default: object = None) -> Any:
    """A tag's value; :data:`_UNPARSABLE` when converting it fails (e.g. ``"abc"`` in a DS read by pydicom)."""
    try:
        return getattr(item, keyword, default)
    except (ValueError, TypeError, OverflowError):
        return _UNPARSABLE


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    """``n`` floats; NaNs when the tag holds text that is not numbers (refused by the value check); None if absent."""
    if value is None or value == "":
        return None
    if value is _UNPARSABLE:
        return (float("nan"),) * n
    try:
        single = isinstance(value, str | bytes | int | float)  # one value (pydicom's DSfloat is a float)
        out = tuple(float(v) for v in ([value] if single else value))  # type: ignore[arg-type, attr-defined]
    except (TypeError, ValueError):  # text that is not numbers (pydicom may keep it as str)
        return (float("nan"),) * n
    return out if len(out) == n else None


def _number(value: object, default: float) -> float:
    """A DS value as float: ``default`` when absent or blank, NaN when not a number (refused by the value check)."""
    if value is None or value == "":
        return default
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _count(value: object, default: int) -> int:
    """An IS/US count: ``default`` when absent or blank, -1 when not an integer (refused by the value check)."""
    if value is None or value == "":
        return default
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return -1


def _lut(item: object, default: tuple[float, float]) -> tuple[float, float]:
    return (
        _number(_get(item, "RescaleSlope"), default[0]),
        _number(_get(item, "RescaleIntercept"), default[1]),
    )


def _functional(ds: Any, frame: int, seq: str, attr: str) -> Any:
    """An attribute from a per-frame functional group, falling back to the shared one."""
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    for item in (per_frame[frame] if per_frame else None, shared[0] if shared else None):
        sub = getattr(item, seq, None) if item is not None else None
        if sub:
            value = _get(sub[0], attr) if attr else sub[0]
            if value is not None:
                return value
    return None


def _fast_floats(value: object, n: int) -> tuple[float, ...] | None:
    """:func:`_floats` for a :class:`FastHeader` value: its multi-valued DS is already a list of float."""
    if type(value) is list and len(value) == n:
        return tuple(value)
    return _floats(value, n)


#: The keywords :func:`_classic_fast` reads; all are converted while parsing (:data:`fast_header.PER_FILE`).
FAST_SLICE_KEYWORDS = (
    "ImageType SamplesPerPixel RescaleSlope RescaleIntercept ImagePositionPatient ImageOrientationPatient "
    "PixelSpacing Rows Columns AcquisitionNumber"
).split()


def _classic_fast(f: DicomFile, values: dict[str, Any]) -> list[SliceRef]:
    """:func:`slices_of` for a header parsed by :mod:`fast_header` (one classic image; values already converted).

    The same result as the generic path, without an attribute lookup per tag (this runs once per file of a scan).
    """
    get = values.get
    image_type = get("ImageType") or ()
    localizer = "LOCALIZER" in (
        (image_type.upper(),) if isinstance(image_type, str) else [str(v).upper() for v in image_type]
    )
    secondary = f.sop_class.startswith(SECONDARY_CAPTURE_SOP_PREFIX) or _count(get("SamplesPerPixel"), 1) > 1
    slope, intercept = _number(get("RescaleSlope"), 1.0), _number(get("RescaleIntercept"), 0.0)
    return [
        SliceRef(
            f,
            0,
            _fast_floats(get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
            _fast_floats(get("ImageOrientationPatient"), 6),  # type: ignore[arg-type]
            _fast_floats(get("PixelSpacing"), 2),  # type: ignore[arg-type]
            _count(get("Rows"), 0),
            _count(get("Columns"), 0),
            slope,
            intercept,
            localizer,
            secondary,
            str(get("AcquisitionNumber", "") or ""),
        )
    ]


def slices_of(f: DicomFile) -> list[SliceRef]:
    """The 2D slices of a file: one for a classic image, one per frame for an enhanced multi-frame image."""
    ds = f.header
    if type(ds) is FastHeader:  # the common case: multi-frame and functional groups are left to pydicom
        return _classic_fast(f, ds._values)  # every keyword it reads is in fast_header.PER_FILE (tested)
    image_type = ds.get("ImageType") or []
    image_type = [str(image_type).upper()] if isinstance(image_type, str) else [str(v).upper() for v in image_type]
    localizer = "LOCALIZER" in image_type
    secondary = f.sop_class.startswith(SECONDARY_CAPTURE_SOP_PREFIX) or _count(_get(ds, "SamplesPerPixel"), 1) > 1
    acquisition = str(_get(ds, "AcquisitionNumber", "") or "")
    rows, cols = _count(_get(ds, "Rows"), 0), _count(_get(ds, "Columns"), 0)
    n_frames = max(1, _count(_get(ds, "NumberOfFrames"), 1))
    if "PerFrameFunctionalGroupsSequence" not in ds and "SharedFunctionalGroupsSequence" not in ds:
        return [
            SliceRef(
                f,
                0,
                _floats(_get(ds, "ImagePositionPatient"), 3),
                _floats(_get(ds, "ImageOrientationPatient"), 6),
                _floats(_get(ds, "PixelSpacing"), 2),
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
    number = _get(ds, "SeriesNumber", "")
    number = "?" if number is _UNPARSABLE else number
    desc = str(ds.get("SeriesDescription", "") or "").strip()
    return f"series {number if number not in (None, '') else '?'}" + (f" '{desc}'" if desc else "")


def _first_bad(ok: np.ndarray, slices: Sequence[SliceRef], tag: str, values: np.ndarray, expected: str) -> str | None:
    """The message for the first slice where ``ok`` is False, else None."""
    bad = np.flatnonzero(~ok)
    if not bad.size:
        return None
    k = int(bad[0])
    shown = np.round(values[k], 6).tolist()
    more = f" (and {bad.size - 1} other slice(s))" if bad.size > 1 else ""
    return (
        f"{tag} of {slices[k].file.path.name} is {shown}{more}; expected {expected}. The header is damaged or badly "
        "exported: fix it or remove the file"
    )


def invalid_slice_value(slices: Sequence[SliceRef]) -> str | None:
    """The first out-of-range geometry or modality-LUT value among ``slices``, in words; ``None`` when all are valid.

    Checked, vectorised over the slices: ImagePositionPatient finite and within :data:`MAX_ABS_POSITION_MM`;
    ImageOrientationPatient two finite unit cosines that are not parallel (:data:`COSINE_TOL`); PixelSpacing
    within :data:`PIXEL_SPACING_RANGE_MM`; Rows and Columns at least 1; RescaleSlope finite and non-zero,
    RescaleIntercept finite. Every slice must already carry position, orientation and pixel spacing.
    """
    pos = np.array([s.position for s in slices], dtype=np.float64)
    iop = np.array([s.orientation for s in slices], dtype=np.float64)
    spacing = np.array([s.pixel_spacing for s in slices], dtype=np.float64)
    size = np.array([(s.rows, s.cols) for s in slices], dtype=np.int64)
    lut = np.array([(s.slope, s.intercept) for s in slices], dtype=np.float64)
    with np.errstate(all="ignore"):  # NaN and inf are what is being looked for
        row, col = iop[:, :3], iop[:, 3:]
        norms = np.stack([np.linalg.norm(row, axis=1), np.linalg.norm(col, axis=1)], axis=1)
        unit = np.all(np.abs(norms - 1.0) <= COSINE_TOL, axis=1)
        perpendicular = np.abs(np.einsum("ij,ij->i", row, col)) <= COSINE_TOL
        lo, hi = PIXEL_SPACING_RANGE_MM
        checks = (
            (
                np.all(np.abs(pos) <= MAX_ABS_POSITION_MM, axis=1),
                "ImagePositionPatient",
                pos,
                f"3 finite numbers within +-{MAX_ABS_POSITION_MM:g} mm",
            ),
            (
                np.isfinite(iop).all(axis=1) & unit & perpendicular,
                "ImageOrientationPatient",
                iop,
                f"two perpendicular unit cosines (row, column; tolerance {COSINE_TOL})",
            ),
            (
                np.all((spacing >= lo) & (spacing <= hi), axis=1),
                "PixelSpacing",
                spacing,
                f"2 numbers within {lo:g}..{hi:g} mm",
            ),
            (np.all(size >= 1, axis=1), "Rows, Columns", size, "at least 1 each"),
            (np.isfinite(lut[:, 0]) & (lut[:, 0] != 0), "RescaleSlope", lut[:, 0], "a finite, non-zero number"),
            (np.isfinite(lut[:, 1]), "RescaleIntercept", lut[:, 1], "a finite number"),
        )
    for ok, tag, values, expected in checks:
        message = _first_bad(ok, slices, tag, values, expected)
        if message is not None:
            return message
    return None
