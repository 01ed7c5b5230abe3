"""The dataset folder on disk (:class:`DatasetFolder`, nnU-Net v2 raw layout): its cases, labels, and checks.

Not to be confused with :class:`~ctseg.train.patches.PatchDataset`, the torch ``Dataset`` of training patches
sampled from the preprocessed cache of such a folder.

``imagesTr/{case}_0000.nii.gz`` (or ``.nrrd``/``.mha``, or a DICOM series folder ``imagesTr/{case}_0000/``),
``labelsTr/{case}.nii.gz``, and ``dataset.json`` with ``channel_names`` and ``labels`` (name -> value).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctseg.errors import ConfigError, CtsegError, DatasetError
from ctseg.io import read_volume
from ctseg.io.atomic import full_suffix
from ctseg.io.images import IMAGE_SUFFIXES
from ctseg.volume import Volume

log = logging.getLogger(__name__)

#: Grid agreement between image and label (mm).
GRID_TOL_MM = 1e-3
#: A raw CT has air near -1000 HU and nothing far above bone/metal.
AIR_MAX_HU = -500.0
MAX_PLAUSIBLE_HU = 35000.0
#: Label values are non-negative integers up to this (uint16, as label maps are stored).
MAX_LABEL_VALUE = 65535
#: Problems quoted in the error that stops a training on a dataset that fails its checks.
MAX_PROBLEMS_SHOWN = 5


@dataclass(frozen=True)
class Case:
    """One training case: its image (file or DICOM folder) and label map."""

    name: str
    image: Path
    label: Path


@dataclass
class DatasetFolder:
    """A parsed dataset: label names -> training values, and its cases.

    ``labels`` maps the *training* class index (1..K, contiguous) to its name; ``source_values`` maps the same index
    to the value in the label files (they differ when a subset of a larger label map is trained).
    """

    root: Path
    labels: dict[int, str]
    source_values: dict[int, int]
    cases: list[Case] = field(default_factory=list)
    #: Every label of dataset.json (name -> value), trained or not; a label file may hold only these values.
    declared: dict[str, int] = field(default_factory=dict)
    #: Trained on a chosen subset (``--labels``) of a larger label map: other values become background, so label
    #: files may hold values dataset.json does not list (e.g. the other classes of a 100-class map).
    subset: bool = False

    @property
    def num_classes(self) -> int:
        """Classes including background."""
        return len(self.labels) + 1

    def remap(self, label_array: np.ndarray) -> np.ndarray:
        """Source label values -> training indices (0 for anything not selected), uint8."""
        lut = np.zeros(max(int(label_array.max()), max(self.source_values.values())) + 1, np.uint8)
        for idx, value in self.source_values.items():
            lut[value] = idx
        return lut[label_array.astype(np.int64)]


def parse_label_subset(text: str) -> dict[str, int]:
    """``"liver=5,spleen=1"`` -> ``{"liver": 5, "spleen": 1}`` (order kept: liver becomes class 1).

    Raises
    ------
    ConfigError
        For a malformed entry.
    """
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip().lstrip("-").isdigit():
            raise ConfigError(f"--labels entry {part!r} is not NAME=VALUE (e.g. liver=5,spleen=1)")
        out[name.strip()] = int(value)
    if not out:
        raise ConfigError("--labels is empty; give NAME=VALUE pairs, e.g. liver=5,spleen=1")
    return out


def _declared_labels(meta: object, meta_path: Path) -> dict[str, int]:
    """dataset.json's ``labels``: names -> distinct integer values in 0..MAX_LABEL_VALUE.

    Raises
    ------
    DatasetError
        When ``labels`` is missing, not an object, or holds a value that is not such an integer.
    """
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise DatasetError(
            f"{meta_path}: 'labels' is {type(labels).__name__ if labels is not None else 'missing'}"
            f"{' (empty)' if labels == {} else ''}; expected an object of name -> value, e.g. "
            '{"background": 0, "liver": 1}'
        )
    out: dict[str, int] = {}
    for name, value in labels.items():
        ok = isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
        if not ok or not 0 <= value <= MAX_LABEL_VALUE:
            raise DatasetError(
                f"{meta_path}: label {name!r} has value {value!r}; expected an integer 0..{MAX_LABEL_VALUE} "
                "(region lists are not supported)"
            )
        out[str(name)] = int(value)
    repeated = sorted({v for v in out.values() if list(out.values()).count(v) > 1})
    if repeated:
        raise DatasetError(f"{meta_path}: label value(s) {repeated} given to several names; expected one name each")
    return out


def _find_image(images_dir: Path, case: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        p = images_dir / f"{case}_0000{suffix}"
        if p.exists():
            return p
    folder = images_dir / f"{case}_0000"
    return folder if folder.is_dir() else None


def load_dataset(root: Path, *, label_subset: dict[str, int] | None = None) -> DatasetFolder:
    """Read ``dataset.json`` and pair images with labels.

    Raises
    ------
    DatasetError
        For a missing ``dataset.json``/``labelsTr``, a label without an image, or an unknown subset label.
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DatasetError(f"{meta_path} not found; a dataset folder holds dataset.json, imagesTr/ and labelsTr/")
    try:
        meta = json.loads(meta_path.read_text())
        channels = meta["channel_names"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{meta_path}: expected 'channel_names' and 'labels' (name -> value): {exc}") from exc
    declared = _declared_labels(meta, meta_path)
    if not isinstance(channels, dict | list):
        raise DatasetError(f'{meta_path}: \'channel_names\' is {channels!r}; expected an object, e.g. {{"0": "CT"}}')
    if len(channels) != 1:
        raise DatasetError(f"{meta_path}: {len(channels)} channels declared; ctseg trains single-channel CT")
    foreground = {n: v for n, v in declared.items() if v != 0}
    if label_subset:
        unknown = [n for n, v in label_subset.items() if foreground.get(n, v) != v or v not in declared.values()]
        if unknown:
            raise DatasetError(
                f"--labels {', '.join(unknown)} not in dataset.json labels {foreground}; use NAME=VALUE from that list"
            )
        chosen = list(label_subset.items())
    else:
        chosen = sorted(foreground.items(), key=lambda kv: kv[1])
    labels = {i + 1: name for i, (name, _) in enumerate(chosen)}
    source = {i + 1: value for i, (_, value) in enumerate(chosen)}
    labels_dir, images_dir = root / "labelsTr", root / "imagesTr"
    if not labels_dir.is_dir():
        raise DatasetError(f"{labels_dir} not found")
    cases = []
    for label_path in sorted(labels_dir.iterdir()):
        suffix = full_suffix(label_path)
        if suffix not in IMAGE_SUFFIXES or label_path.name.startswith("."):
            continue
        name = label_path.name[: -len(suffix)]
        image = _find_image(images_dir, name)
        if image is None:
            raise DatasetError(f"case {name}: no image {images_dir}/{name}_0000.nii.gz (or .nrrd/.mha/DICOM folder)")
        cases.append(Case(name, image, label_path))
    if not cases:
        raise DatasetError(f"no label files in {labels_dir}")
    return DatasetFolder(root, labels, source, cases, declared, subset=bool(label_subset))


def read_case(case: Case) -> tuple[Volume, Volume]:
    """The case's image (HU) and label map (source values)."""
    return read_volume(case.image), read_volume(case.label)


def check_case(dataset: DatasetFolder, case: Case) -> list[str]:
    """Problems with one case, each naming the case and the fix; empty when it is fine."""
    problems: list[str] = []
    try:
        image, label = read_case(case)
    except CtsegError as exc:
        return [f"case {case.name}: cannot be read: {exc}"]
    if not image.geometry.is_close(label.geometry, atol_mm=GRID_TOL_MM, atol_direction=1e-4):
        problems.append(
            f"case {case.name}: label grid {label.geometry.shape} @ {np.round(label.geometry.spacing_mm, 3).tolist()} mm "
            f"differs from image grid {image.geometry.shape} @ {np.round(image.geometry.spacing_mm, 3).tolist()} mm; "
            "resample the label onto the image (ctseg uses nearest-neighbour on labels)"
        )
    arr = np.asarray(image.array)
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" and not np.isfinite(arr).all() else arr
    if finite is not arr:
        problems.append(f"case {case.name}: image has NaN/Inf voxels; replace them (e.g. with -1024 HU)")
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)
    if lo > AIR_MAX_HU or hi > MAX_PLAUSIBLE_HU:
        problems.append(
            f"case {case.name}: HU range {lo:.0f}..{hi:.0f} is not raw CT (expected air near -1000 HU); "
            "use the unnormalised HU image"
        )
    label_problem = _label_values_problem(dataset, np.unique(np.asarray(label.array)))
    if label_problem:
        problems.append(f"case {case.name}: {label_problem}")
    return problems


