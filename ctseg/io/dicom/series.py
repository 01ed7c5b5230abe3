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
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ctseg.errors import DicomSeriesError, SeriesReason
from ctseg.io.dicom.discover import SECONDARY_CAPTURE_SOP_PREFIX, DicomFile, SeriesGroup
from ctseg.volume import Geometry

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
#: Orientation groups this small, differing from the main stack, are localizers/scouts and are skipped.
MAX_LOCALIZER_SLICES = 3


@dataclass(frozen=True)
class ReadOptions:
    """How strictly a DICOM series is read.

    Parameters
    ----------
    correct_tilt
        Resample a gantry-tilted (sheared) stack onto an orthogonal grid (warning). ``False`` refuses it.
    allow_gaps
        Resample across missing slices instead of refusing the series.
    allow_non_ct
        Read series whose Modality is not CT.
    min_slices
        Fewer slices than this is ``TOO_FEW_SLICES``.
    padding_hu
        HU written where the stored value equals PixelPaddingValue (outside the scan field of view); ``None`` keeps
        the rescaled padding value (e.g. -3024 on GE).
    fill_hu
        HU for voxels of a corrected (tilt) grid that no slice covers.
    """

    correct_tilt: bool = True
    allow_gaps: bool = False
    allow_non_ct: bool = False
    min_slices: int = 3
    padding_hu: float | None = -1024.0
    fill_hu: float = -1024.0


@dataclass(frozen=True)
class SliceRef:
    """One 2D slice: a file and frame, with the geometry and modality LUT that apply to it."""

    file: DicomFile
    frame: int
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    rows: int
    cols: int
    slope: float
    intercept: float
    localizer: bool
    secondary: bool
    acquisition: str


@dataclass(frozen=True)
class SeriesInfo:
    """Series-level facts known before any check: the file group, a non-identifying label, modality, description."""

    group: SeriesGroup
    label: str
    modality: str
    description: str

    @property
    def series_uid(self) -> str:
        """SeriesInstanceUID (or the fallback key when the files had none)."""
        return self.group.series_uid

    @property
    def n_files(self) -> int:
        """Number of files in the group, skipped ones included."""
        return len(self.group.files)


#: A correction made while reading, with its reason code.
SeriesWarning = tuple[SeriesReason, str]


@dataclass(frozen=True)
class StackLayout:
    """Where the sorted slices of a stack lie: the result of the position checks (no pixels read)."""

    slices: tuple[SliceRef, ...]
    positions_mm: np.ndarray  # (N,) along the normal, ascending
    offsets_mm: np.ndarray  # (N, 2) in-plane drift (along column, along row cosines) from slice 0
    step_mm: float
    needs_resampling: bool = False
    tilt_deg: float = 0.0


class _SeriesFacts:
    """Series-level properties shared by checked and rejected series."""

    info: SeriesInfo

    @property
    def group(self) -> SeriesGroup:
        """The files of the series."""
        return self.info.group

    @property
    def label(self) -> str:
        """Series number and description, for messages."""
        return self.info.label

    @property
    def modality(self) -> str:
        """Modality, upper case ("" when missing)."""
        return self.info.modality

    @property
    def description(self) -> str:
        """SeriesDescription."""
        return self.info.description

    @property
    def series_uid(self) -> str:
        """SeriesInstanceUID (or the fallback key when the files had none)."""
        return self.info.series_uid

    @property
    def n_files(self) -> int:
        """Number of files in the group, skipped ones included."""
        return self.info.n_files


