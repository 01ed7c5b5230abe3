"""The public DICOM read call: a folder tree (or file) -> the chosen series' HU :class:`Volume` and its frozen plan.

:func:`read_dicom` returns a :class:`DicomImage`: the volume and the :class:`~ctseg.io.dicom.plan.CheckedSeries`
it was read from (the series, its instances in slice order with their SOP Instance UIDs and files, the warnings with
reason codes). Writers that reference the source (DICOM SEG) take that object, so nothing rescans the folder.
:func:`inspect_dicom` runs the same discovery and checks for every series without reading pixel data.

Series selection (used by ``convert``, ``predict`` and ``inspect``): :func:`~ctseg.io.dicom.ranking.choose_series`
removes localizers, projections and series that fail their checks, ranks the rest by kernel class, orientation,
image type, thickness band, coverage, slice count and thickness (ties: lower SeriesNumber, then UID) and says why
every other series lost; ``series`` (``--series``) steers it by UID, SeriesNumber or description glob.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ctseg.errors import DicomSeriesError, SeriesReason
from ctseg.io.dicom.discover import Discovery, IgnoredFile, discover, paused_gc, unreadable_note
from ctseg.io.dicom.plan import CheckedSeries, ReadOptions, SeriesCheck, SeriesWarning
from ctseg.io.dicom.quiet import header_notes, quiet_pydicom
from ctseg.io.dicom.ranking import SeriesChoice, choose_series
from ctseg.io.dicom.series import plan_series
from ctseg.io.dicom.stack import assemble_volume
from ctseg.volume import Volume


@dataclass(frozen=True)
class SourceInstance:
    """One source slice of a read series: its SOP Instance UID, file and (0-based) frame within the file."""

    sop_instance_uid: str
    path: Path
    frame: int


@dataclass(frozen=True)
class DicomImage:
    """A read DICOM series: the HU volume and the checked plan it was read from.

    Parameters
    ----------
    volume
        ``(Z, Y, X)`` HU on an orthogonal LPS grid (int16 when exact, float32 otherwise).
    plan
        The chosen series, checked: its slices in slice order, output grid, warnings and skipped files.
    reason
        Why this series was chosen, in words.
    ignored
        The files found beside the series that are not part of any series (e.g. DICOM SEG objects), with why.
    choice
        The choice among the study's series: every candidate with its kernel class and why it lost.
    notes
        Header oddities pydicom repaired while the study was read, as ``HEADER_REPAIRED`` warnings.
    """

    volume: Volume
    plan: CheckedSeries
    reason: str = ""
    ignored: tuple[IgnoredFile, ...] = ()
    choice: SeriesChoice | None = None
    notes: tuple[SeriesWarning, ...] = ()

    @property
    def kernel_class(self) -> str:
        """The kernel class of the read series (soft, bone, lung, unknown)."""
        if self.choice is not None and self.choice.chosen is not None:
            return self.choice.kernel_class
        from ctseg.io.dicom.ranking import describe

        return describe(self.plan).kernel_class

    @property
    def series_uid(self) -> str:
        """SeriesInstanceUID (or the fallback key when the files had none)."""
        return self.plan.series_uid

    @property
    def series_number(self) -> str:
        """SeriesNumber as written ("" when absent)."""
        return str(self.plan.slices[0].file.header.get("SeriesNumber", "") or "")

    @property
    def study_uid(self) -> str:
        """StudyInstanceUID of the read slices ("" when absent); a DICOM SEG of them belongs to this study."""
        return str(self.plan.slices[0].file.header.get("StudyInstanceUID", "") or "")

    @property
    def modality(self) -> str:
        """Modality, upper case."""
        return self.plan.modality

    @property
    def description(self) -> str:
        """SeriesDescription."""
        return self.plan.description

    @property
    def instances(self) -> tuple[SourceInstance, ...]:
        """The source slices in slice order (ascending along the normal)."""
        return tuple(SourceInstance(s.file.sop_instance_uid, s.file.path, s.frame) for s in self.plan.slices)

    @property
    def warnings(self) -> tuple[SeriesWarning, ...]:
        """What was corrected while reading (header oddities pydicom repaired included), each with its reason code."""
        return self.plan.warnings + self.notes


@dataclass(frozen=True)
class DicomInspection:
    """Everything found under a path: checked series, ignored files, and the series that would be read."""

    discovery: Discovery
    plans: tuple[SeriesCheck, ...]
    picked: SeriesCheck | None
    reason: str
    choice: SeriesChoice | None = None
    notes: tuple[SeriesWarning, ...] = ()

    @property
    def chosen(self) -> CheckedSeries | None:
        """The series :func:`read_dicom` reads: the picked one when it passed its checks."""
        return self.picked if isinstance(self.picked, CheckedSeries) else None

    @property
    def ignored(self) -> list[IgnoredFile]:
        """Files that were found but are not part of any series."""
        return self.discovery.ignored

    def require_chosen(self) -> CheckedSeries:
        """The chosen series, or the error that says why none can be read.

        Raises
        ------
        DicomSeriesError
            ``NO_DICOM`` when no image series was found; the series' own error when there is one series; else
            ``NO_SERIES`` listing every series' error.
        """
        if isinstance(self.picked, CheckedSeries):
            return self.picked
        if self.picked is not None:
            raise self.picked.error  # the series named by series_uid fails its checks
        name = Path(self.discovery.root).name
        if not self.plans:
            unreadable = unreadable_note(self.ignored)
            raise DicomSeriesError(
                SeriesReason.UNREADABLE_PATH if unreadable else SeriesReason.NO_DICOM,
                f"no DICOM image series under {name} ({len(self.ignored)} file(s) ignored); expected a folder of CT "
                "slices" + unreadable,
            )
        if len(self.plans) == 1 and self.plans[0].error is not None:
            raise self.plans[0].error
        if self.choice is not None:
            why = "; ".join(f"{c.plan.label}: {c.verdict}" for c in self.choice.candidates)
        else:
            why = "; ".join(str(p.error) for p in self.plans if p.error is not None)
        raise DicomSeriesError(
            SeriesReason.NO_SERIES,
            f"no usable series under {name}: {why}; pass --series to read one of them anyway (see `ctseg inspect`)",
        )


def select_series(
    plans: Sequence[SeriesCheck], series_uid: str | None = None, *, options: ReadOptions = ReadOptions()
) -> tuple[SeriesCheck | None, str]:
    """Pick the series to read, with the reason in words (the choice of :func:`choose_series`, condensed).

    Parameters
    ----------
    plans
        Checked series.
    series_uid
        When given, the series it names (usable or not) and no other: a SeriesInstanceUID, a SeriesNumber or a
        description glob such as ``*venous*`` (case-insensitive).
    options
        ``prefer_kernel`` and ``thickness_band_mm`` steer the ranking.

    Raises
    ------
    DicomSeriesError
        ``SERIES_NOT_FOUND`` when ``series_uid`` matches no series, ``AMBIGUOUS_SERIES`` when it matches several.
    """
    choice = choose_series(plans, series=series_uid, options=options)
    return (choice.chosen.plan if choice.chosen else None), choice.reason


def inspect_dicom(
    path: Path, *, options: ReadOptions = ReadOptions(), series_uid: str | None = None
) -> DicomInspection:
    """Scan ``path`` and check every series in it, without reading pixel data.

    ``picked`` is the series the selection rule (or ``series_uid``) points to, usable or not; ``chosen`` is that
    series when it is usable (:meth:`DicomInspection.require_chosen` raises the error otherwise); ``choice`` has
    every series with its kernel class and why it lost. ``series_uid`` is a SeriesInstanceUID, a SeriesNumber or a
    description glob. pydicom's warnings are collected into ``notes`` (``HEADER_REPAIRED``), never printed.

    Raises
    ------
    DicomSeriesError
        ``NO_DICOM`` when the path does not exist; ``SERIES_NOT_FOUND`` / ``AMBIGUOUS_SERIES`` for a
        ``series_uid`` that names no series or several.
    """
    with quiet_pydicom() as notes, paused_gc():  # headers and slices of every file: see paused_gc
        found = discover(Path(path), notes=notes)
        plans = tuple(plan_series(g, options) for g in found.groups)
    choice = choose_series(plans, series=series_uid, options=options)
    picked = choice.chosen.plan if choice.chosen else None
    return DicomInspection(found, plans, picked, choice.reason, choice, header_notes(notes))


def read_dicom(path: Path, *, series_uid: str | None = None, options: ReadOptions = ReadOptions()) -> DicomImage:
    """Read one CT series from a DICOM folder tree (or file): the HU volume and the checked plan it came from.

    Parameters
    ----------
    path
        Folder searched recursively, or one (multi-frame) file.
    series_uid
        The series to read (a SeriesInstanceUID, a SeriesNumber or a description glob); by default the series
        chosen by :func:`~ctseg.io.dicom.ranking.choose_series`.
    options
        Strictness and correction options (gaps, tilt correction, non-CT, padding, minimum slices) and the choice's
        preferences (kernel class, thickness band).

    Returns
    -------
    DicomImage
        ``volume``: ``(Z, Y, X)`` HU (int16 when exact, float32 otherwise) on an orthogonal LPS grid; ``plan``: the
        series, its instances in slice order and the warnings with reason codes.

    Raises
    ------
    DicomSeriesError
        With a reason code: ``NO_DICOM`` / ``NO_SERIES`` when nothing readable is found, ``SERIES_NOT_FOUND`` /
        ``AMBIGUOUS_SERIES``, or
        the chosen series' own error (``MISSING_SLICE``, ``GANTRY_TILT``, ``NOT_CT``, ...).
    UnsupportedTransferSyntaxError
        When the pixel data's compression has no installed decoder.
    """
    found = inspect_dicom(path, options=options, series_uid=series_uid)
    plan = found.require_chosen()
    with quiet_pydicom() as notes:
        volume = assemble_volume(plan, options)
    return DicomImage(volume, plan, found.reason, tuple(found.ignored), found.choice, found.notes + header_notes(notes))


def read_dicom_series(path: Path, *, series_uid: str | None = None, options: ReadOptions = ReadOptions()) -> Volume:
    """The volume of :func:`read_dicom` (same parameters and errors), for callers that need no source reference."""
    return read_dicom(path, series_uid=series_uid, options=options).volume
