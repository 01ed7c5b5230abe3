"""npe2 reader: DICOM folders and files, NIfTI/NRRD/MHA images and label maps, DICOM SEG -> napari layers.

* A folder (or a ``.dcm`` CT file) -> the series ctseg would read (:func:`ctseg.io.dicom.select_series`; a file
  picks its own series) as an Image layer in HU; DICOM SEG files in the folder come with it as Labels layers.
* An image file -> a Labels layer when it is a label map (rule in :mod:`ctseg_napari._labels`), else an Image layer.
* A DICOM SEG file -> a Labels layer on its source series' grid when that series is found (beside the SEG, or the
  ``input`` recorded in the ``case.json`` of ``ctseg predict``), else on the SEG's own frame grid.

Every layer is placed in world mm (:mod:`ctseg_napari._layers`). The reader never raises: a path it does not
recognise gets ``None`` from :func:`get_reader`, and a recognised path that fails to read gets ``None`` from the
reader function, with the reason as a warning (napari shows it).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ctseg.errors import CtsegError
from ctseg.io.atomic import full_suffix
from ctseg.io.images import IMAGE_SUFFIXES
from ctseg.volume import Geometry, Volume
from ctseg_napari._labels import (
    LABELS_OPACITY,
    LabelTable,
    complete_colors,
    features_table,
    find_label_table,
    has_mask_name,
    looks_like_labels,
    napari_colormap,
    stem_of,
)
from ctseg_napari._layers import LayerDataTuple, layer_from_volume

if TYPE_CHECKING:
    from ctseg.io.dicom import CheckedSeries

log = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")
#: How many files of a folder :func:`get_reader` looks at to decide whether it holds DICOM.
SNIFF_FILES = 200
PREAMBLE_BYTES = 128
MAGIC = b"DICM"
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
#: Default display window of a CT layer: soft tissue (level, width) in HU.
DEFAULT_WINDOW_HU = (40.0, 400.0)

ReaderFunction = Callable[[Any], "list[LayerDataTuple] | None"]


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fp:
            fp.seek(PREAMBLE_BYTES)
            return fp.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _holds_dicom(folder: Path) -> bool:
    """Whether one of the first :data:`SNIFF_FILES` files under ``folder`` is DICOM (Part 10 magic)."""
    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in sorted(dirs) if not d.startswith(".")]
        for name in sorted(files):
            if _is_dicom_file(Path(root) / name):
                return True
            seen += 1
            if seen >= SNIFF_FILES:
                return False
    return False


def get_reader(path: str | list[str]) -> ReaderFunction | None:
    """The npe2 ``get_reader`` hook: :func:`read` for a path this plugin can read, else ``None``."""
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir():
        return read if _holds_dicom(p) else None
    if not p.is_file():
        return None
    if full_suffix(p) in IMAGE_SUFFIXES:
        return read
    if p.suffix.lower() in DICOM_SUFFIXES and _is_dicom_file(p):
        return read
    return None


def read(path: str | list[str]) -> list[LayerDataTuple] | None:
    """The reader function: layer data tuples for ``path``, or ``None`` (with a warning) when it cannot be read."""
    p = Path(path[0] if isinstance(path, list | tuple) else path)
    try:
        return read_layers(p)
    except Exception as exc:  # the reader contract: report, never raise (napari then says no reader could read it)
        log.warning("ctseg-napari cannot read %s", p, exc_info=True)
        warnings.warn(f"ctseg-napari cannot read {p.name}: {exc}", stacklevel=2)
        return None


def read_layers(path: Path) -> list[LayerDataTuple]:
    """Read ``path`` into layer data tuples (raising on failure; :func:`read` is the non-raising wrapper).

    Raises
    ------
    CtsegError
        For a path ctseg cannot read (the message says why).
    """
    path = Path(path)
    if path.is_dir():
        return _read_dicom_folder(path)
    if full_suffix(path) in IMAGE_SUFFIXES:
        return [_read_image_file(path)]
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True)
    if str(header.get("SOPClassUID", "")) in SEG_SOP_CLASSES:
        return [_read_seg(path, header)]
    return _read_dicom_folder(path.parent, series_uid=str(header.get("SeriesInstanceUID", "")) or None)


def image_layer(
    volume: Volume,
    name: str,
    *,
    path: str = "",
    dicom_dir: str = "",
    series_uid: str = "",
    dicom_series: CheckedSeries | None = None,
) -> LayerDataTuple:
    """An Image layer tuple for a HU volume (soft-tissue window, world mm)."""
    array, kwargs, _ = layer_from_volume(
        volume,
        layer_type="image",
        name=name,
        path=path,
        dicom_dir=dicom_dir,
        series_uid=series_uid,
        dicom_series=dicom_series,
    )
    level, width = DEFAULT_WINDOW_HU
    kwargs.update(colormap="gray", contrast_limits=(level - width / 2, level + width / 2))
    return array, kwargs, "image"


def labels_layer(
    volume: Volume,
    name: str,
    table: LabelTable,
    *,
    path: str = "",
    dicom_dir: str = "",
    series_uid: str = "",
    dicom_series: CheckedSeries | None = None,
) -> LayerDataTuple:
    """A Labels layer tuple: names as ``features``, colours as a direct colormap, world mm."""
    array = np.asarray(volume.array)
    if array.dtype.kind not in "iu":
        array = array.astype(np.uint8 if array.max(initial=0) <= np.iinfo(np.uint8).max else np.uint16)
    present = np.flatnonzero(np.bincount(array.ravel().astype(np.int64, copy=False)))
    names = {**{int(k): f"label {k}" for k in present if k}, **table.names}
    colors = complete_colors(names, table.colors, present)
    canonical, kwargs, _ = layer_from_volume(
        volume.with_array(array),
        layer_type="labels",
        name=name,
        path=path,
        dicom_dir=dicom_dir,
        series_uid=series_uid,
        names=names,
        colors=colors,
        dicom_series=dicom_series,
    )
    kwargs.update(features=features_table(names), colormap=napari_colormap(colors), opacity=LABELS_OPACITY)
    return canonical, kwargs, "labels"


def _read_dicom_folder(folder: Path, series_uid: str | None = None) -> list[LayerDataTuple]:
    from ctseg.io.dicom import read_dicom

    image = read_dicom(folder, series_uid=series_uid)
    volume, plan = image.volume, image.plan
    layers = [
        image_layer(
            volume, folder.name, path=str(folder), dicom_dir=str(folder), series_uid=plan.series_uid, dicom_series=plan
        )
    ]
    for ignored in image.ignored:
        if "SEG" in ignored.reason:
            try:
                seg_source = _SegSource(volume.geometry, folder, plan)
                layers.append(_read_seg(ignored.path, source=seg_source))
            except Exception as exc:  # one bad SEG (pydicom raises many types) must not hide the CT; it is reported
                warnings.warn(f"ctseg-napari skipped {ignored.path.name}: {exc}", stacklevel=2)
    return layers


def _predict_record(folder: Path) -> dict[str, Any]:
    """The ``case.json`` of a ``ctseg predict`` case folder (input path, series UID), or ``{}``."""
    try:
        record = json.loads((folder / "case.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _read_image_file(path: Path) -> LayerDataTuple:
    from ctseg.io.images import read_image

    volume = read_image(path)
    table = find_label_table(path)
    if (table is not None or has_mask_name(path)) and looks_like_labels(volume.array):
        record = _predict_record(path.parent)
        dicom = record.get("input", "") if record.get("series_uid") and Path(record.get("input", "")).is_dir() else ""
        return labels_layer(
            volume,
            stem_of(path),
            table or LabelTable(),
            path=str(path),
            dicom_dir=dicom,
            series_uid=record.get("series_uid", "") if dicom else "",
        )
    return image_layer(volume, stem_of(path), path=str(path))


@dataclass(frozen=True)
class _SegSource:
    """The source series of a SEG: its grid, folder and checked plan."""

    geometry: Geometry
    folder: Path
    plan: CheckedSeries


def _find_source_series(seg_path: Path, uid: str) -> _SegSource | None:
    """The grid, folder and plan of the SEG's referenced series: beside the SEG, or the predict case's input.

    Only a series read without resampling is used (a resampled grid has no source slice per frame).
    """
    from ctseg.io.dicom import inspect_dicom

    folders = [seg_path.parent]
    recorded = _predict_record(seg_path.parent).get("input", "")
    if recorded and Path(recorded).is_dir():
        folders.insert(0, Path(recorded))
    for folder in folders:
        try:
            plan = inspect_dicom(folder, series_uid=uid).chosen
        except CtsegError:  # not found there: try the next folder, else use the SEG's own grid
            continue
        if plan is not None and not plan.needs_resampling:
            return _SegSource(plan.geometry, folder, plan)
    return None


def _seg_colors(header: Any) -> dict[int, tuple[int, int, int]]:
    from highdicom.color import CIELabColor

    out = {}
    for item in header.get("SegmentSequence") or []:
        lab = item.get("RecommendedDisplayCIELabValue")
        if lab is not None:
            out[int(item.SegmentNumber)] = tuple(int(v) for v in CIELabColor.from_dicom_value(lab).to_rgb())
    return out  # type: ignore[return-value]


def _read_seg(path: Path, header: Any = None, *, source: _SegSource | None = None) -> LayerDataTuple:
    import pydicom

    from ctseg.io.dicom_seg import DicomSegError, read_dicom_seg

    header = header if header is not None else pydicom.dcmread(path, stop_before_pixels=True)
    if source is None:
        refs = header.get("ReferencedSeriesSequence") or []
        uid = str(refs[0].get("SeriesInstanceUID", "")) if refs else ""
        source = _find_source_series(path, uid) if uid else None
    try:
        labels, names = read_dicom_seg(path, source.geometry if source else None)
    except DicomSegError:
        if source is None:
            raise
        log.warning("%s does not fit its source series' grid; reading it on its own frame grid", path.name)
        (labels, names), source = read_dicom_seg(path, None), None
    table = LabelTable(names, _seg_colors(header), str(path))
    if source is None:
        return labels_layer(labels, stem_of(path), table, path=str(path))
    return labels_layer(
        labels,
        stem_of(path),
        table,
        path=str(path),
        dicom_dir=str(source.folder),
        series_uid=source.plan.series_uid,
        dicom_series=source.plan,
    )
