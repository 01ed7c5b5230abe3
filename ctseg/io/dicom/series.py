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
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class SeriesPlan:
    """A checked series: the sorted slices and the grid they will be read onto, or the error that stops it.

    ``spacing_mm``, ``shape`` and ``direction`` describe the output volume in ``(z, y, x)`` order.
    """

    group: SeriesGroup
    label: str
    modality: str
    description: str
    slices: list[SliceRef] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[tuple[SeriesReason, str]] = field(default_factory=list)
    error: DicomSeriesError | None = None
    positions_mm: np.ndarray | None = None  # (N,) along the normal, ascending
    offsets_mm: np.ndarray | None = None  # (N, 2) in-plane drift (along column, along row cosines) from slice 0
    step_mm: float = 0.0
    needs_resampling: bool = False
    tilt_deg: float = 0.0

    @property
    def usable(self) -> bool:
        """Whether the series can be read."""
        return self.error is None

    @property
    def series_uid(self) -> str:
        """SeriesInstanceUID (or the fallback key when the files had none)."""
        return self.group.series_uid

    @property
    def n_files(self) -> int:
        """Number of files in the group, skipped ones included."""
        return len(self.group.files)

    @property
    def row_cos(self) -> np.ndarray:
        """LPS direction of increasing column index (array x)."""
        assert self.slices and self.slices[0].orientation is not None
        return np.array(self.slices[0].orientation[:3])

    @property
    def col_cos(self) -> np.ndarray:
        """LPS direction of increasing row index (array y)."""
        assert self.slices and self.slices[0].orientation is not None
        return np.array(self.slices[0].orientation[3:])

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal, ``row_cos x col_cos`` (array z)."""
        n = np.cross(self.row_cos, self.col_cos)
        return np.asarray(n / np.linalg.norm(n))

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        """(between rows, between columns) in mm."""
        assert self.slices and self.slices[0].pixel_spacing is not None
        row, col = self.slices[0].pixel_spacing
        return (row, col)

    @property
    def shape(self) -> tuple[int, int, int] | None:
        """Output shape ``(Z, Y, X)`` before any tilt FOV extension, ``None`` when unusable."""
        if not self.usable or self.positions_mm is None:
            return None
        n, rows, cols = len(self.slices), self.slices[0].rows, self.slices[0].cols
        if self.needs_resampling and self.offsets_mm is not None:
            extent = float(self.positions_mm[-1] - self.positions_mm[0])
            n = int(np.floor(extent / self.step_mm + 1e-6)) + 1
            # A sheared stack's field of view grows so that every slice fits.
            drift = np.ptp(self.offsets_mm, axis=0) / np.array(self.pixel_spacing_mm)
            rows += int(np.ceil(drift[0] - 1e-6))
            cols += int(np.ceil(drift[1] - 1e-6))
        return (n, rows, cols)

    @property
    def spacing_mm(self) -> tuple[float, float, float] | None:
        """Output spacing ``(z, y, x)`` in mm, ``None`` when unusable."""
        if not self.usable:
            return None
        return (self.step_mm, *self.pixel_spacing_mm)

    @property
    def geometry(self) -> Geometry | None:
        """The output grid (what :func:`~ctseg.io.dicom.stack.assemble_volume` returns), known without pixels.

        Axis 0 runs along the normal, axis 1 along the column cosine, axis 2 along the row cosine; a corrected
        (tilted) stack's origin moves with its widened field of view. ``None`` when the series is unusable.
        """
        shape = self.shape
        if shape is None or self.offsets_mm is None:
            return None
        origin = np.array(self.slices[0].position, dtype=np.float64)
        if self.needs_resampling:
            lo = self.offsets_mm.min(axis=0)
            origin = origin + lo[0] * self.col_cos + lo[1] * self.row_cos
        # DICOM cosines carry ~6 digits; the closest orthonormal matrix makes the geometry exact.
        u, _, vt = np.linalg.svd(np.stack([self.normal, self.col_cos, self.row_cos], axis=1))
        spacing = (self.step_mm, *self.pixel_spacing_mm)
        return Geometry(shape, spacing, tuple(origin), tuple(map(tuple, u @ vt)))  # type: ignore[arg-type]

    @property
    def is_axial(self) -> bool:
        """Whether the slice normal is closest to the patient's head-feet axis."""
        return bool(self.slices) and self.slices[0].orientation is not None and int(np.argmax(np.abs(self.normal))) == 2


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


