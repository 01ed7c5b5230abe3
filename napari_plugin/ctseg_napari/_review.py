"""Review without Qt: per-structure statistics, accept/flag decisions with notes, and saving everything atomically.

Statistics are :func:`ctseg.infer.stats.structure_stats` on the grids the files were read on, so the numbers are
the ones ``ctseg predict`` writes to ``stats.json`` for the same mask and CT.

**Save** writes, for a mask path ``<dir>/<stem>.nii.gz``, each file atomically and in this order:

* ``<stem>.nii.gz``: the edited mask on its source grid (same voxels, same geometry as it was read);
* ``<stem>.labels.json``: names and colours (so the ctseg-napari reader finds them);
* ``<stem>.dcm``: a DICOM SEG referencing the CT series, when the image came from DICOM;
* ``<stem>.review.json`` last: :data:`REVIEW_FORMAT`, the files above and one entry per structure
  (label, name, status, note, time of the last decision, volume, mean HU).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.errors import CtsegError
from ctseg.io.atomic import write_text_atomic
from ctseg.volume import Volume
from ctseg_napari._labels import stem_of
from ctseg_napari._layers import LayerSource
from ctseg_napari._writer import save_dicom_seg, save_nifti

log = logging.getLogger(__name__)

REVIEW_FORMAT = "ctseg-review/1"
STATUSES = ("unreviewed", "accepted", "flagged")
REVIEW_SUFFIX = ".review.json"
SEG_SUFFIX = ".dcm"
NO_DICOM_NOTE = "the CT was not read from DICOM, so no DICOM SEG was written"


#: Structures absent from the mask are listed (as 0 mL, e.g. a missed organ) only for label tables up to this size.
MAX_LISTED_ABSENT = 20


def utc_now() -> str:
    """The current time, ISO 8601 in UTC with seconds (``2026-05-01T12:00:00+00:00``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class StructureReview:
    """One structure's review state; ``time`` is when its status or note last changed (``None``: never)."""

    label: int
    name: str
    status: str = "unreviewed"
    note: str = ""
    time: str | None = None


@dataclass
class ReviewSession:
    """The decisions of one review, by label value."""

    items: dict[int, StructureReview] = field(default_factory=dict)

    @classmethod
    def for_names(cls, names: Mapping[int, str]) -> ReviewSession:
        """An unreviewed entry for every named label."""
        return cls({k: StructureReview(k, names[k]) for k in sorted(names) if k})

    def item(self, label: int, name: str = "") -> StructureReview:
        """The entry of ``label`` (created unreviewed when a new label was painted)."""
        if label not in self.items:
            self.items[label] = StructureReview(label, name or f"label {label}")
        return self.items[label]

    def set_status(self, label: int, status: str, *, time: str | None = None) -> None:
        """Accept, flag or reset a structure.

        Raises
        ------
        ValueError
            For a status not in :data:`STATUSES`.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown review status {status!r}; expected one of {', '.join(STATUSES)}")
        entry = self.item(label)
        entry.status, entry.time = status, time or utc_now()

    def set_note(self, label: int, note: str, *, time: str | None = None) -> None:
        """Set a structure's free-text note."""
        entry = self.item(label)
        entry.note, entry.time = note, time or utc_now()


@dataclass(frozen=True)
class StructureRow:
    """One row of the review table: a structure's statistics (``mean_hu`` None when absent or no CT)."""

    label: int
    name: str
    color: tuple[int, int, int]
    voxels: int
    volume_ml: float
    mean_hu: float | None
    centre_lps_mm: tuple[float, float, float] | None


def _image_on(labels: Volume, image: Volume | None) -> Volume | None:
    """The CT on the mask's grid: itself when the grids agree, else resampled (linear) onto it."""
    if image is None:
        return None
    if image.geometry.is_close(labels.geometry):
        return Volume(image.array, labels.geometry)
    from ctseg.preprocess import resample_to

    log.info("the mask and CT grids differ: resampling the CT onto the mask grid for HU statistics")
    return resample_to(image, labels.geometry, order="linear", fill_value=-1024.0)


def structure_rows(
    labels: Volume,
    image: Volume | None,
    names: Mapping[int, str],
    colors: Mapping[int, tuple[int, int, int]],
) -> tuple[list[StructureRow], dict[str, Any]]:
    """Table rows and the ``stats.json``-style statistics (of the listed structures).

    Rows: every label value present, plus absent named ones when there are at most :data:`MAX_LISTED_ABSENT`.

    ``labels`` and ``image`` are on their source grids (see :func:`ctseg_napari._layers.source_volume`).
    """
    from ctseg.infer.stats import structure_stats

    present = np.flatnonzero(np.bincount(np.asarray(labels.array).ravel().astype(np.int64, copy=False)))
    all_names = {**{int(k): f"label {k}" for k in present if k}, **{k: v for k, v in names.items() if k}}
    if len(all_names) > MAX_LISTED_ABSENT:  # a big label table (e.g. 117 TotalSegmentator classes): present only
        all_names = {k: v for k, v in all_names.items() if k in set(present.tolist())}
    ct = _image_on(labels, image)
    stats = structure_stats(
        labels, ct if ct is not None else labels.with_array(np.zeros(labels.shape, np.float32)), all_names
    )
    rows = []
    for k in sorted(all_names):
        entry = stats["structures"][all_names[k]]
        centre = entry.get("bbox_centre_lps_mm")
        rows.append(
            StructureRow(
                k,
                all_names[k],
                tuple(colors.get(k, (128, 128, 128))),  # type: ignore[arg-type]
                int(entry["voxels"]),
                float(entry["volume_ml"]),
                entry["mean_hu"] if ct is not None else None,
                tuple(centre) if centre else None,  # type: ignore[arg-type]
            )
        )
    return rows, stats


@dataclass(frozen=True)
class SavedReview:
    """The files a save wrote, and why there is no DICOM SEG (``""`` when there is one or none was possible)."""

    mask: Path
    sidecar: Path
    review: Path
    dicom_seg: Path | None
    dicom_seg_note: str


def review_path(mask_path: Path) -> Path:
    """``<dir>/<stem>.nii.gz`` -> ``<dir>/<stem>.review.json``."""
    return mask_path.with_name(stem_of(mask_path) + REVIEW_SUFFIX)


def save_review(
    mask_path: Path,
    labels: Volume,
    source: LayerSource,
    review: ReviewSession,
    rows: list[StructureRow],
    *,
    image_path: str = "",
) -> SavedReview:
    """Write the mask, its label sidecar, a DICOM SEG (DICOM source only) and the review record; see module doc.

    ``labels`` is on its source grid; names and colours come from ``rows`` (what the table shows).

    Raises
    ------
    CtsegError, OSError
        When the mask or the record cannot be written (a DICOM SEG failure is recorded, not raised).
    """
    mask_path = Path(mask_path)
    names = {r.label: r.name for r in rows}
    colors = {r.label: r.color for r in rows}
    _, sidecar = save_nifti(labels, mask_path, names, colors)
    seg_path: Path | None = None
    note = ""
    if source.dicom_dir:
        try:
            seg_path = Path(
                save_dicom_seg(labels, mask_path.with_name(stem_of(mask_path) + SEG_SUFFIX), source, names, colors)
            )
        except (CtsegError, ValueError) as exc:  # e.g. an empty mask: the NIfTI and the record still count
            note = f"no DICOM SEG: {exc}"
            log.warning("%s", note)
    else:
        note = NO_DICOM_NOTE
    structures = []
    for row in rows:
        entry = review.item(row.label, row.name)
        structures.append(
            {
                **asdict(entry),
                "name": row.name,
                "voxels": row.voxels,
                "volume_ml": row.volume_ml,
                "mean_hu": row.mean_hu,
            }
        )
    record = {
        "format": REVIEW_FORMAT,
        "saved_at": utc_now(),
        "image": image_path,
        "mask": mask_path.name,
        "labels": Path(sidecar).name,
        "dicom_seg": seg_path.name if seg_path else None,
        "dicom_seg_note": note,
        "structures": structures,
    }
    out = review_path(mask_path)
    write_text_atomic(out, json.dumps(record, indent=2))
    return SavedReview(mask_path, Path(sidecar), out, seg_path, note)


def read_review(path: Path) -> dict[str, Any]:
    """A review record as written by :func:`save_review` (raises ``ValueError`` for another format)."""
    record = json.loads(Path(path).read_text())
    if record.get("format") != REVIEW_FORMAT:
        raise ValueError(f"{Path(path).name} is not a {REVIEW_FORMAT} record (format {record.get('format')!r})")
    return dict(record)
