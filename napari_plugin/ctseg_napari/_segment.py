"""Segmentation for the widget, without Qt: load a model (cached), run :func:`ctseg.segment` with cancellation.

Cancellation is cooperative: ``segment()`` calls ``progress(done, total)`` after each batch of windows, and the
callback raises :class:`SegmentationCancelled` once the event is set, which unwinds ``segment()`` cleanly (no
partial output is produced). Resampling before the first window cannot be interrupted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ctseg.volume import Volume
from ctseg_napari._labels import LABELS_OPACITY, complete_colors, features_table, napari_colormap
from ctseg_napari._layers import META_KEY, LayerDataTuple, LayerSource, layer_transform

if TYPE_CHECKING:
    from ctseg.infer import LoadedModel

#: Models kept loaded, by (folder, modification time of model.json), so re-running does not reload weights.
MODEL_CACHE_SIZE = 2


class SegmentationCancelled(Exception):
    """Raised inside the progress callback when the user cancels; never escapes the widget."""


@dataclass(frozen=True)
class SegmentationResult:
    """What the worker hands back to the GUI thread."""

    labels: Volume
    names: dict[int, str]
    colors: dict[int, tuple[int, int, int]]


@lru_cache(maxsize=MODEL_CACHE_SIZE)
def _load_cached(folder: str, stamp: float) -> LoadedModel:
    from ctseg.infer import load_model

    return load_model(Path(folder))


def load_model_cached(folder: Path) -> LoadedModel:
    """:func:`ctseg.load_model`, cached while ``model.json`` is unchanged.

    Raises
    ------
    CheckpointError
        For a missing or damaged model folder.
    """
    from ctseg.errors import CheckpointError

    meta = Path(folder) / "model.json"
    if not meta.is_file():
        raise CheckpointError(
            f"{folder} is not a ctseg model folder (no model.json); pick the folder ctseg train wrote"
        )
    return _load_cached(str(Path(folder).resolve()), meta.stat().st_mtime)


def run_segmentation(
    image: Volume,
    model: LoadedModel | Path,
    *,
    device: str = "cpu",
    runtime: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> SegmentationResult:
    """Segment ``image`` (HU, any grid) and return the label map on the same grid with the model's names/colours.

    Raises
    ------
    SegmentationCancelled
        When ``cancel`` is set while windows are being predicted.
    CheckpointError
        When ``model`` is a folder that cannot be loaded, or an exported file fails its sha256 check.
    ConfigError
        When ``runtime`` names a runtime the model has no export for.
    """
    from ctseg.infer import segment

    loaded = load_model_cached(model) if isinstance(model, Path | str) else model

    def on_progress(done: int, total: int) -> None:
        if cancel is not None and cancel.is_set():
            raise SegmentationCancelled
        if progress is not None:
            progress(done, total)

    if cancel is not None and cancel.is_set():
        raise SegmentationCancelled
    # Layer arrays can be flipped views (negative strides), which torch.from_numpy refuses.
    labels = segment(
        image.with_array(np.ascontiguousarray(image.array)),
        loaded,
        device=device,
        progress=on_progress,
        runtime=runtime,
    )
    names = {k: v for k, v in loaded.labels.items() if k}
    return SegmentationResult(labels, names, complete_colors(names, loaded.colors, None))


def result_layer(result: SegmentationResult, image_source: LayerSource, name: str) -> LayerDataTuple:
    """A Labels layer tuple for a result computed on the image layer's grid: same world transform and source."""
    source = LayerSource(
        image_source.geometry,
        image_source.source_geometry,
        "",
        image_source.dicom_dir,
        image_source.series_uid,
        result.names,
        result.colors,
        image_source.dicom_series,
    )
    kwargs: dict[str, Any] = {
        "name": name,
        **layer_transform(image_source.geometry),
        "metadata": {META_KEY: source},
        "features": features_table(result.names),
        "colormap": napari_colormap(result.colors),
        "opacity": LABELS_OPACITY,
    }
    return result.labels.array, kwargs, "labels"