def _orientation_key(s: SliceRef) -> tuple[float, ...]:
    assert s.orientation is not None
    return tuple(np.round(np.asarray(s.orientation) / ORIENTATION_TOL).astype(int).tolist())


def _fail(plan: SeriesPlan, reason: SeriesReason, message: str) -> SeriesPlan:
    plan.error = DicomSeriesError(reason, f"{plan.label}: {message}")
    return plan


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


def _select_slices(plan: SeriesPlan, candidates: list[SliceRef]) -> list[SliceRef] | None:
    """Skip localizers and secondary captures; return the main stack or None after setting an error."""
    kept = []
    for s in candidates:
        if s.secondary:
            plan.skipped.append(f"{s.file.path.name}: secondary capture / colour image")
        elif s.localizer:
            plan.skipped.append(f"{s.file.path.name}: localizer (ImageType LOCALIZER)")
        else:
            kept.append(s)
    if not kept:
        if all(s.secondary for s in candidates):
            _fail(
                plan,
                SeriesReason.COLOUR_IMAGE,
                f"holds only secondary-capture / colour images ({len(candidates)}), e.g. screenshots; expected CT "
                "slices. Export the original CT series",
            )
        else:
            _fail(plan, SeriesReason.NOT_IMAGE, "holds only localizer/scout images; expected a CT stack")
        return None
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
        _fail(plan, SeriesReason.MISSING_TAG, f"slices lack {', '.join(missing)}; the geometry cannot be known")
        return None
    by_orientation = Counter(_orientation_key(s) for s in kept)
    main_key, main_count = by_orientation.most_common(1)[0]
    others = len(kept) - main_count
    if others:
        if others > MAX_LOCALIZER_SLICES or others >= main_count:
            _fail(
                plan,
                SeriesReason.INCONSISTENT_ORIENTATION,
                f"{len(by_orientation)} slice orientations ({main_count} vs {others} slices); expected one. "
                "Export each orientation as its own series",
            )
            return None
        for s in kept:
            if _orientation_key(s) != main_key:
                plan.skipped.append(f"{s.file.path.name}: orientation differs from the stack (localizer/scout)")
        kept = [s for s in kept if _orientation_key(s) == main_key]
    sizes = Counter((s.rows, s.cols) for s in kept)
    if len(sizes) > 1:
        found = ", ".join(f"{r}x{c} ({n})" for (r, c), n in sizes.items())
        _fail(plan, SeriesReason.INCONSISTENT_SIZE, f"slice sizes differ: {found}; expected one matrix size")
        return None
    spacings = np.array([s.pixel_spacing for s in kept])
    if np.ptp(spacings, axis=0).max() > PIXEL_SPACING_TOL_MM:
        _fail(
            plan,
            SeriesReason.INCONSISTENT_PIXEL_SPACING,
            f"pixel spacing varies {spacings.min():.4f}-{spacings.max():.4f} mm (tol {PIXEL_SPACING_TOL_MM}); "
            "expected one pixel spacing",
        )
        return None
    return kept


