"""What a series check yields: the read options, the slices, and a checked or rejected series (all frozen).

:func:`~ctseg.io.dicom.series.plan_series` makes a :class:`CheckedSeries` only when every check passes, else a
:class:`RejectedSeries` holding the :class:`~ctseg.errors.DicomSeriesError` with its reason code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ctseg.errors import ConfigError, DicomSeriesError, SeriesReason
from ctseg.io.dicom.choose import KERNEL_PREFERENCES
from ctseg.io.dicom.discover import DicomFile, SeriesGroup
from ctseg.volume import Geometry

#: The largest slice thickness a thickness band may name (mm).
MAX_THICKNESS_MM = 100.0


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
    prefer_kernel
        Kernel class ranked first when choosing a series: ``soft`` (default), ``bone``, ``lung``, or ``any`` (kernel
        not ranked); see :mod:`ctseg.io.dicom.ranking`.
    thickness_band_mm
        ``(min, max)`` slice thickness in mm a series should have; one outside loses to one inside.

    Raises
    ------
    ConfigError
        For an unknown ``prefer_kernel`` or a band outside (0, 100] mm or with min > max.
    """

    correct_tilt: bool = True
    allow_gaps: bool = False
    allow_non_ct: bool = False
    min_slices: int = 3
    padding_hu: float | None = -1024.0
    fill_hu: float = -1024.0
    prefer_kernel: str = "soft"
    thickness_band_mm: tuple[float, float] = (0.5, 5.0)

    def __post_init__(self) -> None:
        if self.prefer_kernel not in KERNEL_PREFERENCES:
            raise ConfigError(
                f"prefer_kernel is {self.prefer_kernel!r}; expected one of {', '.join(KERNEL_PREFERENCES)}"
            )
        band = tuple(self.thickness_band_mm)
        if len(band) != 2 or not 0.0 < band[0] <= band[1] <= MAX_THICKNESS_MM:
            raise ConfigError(
                f"thickness_band_mm is {self.thickness_band_mm!r}; expected (min, max) with "
                f"0 < min <= max <= {MAX_THICKNESS_MM:g} mm, e.g. (0.5, 5.0)"
            )


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
