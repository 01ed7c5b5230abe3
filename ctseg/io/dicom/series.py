"""Series checks: from a group of DICOM files to a checked, sorted stack plan (no pixel data read).

Every check has a reason code (:class:`~ctseg.errors.SeriesReason`). A check either *skips* slices with a warning
(localizers, secondary captures inside a series), *corrects* with a warning (gantry tilt, non-uniform spacing: the
stack is resampled onto an orthogonal, uniform grid in :mod:`ctseg.io.dicom.stack`), or *refuses* with a
:class:`~ctseg.errors.DicomSeriesError` (missing slices, duplicate positions, mixed orientation/size/spacing, too
few slices, non-CT modality). Slices are sorted by their position along the slice normal, never by InstanceNumber
or file name.

No patient-identifying value (name, ID, birth date, accession) is read into a plan, logged or put in a message.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from ctseg.errors import DicomSeriesError, SeriesReason
from ctseg.io.dicom.discover import SeriesGroup
from ctseg.io.dicom.pixels import pixel_format_problem
from ctseg.io.dicom.plan import (
    CheckedSeries,
    ReadOptions,
    RejectedSeries,
    SeriesCheck,
    SeriesInfo,
    SeriesWarning,
    SliceRef,
    StackLayout,
)
from ctseg.io.dicom.quiet import ignored_warnings
from ctseg.io.dicom.slices import invalid_slice_value, series_label, slices_of

__all__ = ["plan_series", "series_info"]

log = logging.getLogger(__name__)

#: Orientation cosines that differ by more than this are a different orientation.
ORIENTATION_TOL = 1e-3
#: Pixel spacings that differ by more than this (mm) are inconsistent.
PIXEL_SPACING_TOL_MM = 1e-3
#: Two slices closer than this along the normal are at the same position.
DUPLICATE_TOL_MM = 1e-3
#: Slice steps that vary by more than this (mm) make the spacing non-uniform.
SPACING_TOL_MM = 0.01
#: A step over this multiple of the local typical step is a missing slice (dcm2niix and dicom2nifti use 1.5).
GAP_FACTOR = 1.5
#: Steps on each side used for the local typical step.
GAP_WINDOW = 3
#: In-plane drift between first and last slice (mm) above which the stack is sheared (gantry tilt).
TILT_TOL_MM = 0.01
#: A single slice's thickness above this (mm) is not believed; 1 mm is used instead.
MAX_SINGLE_SLICE_MM = 1000.0
#: Orientation groups this small, differing from the main stack, are localizers/scouts and are skipped.
MAX_LOCALIZER_SLICES = 3


def _orientation_keys(slices: list[SliceRef]) -> list[tuple[int, ...]]:
    """Each slice's orientation rounded to :data:`ORIENTATION_TOL` steps (computed once per distinct orientation)."""
    done: dict[tuple[float, ...] | None, tuple[int, ...]] = {}
    keys = []
    for s in slices:
        key = done.get(s.orientation)
        if key is None:
            key = tuple(np.round(np.asarray(s.orientation or ()) / ORIENTATION_TOL).astype(int).tolist())
            done[s.orientation] = key
        keys.append(key)
    return keys


def _error(info: SeriesInfo, reason: SeriesReason, message: str) -> DicomSeriesError:
    return DicomSeriesError(reason, f"{info.label}: {message}")


