"""DICOM CT ingestion: folder tree -> series -> checked stack -> :class:`~ctseg.volume.Volume` in HU.

The public entry points are :func:`inspect_dicom` (what is in a folder, which series would be read and why) and
:func:`read_dicom_series` (read one series).

Series selection rule (used by ``convert`` and ``predict`` when no series UID is given): among usable series, prefer
CT, then axial, then the most slices, then the thinnest slice spacing; ties go to the first found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ctseg.errors import DicomSeriesError, SeriesReason
from ctseg.io.dicom.discover import Discovery, IgnoredFile, discover
from ctseg.io.dicom.series import ReadOptions, SeriesPlan, plan_series
from ctseg.io.dicom.stack import assemble_volume
from ctseg.volume import Volume

__all__ = ["DicomInspection", "ReadOptions", "SeriesPlan", "inspect_dicom", "read_dicom_series", "select_series"]


@dataclass
class DicomInspection:
    """Everything found under a path: checked series, ignored files, and the series that would be read."""

    discovery: Discovery
    plans: list[SeriesPlan]
    chosen: SeriesPlan | None
    reason: str

    @property
    def ignored(self) -> list[IgnoredFile]:
        """Files that were found but are not part of any series."""
        return self.discovery.ignored


def select_series(plans: list[SeriesPlan], series_uid: str | None = None) -> tuple[SeriesPlan | None, str]:
    """Pick the series to read, with the reason in words.

    Parameters
    ----------
    plans
        Checked series.
    series_uid
        When given, that series (usable or not) and no other.

    Raises
    ------
    DicomSeriesError
        ``SERIES_NOT_FOUND`` when ``series_uid`` matches no series.
    """
    if series_uid is not None:
        for plan in plans:
            if plan.series_uid == series_uid:
                return plan, "chosen by --series"
        known = ", ".join(p.series_uid for p in plans) or "none"
        raise DicomSeriesError(SeriesReason.SERIES_NOT_FOUND, f"no series with UID {series_uid}; series found: {known}")
    usable = [p for p in plans if p.usable]
    if not usable:
        return None, "no usable series"

    def rank(p: SeriesPlan) -> tuple[bool, bool, int, float]:
        return (p.modality == "CT", p.is_axial, len(p.slices), -p.step_mm)

    best = max(usable, key=rank)
    why = [f"{len(usable)} usable of {len(plans)}"]
    if not best.is_axial:
        why.append("no axial series")
    why.append(f"most slices ({len(best.slices)})")
    if sum(1 for p in usable if len(p.slices) == len(best.slices)) > 1:
        why.append(f"thinnest ({best.step_mm:.3g} mm)")
    return best, "usable axial CT with the " + ", ".join(why[1:]) + f" [{why[0]}]"


def inspect_dicom(
    path: Path, *, options: ReadOptions = ReadOptions(), series_uid: str | None = None
) -> DicomInspection:
    """Scan ``path`` and check every series in it, without reading pixel data.

    Raises
    ------
    DicomSeriesError
        ``NO_DICOM`` when the path does not exist; ``SERIES_NOT_FOUND`` for an unknown ``series_uid``.
    """
    found = discover(Path(path))
    plans = [plan_series(g, options) for g in found.groups]
    chosen, reason = select_series(plans, series_uid)
    return DicomInspection(found, plans, chosen, reason)


def read_dicom_series(path: Path, *, series_uid: str | None = None, options: ReadOptions = ReadOptions()) -> Volume:
    """Read one CT series from a DICOM folder tree (or file) as a HU volume.

    Parameters
    ----------
    path
        Folder searched recursively, or one (multi-frame) file.
    series_uid
        The SeriesInstanceUID to read; by default the series chosen by :func:`select_series`.
    options
        Strictness and correction options.

    Returns
    -------
    Volume
        ``(Z, Y, X)`` HU (int16 when exact, float32 otherwise) on an orthogonal LPS grid.

    Raises
    ------
    DicomSeriesError
        With a reason code: ``NO_DICOM`` / ``NO_SERIES`` when nothing readable is found, or the chosen series'
        own error (``MISSING_SLICE``, ``GANTRY_TILT``, ``NOT_CT``, ...).
    UnsupportedTransferSyntaxError
        When the pixel data's compression has no installed decoder.
    """
    found = inspect_dicom(path, options=options, series_uid=series_uid)
    if found.chosen is None:
        if not found.plans:
            n = len(found.ignored)
            raise DicomSeriesError(
                SeriesReason.NO_DICOM,
                f"no DICOM image series under {Path(path).name} ({n} file(s) ignored); expected a folder of CT slices",
            )
        errors = "; ".join(str(p.error) for p in found.plans if p.error is not None)
        if len(found.plans) == 1 and found.plans[0].error is not None:
            raise found.plans[0].error
        raise DicomSeriesError(SeriesReason.NO_SERIES, f"no usable series under {Path(path).name}: {errors}")
    return assemble_volume(found.chosen, options)