def _check_stack(plan: SeriesPlan, slices: list[SliceRef], options: ReadOptions) -> None:
    """Sort by position along the normal and check duplicates, gaps, spacing and tilt."""
    plan.slices = slices
    normal = plan.normal
    pos = np.array([s.position for s in slices], dtype=np.float64)
    t = pos @ normal
    order = np.argsort(t, kind="stable")
    plan.slices = [slices[i] for i in order]
    pos, t = pos[order], t[order]
    if len(t) == 1:
        # One slice: the slice thickness is the only spacing there is.
        ds = plan.slices[0].file.header
        plan.positions_mm, plan.offsets_mm = t, np.zeros((1, 2))
        plan.step_mm = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
        return
    steps = np.diff(t)
    dup = np.flatnonzero(steps < DUPLICATE_TOL_MM)
    if dup.size:
        where = float(t[dup[0]])
        acquisitions = {plan.slices[i].acquisition for i in range(len(plan.slices))}
        if len(acquisitions) > 1:
            _fail(
                plan,
                SeriesReason.MIXED_SERIES,
                f"{dup.size} duplicate slice positions (first at {where:.2f} mm along the normal) from "
                f"{len(acquisitions)} acquisitions; expected one stack. Split the series by AcquisitionNumber",
            )
        else:
            _fail(
                plan,
                SeriesReason.DUPLICATE_POSITION,
                f"{dup.size + 1} slices share the position {where:.2f} mm along the normal; expected one slice per "
                "position. Remove the duplicate files",
            )
        return
    typical = _typical_steps(steps)
    gaps = np.flatnonzero(steps > GAP_FACTOR * typical)
    plan.positions_mm = t
    drift = pos - pos[0] - np.outer(t - t[0], normal)
    plan.offsets_mm = np.stack([drift @ plan.col_cos, drift @ plan.row_cos], axis=1)
    if gaps.size:
        first = int(gaps[0])
        msg = (
            f"{gaps.size} gap(s) in the slice positions: {steps[first]:.2f} mm after the slice at "
            f"{t[first]:.2f} mm along the normal where {typical[first]:.2f} mm is expected"
        )
        if not options.allow_gaps:
            _fail(plan, SeriesReason.MISSING_SLICE, msg + "; find the missing files, or pass allow_gaps to resample")
            return
        plan.warnings.append((SeriesReason.MISSING_SLICE, msg + "; resampled across the gap"))
        plan.needs_resampling = True
    if np.ptp(steps) > SPACING_TOL_MM:
        plan.step_mm = float(np.median(np.delete(steps, gaps))) if gaps.size else _uniform_step(steps)
        plan.needs_resampling = True
        plan.warnings.append(
            (
                SeriesReason.INCONSISTENT_SPACING,
                f"slice spacing varies {steps.min():.3f}-{steps.max():.3f} mm (tol {SPACING_TOL_MM}); "
                f"resampled to a uniform {plan.step_mm:.3f} mm",
            )
        )
    else:
        plan.step_mm = float(np.mean(steps))
    in_plane = float(np.abs(plan.offsets_mm).max())
    if in_plane > TILT_TOL_MM:
        extent = float(t[-1] - t[0])
        plan.tilt_deg = float(np.degrees(np.arctan2(np.linalg.norm(plan.offsets_mm[-1]), extent)))
        if not options.correct_tilt:
            _fail(
                plan,
                SeriesReason.GANTRY_TILT,
                f"gantry tilt of {plan.tilt_deg:.2f} degrees (slices drift {in_plane:.2f} mm in-plane); "
                "expected an orthogonal stack. Allow tilt correction to resample it",
            )
            return
        plan.needs_resampling = True
        plan.warnings.append(
            (SeriesReason.GANTRY_TILT, f"gantry tilt of {plan.tilt_deg:.2f} degrees corrected onto an orthogonal grid")
        )


def plan_series(group: SeriesGroup, options: ReadOptions = ReadOptions()) -> SeriesPlan:
    """Check a series group and work out its stack, without reading pixel data.

    Returns
    -------
    SeriesPlan
        With ``error`` set when the series cannot be read; ``warnings`` for what will be corrected.
    """
    ds = group.first
    modality = str(ds.get("Modality", "") or "").upper()
    plan = SeriesPlan(
        group=group,
        label=series_label(group),
        modality=modality,
        description=str(ds.get("SeriesDescription", "") or "").strip(),
    )
    if group.uid_missing:
        plan.warnings.append(
            (SeriesReason.MISSING_TAG, "SeriesInstanceUID missing; grouped by frame of reference, orientation, size")
        )
    if modality != "CT" and not options.allow_non_ct:
        return _fail(
            plan, SeriesReason.NOT_CT, f"modality is {modality or 'missing'}, expected CT; pass allow_non_ct to read it"
        )
    candidates = [s for f in group.files for s in slices_of(f)]
    slices = _select_slices(plan, candidates)
    if slices is None:
        return plan
    if len(slices) < options.min_slices:
        return _fail(
            plan,
            SeriesReason.TOO_FEW_SLICES,
            f"{len(slices)} slice(s), expected at least {options.min_slices} to form a volume",
        )
    _check_stack(plan, slices, options)
    for note in plan.skipped:
        log.info("%s: skipped %s", plan.label, note)
    return plan
