"""Label names and colours: where they come from (sidecars, embedded tables) and how napari shows them.

Label-map detection (used by the reader)
----------------------------------------
An image file (NIfTI, NRRD, MHA) is read as a **label map** when both hold:

1. its voxels are whole numbers in ``0..MAX_LABEL_VALUE`` with at most :data:`MAX_DISTINCT_LABELS` distinct values
   (integer or boolean dtype, or floats that are all whole numbers), and
2. it names its classes or says it is a mask: a *label source* is found (below), or a token of the file name is one
   of :data:`MASK_TOKENS` (``liver_mask.nii.gz``, ``ct_seg.nrrd``), or it sits in an nnU-Net ``labelsTr``/``labelsTs``
   folder.

Everything else is a CT in HU. A CT never passes rule 1 (air is about -1000 HU).

Label sources, first found wins:

* ``<stem>.labels.json`` or ``labels.json`` beside the file: ``{"1": "liver", ...}``, ``{"liver": 1, ...}``, or
  ``{"labels": {...}, "colors": {"1": [r, g, b]}}``;
* ``stats.json`` beside it (written by ``ctseg predict``): ``structures -> name -> label``;
* ``model.json`` beside it (a ctseg model folder): ``labels`` and ``colors``;
* ``dataset.json`` beside it or one folder up (nnU-Net v2): ``labels: {name: value}``;
* a label table embedded in the NIfTI header (Caret XML extension, as TotalSegmentator writes).
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctseg.colors import PALETTE  # distinct colours for labels without one, cycled by label value
from ctseg.io.atomic import full_suffix

log = logging.getLogger(__name__)

MAX_LABEL_VALUE = 65535
MAX_DISTINCT_LABELS = 1000
MASK_TOKENS = frozenset({"mask", "masks", "seg", "segmentation", "label", "labels", "labelmap"})
#: Folders whose files are label maps (nnU-Net raw layout).
MASK_FOLDER_PREFIX = "labels"
#: Opacity of label layers over the CT.
LABELS_OPACITY = 0.6
#: A label painted with a value that has no colour yet is shown in this RGBA (visible, neutral).
UNKNOWN_RGBA = (1.0, 1.0, 1.0, 0.8)
_OPAQUE = 1.0


@dataclass(frozen=True)
class LabelTable:
    """Label value -> name and RGB colour, and where they were found (``""`` when nowhere)."""

    names: dict[int, str] = field(default_factory=dict)
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    found_in: str = ""


def _int_key(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _names_from_mapping(mapping: Mapping[str, Any]) -> dict[int, str]:
    """``{"1": "liver"}`` or ``{"liver": 1}`` (nnU-Net) -> ``{1: "liver"}``; background (0) dropped."""
    out: dict[int, str] = {}
    for key, value in mapping.items():
        k = _int_key(key)
        if k is not None and isinstance(value, str):
            out[k] = value
        elif isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer():
            out[int(value)] = str(key)
    out.pop(0, None)
    return out


def _colors_from_mapping(mapping: Mapping[str, Any]) -> dict[int, tuple[int, int, int]]:
    out: dict[int, tuple[int, int, int]] = {}
    for key, value in mapping.items():
        k = _int_key(key)
        if k is not None and isinstance(value, list | tuple) and len(value) >= 3:
            out[k] = (int(value[0]), int(value[1]), int(value[2]))
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def table_from_json(path: Path) -> LabelTable | None:
    """The label table of a sidecar JSON (labels.json, stats.json, model.json, dataset.json); None if it has none."""
    data = _read_json(path)
    if data is None:
        return None
    if isinstance(data.get("structures"), dict):  # ctseg predict stats.json
        names = {int(v["label"]): str(k) for k, v in data["structures"].items() if isinstance(v, dict) and "label" in v}
        colors: dict[int, tuple[int, int, int]] = {}
    elif isinstance(data.get("labels"), dict):  # model.json, dataset.json, or a labels.json with colours
        names = _names_from_mapping(data["labels"])
        colors = _colors_from_mapping(data.get("colors") or {})
    else:
        names, colors = _names_from_mapping(data), {}
    names.pop(0, None)
    return LabelTable(names, colors, str(path)) if names else None


def table_from_caret_xml(text: str) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """``{value: (name, rgb)}`` from a Caret XML label table (NIfTI extension); empty when there is none."""
    try:
        root = ET.fromstring(text.strip().strip("\x00"))
    except ET.ParseError:
        return {}
    out = {}
    for label in root.iter("Label"):
        k = _int_key(label.get("Key"))
        if k is None or k == 0:
            continue
        rgb = tuple(int(round(float(label.get(c, "0")) * 255)) for c in ("Red", "Green", "Blue"))
        out[k] = ((label.text or f"label {k}").strip(), (rgb[0], rgb[1], rgb[2]))
    return out


def table_from_nifti_header(path: Path) -> LabelTable | None:
    """The label table embedded in a NIfTI file's header extensions, if any (reads the header only)."""
    import nibabel as nib

    try:
        image: Any = nib.load(str(path))
        extensions = image.header.extensions
    except Exception:  # nibabel raises several unrelated types for damaged files; the read reports them
        return None
    for ext in extensions:
        content = ext.get_content()
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
        if "<LabelTable" in text:
            table = table_from_caret_xml(text)
            if table:
                return LabelTable(
                    {k: v[0] for k, v in table.items()}, {k: v[1] for k, v in table.items()}, f"{path.name} header"
                )
    return None