@dataclass(frozen=True)
class CheckedSeries(_SeriesFacts):
    """A series that passed every check: its slices in slice order and the grid they will be read onto.

    Made only by :func:`plan_series`; ``shape``, ``spacing_mm`` and ``geometry`` describe the output volume in
    ``(z, y, x)`` order.
    """

    info: SeriesInfo
    layout: StackLayout
    row_cos: tuple[float, float, float]  # LPS direction of increasing column index (array x)
    col_cos: tuple[float, float, float]  # LPS direction of increasing row index (array y)
    pixel_spacing_mm: tuple[float, float]  # (between rows, between columns)
    skipped: tuple[str, ...] = ()
    warnings: tuple[SeriesWarning, ...] = ()

    usable: ClassVar[bool] = True
    error: ClassVar[None] = None

    @property
    def slices(self) -> tuple[SliceRef, ...]:
        """The slices in slice order (ascending along the normal)."""
        return self.layout.slices

    @property
    def positions_mm(self) -> np.ndarray:
        """``(N,)`` slice positions along the normal, ascending."""
        return self.layout.positions_mm

    @property
    def offsets_mm(self) -> np.ndarray:
        """``(N, 2)`` in-plane drift from slice 0 (along the column, row cosines)."""
        return self.layout.offsets_mm

    @property
    def step_mm(self) -> float:
        """Output slice spacing in mm."""
        return self.layout.step_mm

    @property
    def needs_resampling(self) -> bool:
        """Whether the stack is resampled (tilt, gaps, uneven steps)."""
        return self.layout.needs_resampling

    @property
    def tilt_deg(self) -> float:
        """Gantry tilt in degrees (0 for an orthogonal stack)."""
        return self.layout.tilt_deg

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal, ``row_cos x col_cos`` (array z)."""
        n = np.cross(self.row_cos, self.col_cos)
        return np.asarray(n / np.linalg.norm(n))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Output shape ``(Z, Y, X)``, a sheared stack's widened field of view included."""
        layout = self.layout
        n, rows, cols = len(layout.slices), layout.slices[0].rows, layout.slices[0].cols
        if layout.needs_resampling:
            extent = float(layout.positions_mm[-1] - layout.positions_mm[0])
            n = int(np.floor(extent / layout.step_mm + 1e-6)) + 1
            # A sheared stack's field of view grows so that every slice fits.
            drift = np.ptp(layout.offsets_mm, axis=0) / np.array(self.pixel_spacing_mm)
            rows += int(np.ceil(drift[0] - 1e-6))
            cols += int(np.ceil(drift[1] - 1e-6))
        return (n, rows, cols)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Output spacing ``(z, y, x)`` in mm."""
        return (self.layout.step_mm, *self.pixel_spacing_mm)

    @property
    def geometry(self) -> Geometry:
        """The output grid (what :func:`~ctseg.io.dicom.stack.assemble_volume` returns), known without pixels.

        Axis 0 runs along the normal, axis 1 along the column cosine, axis 2 along the row cosine; a corrected
        (tilted) stack's origin moves with its widened field of view.
        """
        origin = np.array(self.layout.slices[0].position, dtype=np.float64)
        if self.layout.needs_resampling:
            lo = self.layout.offsets_mm.min(axis=0)
            origin = origin + lo[0] * np.array(self.col_cos) + lo[1] * np.array(self.row_cos)
        # DICOM cosines carry ~6 digits; the closest orthonormal matrix makes the geometry exact.
        u, _, vt = np.linalg.svd(np.stack([self.normal, self.col_cos, self.row_cos], axis=1))
        return Geometry(self.shape, self.spacing_mm, tuple(origin), tuple(map(tuple, u @ vt)))  # type: ignore[arg-type]

    @property
    def is_axial(self) -> bool:
        """Whether the slice normal is closest to the patient's head-feet axis."""
        return int(np.argmax(np.abs(self.normal))) == 2


@dataclass(frozen=True)
class RejectedSeries(_SeriesFacts):
    """A series that failed a check: what is known about it and the error (with its reason code) that stops it."""

    info: SeriesInfo
    error: DicomSeriesError
    skipped: tuple[str, ...] = ()
    warnings: tuple[SeriesWarning, ...] = ()

    #: The stack in slice order when a position check (duplicates, gaps, tilt) refused it; else empty.
    slices: tuple[SliceRef, ...] = ()

    usable: ClassVar[bool] = False
    #: A rejected series has no output grid: no step, tilt, shape, spacing or orientation.
    step_mm: ClassVar[float] = 0.0
    tilt_deg: ClassVar[float] = 0.0
    needs_resampling: ClassVar[bool] = False
    shape: ClassVar[None] = None
    spacing_mm: ClassVar[None] = None
    is_axial: ClassVar[bool] = False


#: The outcome of :func:`plan_series` for one series.
SeriesCheck = CheckedSeries | RejectedSeries


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


def _orientation_key(s: SliceRef) -> tuple[int, ...]:
    return tuple(np.round(np.asarray(s.orientation or ()) / ORIENTATION_TOL).astype(int).tolist())


def _error(info: SeriesInfo, reason: SeriesReason, message: str) -> DicomSeriesError:
    return DicomSeriesError(reason, f"{info.label}: {message}")


def _typical_steps(steps: np.ndarray) -> np.ndarray:
    """Per step, the median of up to GAP_WINDOW steps on each side (itself excluded); one vectorised pass."""
    if len(steps) == 1:
        return steps.copy()
    padded = np.concatenate([np.full(GAP_WINDOW, np.nan), steps, np.full(GAP_WINDOW, np.nan)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * GAP_WINDOW + 1).copy()
    windows[:, GAP_WINDOW] = np.nan
    return np.asarray(np.nanmedian(windows, axis=1))


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
    return kept


def _select_slices(
    info: SeriesInfo, candidates: list[SliceRef], skipped: list[str]
) -> list[SliceRef] | DicomSeriesError:
    """The main stack: one orientation (small odd groups are scouts, noted in ``skipped``), size and pixel spacing."""
    kept = _image_slices(info, candidates, skipped)
    if isinstance(kept, DicomSeriesError):
        return kept
    by_orientation = Counter(_orientation_key(s) for s in kept)
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
        for s in kept:
            if _orientation_key(s) != main_key:
                skipped.append(f"{s.file.path.name}: orientation differs from the stack (localizer/scout)")
        kept = [s for s in kept if _orientation_key(s) == main_key]
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
        step = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
        return StackLayout(ordered, t, np.zeros((1, 2)), step)
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
    info = series_info(group)
    warnings: list[SeriesWarning] = []
    skipped: list[str] = []
    if group.uid_missing:
        warnings.append(
            (SeriesReason.MISSING_TAG, "SeriesInstanceUID missing; grouped by frame of reference, orientation, size")
        )
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
