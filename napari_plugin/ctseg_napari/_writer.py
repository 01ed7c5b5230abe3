"""npe2 writers: a Labels layer -> NIfTI (plus a ``.labels.json`` sidecar) or DICOM SEG, on the grid it was read on.

The grid comes from the layer's :class:`~ctseg_napari._layers.LayerSource` (the array is put back into its on-disk
axis order exactly), or, for a layer ctseg did not make, from its napari transform. DICOM SEG needs the source CT
series: the checked series kept in the layer's source when it was read from DICOM (or segmented on such a layer),
else the folder a ``ctseg predict`` output's ``case.json`` names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ctseg.errors import CtsegError, NoDicomSourceError
from ctseg.io.atomic import write_text_atomic
from ctseg.volume import Volume
from ctseg_napari._labels import complete_colors, stem_of
from ctseg_napari._layers import LayerSource, source_volume, volume_of_layer

if TYPE_CHECKING:
    from ctseg.io.dicom import CheckedSeries

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".labels.json"


def label_names(meta: Mapping[str, Any], source: LayerSource) -> dict[int, str]:
    """Label value -> name: the layer's ``features`` (``index``/``name`` columns) over its source's names."""
    names = {int(k): str(v) for k, v in source.names.items()}
    features = meta.get("features")
    if features is not None and "index" in features and "name" in features:
        for k, v in zip(list(features["index"]), list(features["name"]), strict=True):
            if int(k):
                names[int(k)] = str(v)
    return names


def labels_on_source_grid(data: Any, meta: Mapping[str, Any]) -> tuple[Volume, LayerSource]:
    """The layer's labels on the grid they were read on (contiguous, integer) and the layer's source."""
    _, source = volume_of_layer(data, meta)
    volume = source_volume(data, source)
    array = np.ascontiguousarray(volume.array)
    if array.dtype.kind not in "iub":
        raise CtsegError(f"a label layer must hold integers, got {array.dtype}")
    return volume.with_array(array), source


def sidecar_path(mask_path: Path) -> Path:
    """``mask.nii.gz`` -> ``mask.labels.json`` (the reader's first label source)."""
    return mask_path.with_name(stem_of(mask_path) + SIDECAR_SUFFIX)


def write_label_sidecar(path: Path, names: Mapping[int, str], colors: Mapping[int, tuple[int, int, int]]) -> Path:
    """Write ``{"labels": {value: name}, "colors": {value: [r, g, b]}}`` atomically; return the path."""
    record = {
        "labels": {str(k): names[k] for k in sorted(names)},
        "colors": {str(k): list(colors[k]) for k in sorted(colors)},
    }
    write_text_atomic(path, json.dumps(record, indent=2))
    return path


def save_nifti(
    labels: Volume, path: Path, names: Mapping[int, str], colors: Mapping[int, tuple[int, int, int]]
) -> list[str]:
    """Write the mask (format by suffix: NIfTI, NRRD, MHA) and its label sidecar, atomically; return both paths."""
    from ctseg.io.images import write_image

    path = Path(path)
    write_image(labels, path)
    sidecar = write_label_sidecar(sidecar_path(path), names, complete_colors(names, colors, None))
    return [str(path), str(sidecar)]


def _source_series(source: LayerSource) -> CheckedSeries:
    """The checked series a SEG references: the one kept from reading, else ``source.dicom_dir``'s (a layer read
    from a file whose DICOM source is only named, e.g. by a ``ctseg predict`` case record)."""
    from ctseg.io.dicom import inspect_dicom

    if source.dicom_series is not None:
        return source.dicom_series
    if not source.dicom_dir:
        raise NoDicomSourceError(
            "this mask has no DICOM source series, so a DICOM SEG cannot reference one; open the CT as a DICOM "
            "folder with ctseg-napari (or a ctseg predict output) and segment or load the mask on it, or save NIfTI"
        )
    plan = inspect_dicom(Path(source.dicom_dir), series_uid=source.series_uid or None).chosen
    if plan is None:
        raise NoDicomSourceError(f"no usable DICOM series in {source.dicom_dir} to reference")
    return plan


def save_dicom_seg(
    labels: Volume,
    path: Path,
    source: LayerSource,
    names: Mapping[int, str],
    colors: Mapping[int, tuple[int, int, int]],
) -> str:
    """Write the mask as a DICOM SEG referencing ``source``'s CT series; return the path.

    Raises
    ------
    NoDicomSourceError
        If the layer has no DICOM source series.
    DicomSegError
        If the mask is empty or not on the series' grid (from :func:`ctseg.io.dicom_seg.write_dicom_seg`).
    """
    from ctseg.io.dicom_seg import write_dicom_seg

    plan = _source_series(source)
    colors = complete_colors(names, colors, None)
    return str(write_dicom_seg(labels, plan, Path(path), names=dict(names), colors=colors))


def write_labels_nifti(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer (Labels -> ``.nii``/``.nii.gz``): the mask on its source grid plus ``<stem>.labels.json``."""
    labels, source = labels_on_source_grid(data, meta)
    names = label_names(meta, source)
    return save_nifti(labels, Path(path), names, source.colors)


def write_labels_dicom_seg(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer (Labels -> ``.dcm``): a DICOM SEG referencing the layer's source CT series."""
    labels, source = labels_on_source_grid(data, meta)
    return [save_dicom_seg(labels, Path(path), source, label_names(meta, source), source.colors)]
