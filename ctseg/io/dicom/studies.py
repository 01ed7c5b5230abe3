"""A folder tree of DICOM studies -> the cases ``ctseg predict`` makes: one per study, or one per usable CT series.

Headers are scanned once (:func:`~ctseg.io.dicom.discover.discover`); series are grouped into studies by
StudyInstanceUID, or by the folder holding their files when the UID is blank. Inside each study the series is
chosen by the same rule as ``convert`` and ``predict`` on one folder (:func:`~ctseg.io.dicom.read.select_series`).
Names come from folder names relative to the scanned root, or from a short hash of the UID; never from a header
value such as a patient name or ID.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ctseg.io.dicom.discover import discover
from ctseg.io.dicom.plan import CheckedSeries, ReadOptions, SeriesCheck
from ctseg.io.dicom.read import select_series
from ctseg.io.dicom.series import plan_series
from ctseg.io.paths import short_hash


@dataclass(frozen=True)
class StudyCase:
    """One case found under a root: where its files are, which series to read, and a non-identifying label.

    Parameters
    ----------
    folder
        The deepest folder holding every file of the study (read again with ``series_uid`` to segment it).
    series_uid
        The series to read; ``None`` when the study has no usable series (reading it then says why).
    label
        Path-like label: the study folder relative to the root (the root's name for the root itself), plus a short
        hash of the UID for studies sharing one folder and ``s<SeriesNumber>`` (or a UID hash) per series.
    study_key
        StudyInstanceUID, or ``folder:<path>`` when the files carry none.
    reason
        Why this series was chosen, in words.
    """

    folder: Path
    series_uid: str | None
    label: str
    study_key: str
    reason: str


def _study_key(plan: SeriesCheck, root: Path) -> str:
    """StudyInstanceUID; without one, the top folder under ``root`` holding the series (one study folder each)."""
    uid = str(plan.group.first.get("StudyInstanceUID", "") or "").strip()
    if uid:
        return uid
    relative = _common_folder([plan], root).relative_to(root)
    return f"folder:{relative.parts[0] if relative.parts else '.'}"


def _common_folder(plans: Sequence[SeriesCheck], root: Path) -> Path:
    parents = {str(f.path.parent) for p in plans for f in p.group.files}
    common = Path(os.path.commonpath(sorted(parents))) if parents else root
    return common if common.is_relative_to(root) else root


def _label(folder: Path, root: Path) -> str:
    return root.name if folder == root else folder.relative_to(root).as_posix()


def find_dicom_cases(root: Path, *, options: ReadOptions = ReadOptions(), all_series: bool = False) -> list[StudyCase]:
    """Every study under ``root`` with the series to segment in each (or every usable CT series with ``all_series``).

    Parameters
    ----------
    root
        A DICOM folder tree (or one file).
    options
        The read options that decide which series are usable.
    all_series
        One case per usable CT series (non-CT too with ``options.allow_non_ct``) instead of one per study.

    Returns
    -------
    list[StudyCase]
        In the order the studies were found; one case for ``root`` when it holds no DICOM series at all (reading it
        then reports ``NO_DICOM``).

    Raises
    ------
    DicomSeriesError
        ``NO_DICOM`` when ``root`` does not exist.
    """
    root = Path(root)
    base = root if root.is_dir() else root.parent
    found = discover(root)
    plans = [plan_series(g, options) for g in found.groups]
    if not plans:
        return [StudyCase(root, None, root.name, "", "no DICOM series found")]
    studies: dict[str, list[SeriesCheck]] = {}
    for plan in plans:
        studies.setdefault(_study_key(plan, base), []).append(plan)
    folders = {key: _common_folder(group, base) for key, group in studies.items()}
    shared = {f for f in folders.values() if list(folders.values()).count(f) > 1}
    cases: list[StudyCase] = []
    for key, group in studies.items():
        folder = folders[key]
        label = _label(folder, base)
        if folder in shared:
            label = f"{label}/{short_hash(key)}"
        if all_series:
            cases.extend(_series_cases(group, folder, label, key, options))
            continue
        picked, reason = select_series(group)
        uid = picked.series_uid if picked is not None and picked.usable else None
        cases.append(StudyCase(folder, uid, label, key, reason))
    return cases


def _series_cases(
    group: Sequence[SeriesCheck], folder: Path, label: str, key: str, options: ReadOptions
) -> list[StudyCase]:
    usable = [p for p in group if isinstance(p, CheckedSeries) and (p.modality == "CT" or options.allow_non_ct)]
    if not usable:
        _, reason = select_series(group)
        return [StudyCase(folder, None, label, key, reason)]
    if len(usable) == 1:
        return [StudyCase(folder, usable[0].series_uid, label, key, "the only usable CT series")]
    numbers = [str(p.group.first.get("SeriesNumber", "") or "").strip() for p in usable]
    out = []
    for plan, number in zip(usable, numbers, strict=True):
        unique = number.isdigit() and numbers.count(number) == 1
        part = f"s{number}" if unique else short_hash(plan.series_uid)
        out.append(StudyCase(folder, plan.series_uid, f"{label}/{part}", key, "--all-series"))
    return out
