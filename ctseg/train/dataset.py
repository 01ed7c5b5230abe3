"""The dataset folder on disk (:class:`DatasetFolder`, nnU-Net v2 raw layout): its cases, labels, and checks.

Not to be confused with :class:`~ctseg.train.patches.PatchDataset`, the torch ``Dataset`` of training patches
sampled from the preprocessed cache of such a folder.

``imagesTr/{case}_0000.nii.gz`` (or ``.nrrd``/``.mha``, or a DICOM series folder ``imagesTr/{case}_0000/``),
``labelsTr/{case}.nii.gz``, and ``dataset.json`` with ``channel_names`` and ``labels`` (name -> value).
"""

from __future__ import annotations

import json
import logging
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
        declared = {str(k): int(v) for k, v in meta["labels"].items()}
        channels = meta["channel_names"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{meta_path}: expected 'channel_names' and 'labels' (name -> value): {exc}") from exc
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
    return DatasetFolder(root, labels, source, cases)


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
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        problems.append(f"case {case.name}: image has NaN/Inf voxels; replace them (e.g. with -1024 HU)")
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if lo > AIR_MAX_HU or hi > MAX_PLAUSIBLE_HU:
        problems.append(
            f"case {case.name}: HU range {lo:.0f}..{hi:.0f} is not raw CT (expected air near -1000 HU); "
            "use the unnormalised HU image"
        )
    values = set(np.unique(label.array).astype(int).tolist())
    declared = set(dataset.source_values.values()) | {0}
    all_declared = json.loads((dataset.root / "dataset.json").read_text())["labels"].values()
    stray = sorted(values - set(int(v) for v in all_declared) - {0})
    if stray:
        problems.append(f"case {case.name}: label values {stray} are not declared in dataset.json labels")
    if not values & (declared - {0}):
        problems.append(f"case {case.name}: none of the trained classes {sorted(declared - {0})} occurs in its label")
    return problems


def check_dataset(dataset: DatasetFolder) -> list[str]:
    """Check every case; return all problems (empty: the dataset is ready to train)."""
    problems: list[str] = []
    for case in dataset.cases:
        found = check_case(dataset, case)
        problems.extend(found)
        log.info("checked %s: %s", case.name, "ok" if not found else f"{len(found)} problem(s)")
    return problems