def stem_of(path: Path) -> str:
    """The file name without its format suffix (``mask.nii.gz`` -> ``mask``)."""
    suffix = full_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def find_label_table(path: Path) -> LabelTable | None:
    """The first label source for the image file ``path`` (see the module docstring for the order)."""
    path = Path(path)
    folder = path.parent
    candidates = [folder / f"{stem_of(path)}.labels.json", folder / "labels.json", folder / "stats.json"]
    candidates += [folder / "model.json", folder / "dataset.json", folder.parent / "dataset.json"]
    for candidate in candidates:
        if candidate.is_file():
            table = table_from_json(candidate)
            if table is not None:
                return table
    if full_suffix(path) in (".nii", ".nii.gz"):
        return table_from_nifti_header(path)
    return None


def has_mask_name(path: Path) -> bool:
    """Whether the file name (or its nnU-Net folder) says it is a mask, e.g. ``liver_mask.nii.gz``."""
    tokens = {t for t in re.split(r"[^a-z0-9]+", stem_of(Path(path)).lower()) if t}
    return bool(tokens & MASK_TOKENS) or Path(path).parent.name.lower().startswith(MASK_FOLDER_PREFIX)


def looks_like_labels(array: np.ndarray) -> bool:
    """Rule 1 of the module docstring: whole numbers in 0..65535, few distinct values."""
    a = np.asarray(array)
    if a.dtype.kind not in "biuf" or a.size == 0:
        return False
    lo, hi = a.min(), a.max()
    if lo < 0 or hi > MAX_LABEL_VALUE:
        return False
    if a.dtype.kind == "f" and not np.array_equal(a, np.floor(a)):
        return False
    counts = np.bincount(a.astype(np.int64, copy=False).ravel(), minlength=1)
    return int(np.count_nonzero(counts)) <= MAX_DISTINCT_LABELS


def complete_colors(
    names: Mapping[int, str], colors: Mapping[int, tuple[int, int, int]], values: np.ndarray | None = None
) -> dict[int, tuple[int, int, int]]:
    """Colours for every named label (and every value in ``values``): the given ones, else :data:`PALETTE`."""
    keys = set(names) | set(colors) | {int(v) for v in (values if values is not None else []) if v}
    return {k: tuple(colors[k]) if k in colors else PALETTE[(k - 1) % len(PALETTE)] for k in sorted(keys) if k}  # type: ignore[misc]


def napari_colormap(
    colors: Mapping[int, tuple[int, int, int]], hidden: frozenset[int] | set[int] = frozenset()
) -> dict[int | None, tuple[float, float, float, float]]:
    """A napari direct label colormap (``{value: RGBA 0-1}``): background and ``hidden`` labels transparent."""
    cmap: dict[int | None, tuple[float, float, float, float]] = {None: UNKNOWN_RGBA, 0: (0.0, 0.0, 0.0, 0.0)}
    for k, (r, g, b) in colors.items():
        cmap[int(k)] = (0.0, 0.0, 0.0, 0.0) if k in hidden else (r / 255.0, g / 255.0, b / 255.0, _OPAQUE)
    return cmap


def features_table(names: Mapping[int, str]) -> dict[str, list[Any]]:
    """The Labels layer ``features``: one row per label, ``index`` = label value (row 0 = background)."""
    keys = [0, *sorted(k for k in names if k)]
    return {"index": keys, "name": ["background" if k == 0 else names[k] for k in keys]}
