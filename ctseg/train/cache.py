"""The preprocessed cache: each case resampled and normalised once, stored as ``.npy`` and memory-mapped.

A dataset larger than RAM trains because workers read patches straight from the memory-mapped files; DDP ranks
share one cache (rank 0 writes it, the others wait at a barrier and map the same files). The cache folder is named
by a hash of the preprocessing config and the source files' sizes and modification times, so a changed input or
config gets a fresh cache and a rerun reuses a finished one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctseg.config import PreprocessConfig, to_dict
from ctseg.io.atomic import atomic_path, write_text_atomic
from ctseg.preprocess.pipeline import preprocess_image, preprocess_labels
from ctseg.train.dataset import Case, DatasetFolder, read_case

log = logging.getLogger(__name__)

#: Foreground voxel coordinates stored per class for oversampling.
MAX_FOREGROUND_SAMPLES = 10_000


@dataclass(frozen=True)
class CachedCase:
    """A case in the cache: memory-mapped arrays and per-class foreground coordinates."""

    name: str
    image: np.ndarray  # (Z, Y, X) float32, memory-mapped
    labels: np.ndarray  # (Z, Y, X) uint8, memory-mapped
    foreground: dict[int, np.ndarray]  # class -> (N, 3) int coordinates


def _stat_key(path: Path) -> list[object]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [[str(p.relative_to(path.parent)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def cache_key(dataset: DatasetFolder, config: PreprocessConfig) -> str:
    """Hash of the preprocessing config, label mapping and source files."""
    payload = {
        "preprocess": to_dict(config),
        "source_values": dataset.source_values,
        "cases": [[c.name, _stat_key(c.image), _stat_key(c.label)] for c in dataset.cases],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_case(folder: Path, dataset: DatasetFolder, case: Case, config: PreprocessConfig, seed: int) -> None:
    image, labels = read_case(case)
    labels = labels.with_array(dataset.remap(np.asarray(labels.array)))
    pre = preprocess_image(image, config)
    lab = preprocess_labels(labels, config)
    rng = np.random.default_rng(seed)
    fg = {}
    for value in range(1, dataset.num_classes):
        coords = np.argwhere(lab.array == value)
        if len(coords) > MAX_FOREGROUND_SAMPLES:
            coords = coords[rng.choice(len(coords), MAX_FOREGROUND_SAMPLES, replace=False)]
        fg[str(value)] = coords.tolist()
    for suffix, arr in ((".image.npy", pre.array.astype(np.float32)), (".labels.npy", lab.array.astype(np.uint8))):
        with atomic_path(folder / f"{case.name}{suffix}") as tmp:
            np.save(tmp, arr)
    meta = {"shape": list(pre.shape), "spacing_mm": list(pre.geometry.spacing_mm), "foreground": fg}
    write_text_atomic(folder / f"{case.name}.json", json.dumps(meta))


def build_cache(root: Path, dataset: DatasetFolder, config: PreprocessConfig, *, write: bool = True) -> Path:
    """Make sure every case is in the cache under ``root``; return the cache folder.

    With ``write=False`` (DDP ranks other than 0) nothing is written; the folder is only computed.
    """
    folder = Path(root) / cache_key(dataset, config)
    if not write:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    todo = [c for c in dataset.cases if not (folder / f"{c.name}.json").exists()]
    if todo:
        from tqdm.auto import tqdm

        for i, case in enumerate(tqdm(todo, desc="preprocessing", unit="case", disable=len(todo) < 2)):
            _write_case(folder, dataset, case, config, seed=i)
    log.info("cache %s: %d cases (%d new)", folder, len(dataset.cases), len(todo))
    return folder


def open_case(folder: Path, name: str) -> CachedCase:
    """Memory-map a cached case."""
    meta = json.loads((folder / f"{name}.json").read_text())
    fg = {int(k): np.asarray(v, dtype=np.int64).reshape(-1, 3) for k, v in meta["foreground"].items()}
    return CachedCase(
        name,
        np.load(folder / f"{name}.image.npy", mmap_mode="r"),
        np.load(folder / f"{name}.labels.npy", mmap_mode="r"),
        fg,
    )