def _typical_steps(steps: np.ndarray) -> np.ndarray:
    """Per step, the median of up to GAP_WINDOW steps on each side (itself excluded); one vectorised pass."""
    if len(steps) == 1:
        return steps.copy()
    padded = np.concatenate([np.full(GAP_WINDOW, np.nan), steps, np.full(GAP_WINDOW, np.nan)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * GAP_WINDOW + 1).copy()
    windows[:, GAP_WINDOW] = np.nan
    # np.nanmedian's way, without its numpy.ma import (8 ms of every start): NaNs sort last, so the median of the
    # k finite values of a row is the mean of its sorted entries (k-1)//2 and k//2 (k >= 1 for 2+ steps).
    ordered = np.sort(windows, axis=1)
    k = np.count_nonzero(~np.isnan(windows), axis=1)
    rows = np.arange(len(steps))
    return np.asarray(0.5 * (ordered[rows, (k - 1) // 2] + ordered[rows, k // 2]))


def _uniform_step(steps: np.ndarray) -> float:
    """Target step for a non-uniform stack: the smallest step that occurs at least twice, else the median."""
    rounded = Counter(np.round(steps, 2).tolist())
    common = [s for s, c in rounded.items() if c >= 2]
    if common:
        target = min(common)
        return float(np.median(steps[np.abs(steps - target) <= 0.005 + 1e-9]))
    return float(np.median(steps))


def _image_slices(
    info: SeriesInfo, candidates: list[SliceRef], skipped: list[str]
) -> list[SliceRef] | DicomSeriesError:
    """Skip localizers and secondary captures (noted in ``skipped``); the rest must carry the geometry tags."""
    kept = []
    for s in candidates:
        if s.secondary:
            skipped.append(f"{s.file.path.name}: secondary capture / colour image")
        elif s.localizer:
            skipped.append(f"{s.file.path.name}: localizer (ImageType LOCALIZER)")
        else:
            kept.append(s)
    if not kept:
        if all(s.secondary for s in candidates):
            return _error(
                info,
                SeriesReason.COLOUR_IMAGE,
                f"holds only secondary-capture / colour images ({len(candidates)}), e.g. screenshots; expected CT "
                "slices. Export the original CT series",
            )
        return _error(info, SeriesReason.NOT_IMAGE, "holds only localizer/scout images; expected a CT stack")
    missing = [
        tag
        for tag, attr in (
            ("ImagePositionPatient", "position"),
            ("ImageOrientationPatient", "orientation"),
            ("PixelSpacing", "pixel_spacing"),
        )
        if any(getattr(s, attr) is None for s in kept)
    ]
    if missing:
        return _error(info, SeriesReason.MISSING_TAG, f"slices lack {', '.join(missing)}; the geometry cannot be known")
    invalid = invalid_slice_value(kept)
    if invalid is not None:
        return _error(info, SeriesReason.INVALID_TAG_VALUE, invalid)
    return kept


def _select_slices(
    info: SeriesInfo, candidates: list[SliceRef], skipped: list[str]
) -> list[SliceRef] | DicomSeriesError:
    """The main stack: one orientation (small odd groups are scouts, noted in ``skipped``), size and pixel spacing."""
    kept = _image_slices(info, candidates, skipped)
    if isinstance(kept, DicomSeriesError):
        return kept
    keys = _orientation_keys(kept)
    by_orientation = Counter(keys)
    main_key, main_count = by_orientation.most_common(1)[0]
    others = len(kept) - main_count
    if others:
        if others > MAX_LOCALIZER_SLICES or others >= main_count:
            return _error(
                info,
                SeriesReason.INCONSISTENT_ORIENTATION,
                f"{len(by_orientation)} slice orientations ({main_count} vs {others} slices); expected one. "
                "Export each orientation as its own series",
            )
        for s, key in zip(kept, keys, strict=True):
            if key != main_key:
                skipped.append(f"{s.file.path.name}: orientation differs from the stack (localizer/scout)")
        kept = [s for s, key in zip(kept, keys, strict=True) if key == main_key]
    sizes = Counter((s.rows, s.cols) for s in kept)
    if len(sizes) > 1:
        found = ", ".join(f"{r}x{c} ({n})" for (r, c), n in sizes.items())
        return _error(info, SeriesReason.INCONSISTENT_SIZE, f"slice sizes differ: {found}; expected one matrix size")
    spacings = np.array([s.pixel_spacing for s in kept])
    if np.ptp(spacings, axis=0).max() > PIXEL_SPACING_TOL_MM:
        return _error(
            info,
            SeriesReason.INCONSISTENT_PIXEL_SPACING,
            f"pixel spacing varies {spacings.min():.4f}-{spacings.max():.4f} mm (tol {PIXEL_SPACING_TOL_MM}); "
            "expected one pixel spacing",
        )
    return kept


def _duplicate_error(info: SeriesInfo, slices: list[SliceRef], t: np.ndarray, dup: np.ndarray) -> DicomSeriesError:
    where = float(t[dup[0]])
    acquisitions = {s.acquisition for s in slices}
    if len(acquisitions) > 1:
        return _error(
            info,
            SeriesReason.MIXED_SERIES,
            f"{dup.size} duplicate slice positions (first at {where:.2f} mm along the normal) from "
            f"{len(acquisitions)} acquisitions; expected one stack. Split the series by AcquisitionNumber",
        )
    return _error(
        info,
        SeriesReason.DUPLICATE_POSITION,
        f"{dup.size + 1} slices share the position {where:.2f} mm along the normal; expected one slice per "
        "position. Remove the duplicate files",
    )


def _steps_layout(
    info: SeriesInfo, t: np.ndarray, options: ReadOptions, warnings: list[SeriesWarning]
) -> tuple[float, bool] | DicomSeriesError:
    """Gaps and uneven spacing along the normal: the uniform output step and whether to resample (warnings added)."""
    steps = np.diff(t)
    typical = _typical_steps(steps)
    gaps = np.flatnonzero(steps > GAP_FACTOR * typical)
    resample = False
    if gaps.size:
        first = int(gaps[0])
        msg = (
            f"{gaps.size} gap(s) in the slice positions: {steps[first]:.2f} mm after the slice at "
            f"{t[first]:.2f} mm along the normal where {typical[first]:.2f} mm is expected"
        )
        if not options.allow_gaps:
            return _error(
                info, SeriesReason.MISSING_SLICE, msg + "; find the missing files, or pass allow_gaps to resample"
            )
        warnings.append((SeriesReason.MISSING_SLICE, msg + "; resampled across the gap"))
        resample = True
    if np.ptp(steps) <= SPACING_TOL_MM:
        return float(np.mean(steps)), resample
    step = float(np.median(np.delete(steps, gaps))) if gaps.size else _uniform_step(steps)
    warnings.append(
        (
            SeriesReason.INCONSISTENT_SPACING,
            f"slice spacing varies {steps.min():.3f}-{steps.max():.3f} mm (tol {SPACING_TOL_MM}); "
            f"resampled to a uniform {step:.3f} mm",
        )
    )
    return step, True


def _single_slice_step(value: object) -> float | None:
    """A one-slice stack's spacing from SpacingBetweenSlices/SliceThickness; None when absent or not a positive number."""
    try:
        step = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return step if np.isfinite(step) and 0 < step <= MAX_SINGLE_SLICE_MM else None


def _check_stack(
    info: SeriesInfo, slices: list[SliceRef], axes: np.ndarray, options: ReadOptions, warnings: list[SeriesWarning]
) -> StackLayout | DicomSeriesError:
    """Sort by position along the normal and check duplicates, gaps, spacing and tilt (corrections go in ``warnings``).

    ``axes`` is ``(3, 3)``: row cosine, column cosine and unit normal, one per row.
    """
    row_cos, col_cos, normal = axes
    pos = np.array([s.position for s in slices], dtype=np.float64)
    t = pos @ normal
    order = np.argsort(t, kind="stable")
    ordered = tuple(slices[i] for i in order)
    pos, t = pos[order], t[order]
    if len(t) == 1:
        # One slice: the slice thickness is the only spacing there is.
        ds = ordered[0].file.header
        step = _single_slice_step(ds.get("SpacingBetweenSlices")) or _single_slice_step(ds.get("SliceThickness"))
        return StackLayout(ordered, t, np.zeros((1, 2)), step or 1.0)
    dup = np.flatnonzero(np.diff(t) < DUPLICATE_TOL_MM)
    if dup.size:
        return _duplicate_error(info, list(ordered), t, dup)
    spacing = _steps_layout(info, t, options, warnings)
    if isinstance(spacing, DicomSeriesError):
        return spacing
    step, resample = spacing
    drift = pos - pos[0] - np.outer(t - t[0], normal)
    offsets = np.stack([drift @ col_cos, drift @ row_cos], axis=1)
    in_plane = float(np.abs(offsets).max())
    tilt_deg = 0.0
    if in_plane > TILT_TOL_MM:
        tilt_deg = float(np.degrees(np.arctan2(np.linalg.norm(offsets[-1]), float(t[-1] - t[0]))))
        if not options.correct_tilt:
            return _error(
                info,
                SeriesReason.GANTRY_TILT,
                f"gantry tilt of {tilt_deg:.2f} degrees (slices drift {in_plane:.2f} mm in-plane); "
                "expected an orthogonal stack. Allow tilt correction to resample it",
            )
        resample = True
        warnings.append(
            (SeriesReason.GANTRY_TILT, f"gantry tilt of {tilt_deg:.2f} degrees corrected onto an orthogonal grid")
        )
    return StackLayout(ordered, t, offsets, step, resample, tilt_deg)


def series_info(group: SeriesGroup) -> SeriesInfo:
    """The series-level facts of a group (no patient-identifying value)."""
    ds = group.first
    return SeriesInfo(
        group=group,
        label=series_label(group),
        modality=str(ds.get("Modality", "") or "").upper(),
        description=str(ds.get("SeriesDescription", "") or "").strip(),
    )


def plan_series(group: SeriesGroup, options: ReadOptions = ReadOptions()) -> SeriesCheck:
    """Check a series group and work out its stack, without reading pixel data.

    Returns
    -------
    CheckedSeries | RejectedSeries
        A :class:`CheckedSeries` (slices in slice order, output grid, ``warnings`` for what will be corrected) when
        every check passes, else a :class:`RejectedSeries` holding the :class:`~ctseg.errors.DicomSeriesError`.
    """
    warnings: list[SeriesWarning] = []
    skipped: list[str] = []
    if group.uid_missing:
        warnings.append(
            (SeriesReason.MISSING_TAG, "SeriesInstanceUID missing; grouped by frame of reference, orientation, size")
        )
    with ignored_warnings():
        # pydicom warns as it converts a malformed value (e.g. "abc" in an IS); the checks name it in their error.
        info = series_info(group)
        result = _checked(info, options, warnings, skipped)
    for note in skipped:
        log.info("%s: skipped %s", info.label, note)
    return result


def _checked(info: SeriesInfo, options: ReadOptions, warnings: list[SeriesWarning], skipped: list[str]) -> SeriesCheck:
    def reject(error: DicomSeriesError, slices: tuple[SliceRef, ...] = ()) -> RejectedSeries:
        return RejectedSeries(info, error, tuple(skipped), tuple(warnings), slices)

    if info.modality != "CT" and not options.allow_non_ct:
        return reject(
            _error(
                info,
                SeriesReason.NOT_CT,
                f"modality is {info.modality or 'missing'}, expected CT; pass allow_non_ct to read it",
            )
        )
    candidates = [s for f in info.group.files for s in slices_of(f)]
    slices = _select_slices(info, candidates, skipped)
    if isinstance(slices, DicomSeriesError):
        return reject(slices)
    pixel_problem = pixel_format_problem(slices[0].file)
    if pixel_problem is not None:
        return reject(_error(info, *pixel_problem))
    if len(slices) < options.min_slices:
        return reject(
            _error(
                info,
                SeriesReason.TOO_FEW_SLICES,
                f"{len(slices)} slice(s), expected at least {options.min_slices} to form a volume",
            )
        )
    orientation = np.asarray(slices[0].orientation, dtype=np.float64)
    row_cos, col_cos = orientation[:3], orientation[3:]
    normal = np.cross(row_cos, col_cos)
    normal /= np.linalg.norm(normal)
    layout = _check_stack(info, slices, np.stack([row_cos, col_cos, normal]), options, warnings)
    if isinstance(layout, DicomSeriesError):
        along = np.array([s.position for s in slices], dtype=np.float64) @ normal
        return reject(layout, tuple(slices[i] for i in np.argsort(along, kind="stable")))
    row, col = np.asarray(slices[0].pixel_spacing, dtype=np.float64)
    return CheckedSeries(
        info,
        layout,
        (float(row_cos[0]), float(row_cos[1]), float(row_cos[2])),
        (float(col_cos[0]), float(col_cos[1]), float(col_cos[2])),
        (float(row), float(col)),
        tuple(skipped),
        tuple(warnings),
    )