def _label_values_problem(dataset: DatasetFolder, found: np.ndarray) -> str | None:
    """What is wrong with the distinct values of a label map (``found``, sorted), in words; None when nothing."""
    shown = found[:8].tolist()
    if found.dtype.kind == "f":
        bad = found[~np.isfinite(found) | (found != np.round(found))]
        if bad.size:
            return (
                f"label values {bad[:8].tolist()} are not integers (values {shown}); a label map holds integer "
                "class values: round or re-export it (nearest-neighbour if it was resampled)"
            )
    if found.size and (found[0] < 0 or found[-1] > MAX_LABEL_VALUE):
        return f"label values {shown} outside 0..{MAX_LABEL_VALUE}; a label map holds the values of dataset.json"
    values = set(found.astype(np.int64).tolist())
    stray = sorted(values - set(dataset.declared.values()) - {0})
    if stray and not dataset.subset:
        return f"label values {stray} are not declared in dataset.json labels {dataset.declared}"
    trained = set(dataset.source_values.values())
    if not values & trained:
        return f"none of the trained classes {sorted(trained)} occurs in its label"
    return None


def check_dataset(dataset: DatasetFolder) -> list[str]:
    """Check every case; return all problems (empty: the dataset is ready to train)."""
    problems: list[str] = []
    for case in dataset.cases:
        found = check_case(dataset, case)
        problems.extend(found)
        log.info("checked %s: %s", case.name, "ok" if not found else f"{len(found)} problem(s)")
    return problems


def require_valid_dataset(dataset: DatasetFolder) -> None:
    """Run :func:`check_dataset` before a training: refuse a dataset with any problem.

    Raises
    ------
    DatasetError
        Listing the first :data:`MAX_PROBLEMS_SHOWN` problems and how to see them all.
    """
    problems = check_dataset(dataset)
    if problems:
        more = f" (and {len(problems) - MAX_PROBLEMS_SHOWN} more)" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise DatasetError(
            f"{len(problems)} problem(s) in {len(dataset.cases)} cases of {dataset.root.name}, training not started: "
            + "; ".join(problems[:MAX_PROBLEMS_SHOWN])
            + f"{more}. Fix them (ctseg train DATASET --check lists every one)"
        )
