"""The widget's segmentation function without Qt: reoriented (flipped-view) layers, cancellation, model cache."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ctseg_napari")

from ctseg_napari._layers import source_volume  # noqa: E402
from ctseg_napari._reader import read  # noqa: E402
from ctseg_napari._segment import SegmentationCancelled, load_model_cached, result_layer, run_segmentation  # noqa: E402

from ctseg.errors import CheckpointError  # noqa: E402
from ctseg.io.images import write_image  # noqa: E402
from ctseg.volume import Volume  # noqa: E402
from tests.napari.conftest import ObliqueCase  # noqa: E402
from tests.stand_in import (
    THRESHOLD_HU,  # noqa: E402
    threshold_model,  # noqa: E402
)
from tests.synthetic import make_volume  # noqa: E402


def test_segments_a_flipped_layer_view_on_its_grid(oblique_case: ObliqueCase, tmp_path: Path) -> None:
    ras = ((0.0, 0.0, -1.0), (0.0, -1.0, 0.0), (1.0, 0.0, 0.0))  # stored R-to-L, A-to-P: the layer array is a view
    write_image(make_volume(shape=(6, 12, 10), spacing=(2.0, 1.0, 1.5), direction=ras), tmp_path / "ct.nii.gz")
    ((data, kwargs, _),) = read(str(tmp_path / "ct.nii.gz"))
    source = kwargs["metadata"]["ctseg"]
    assert any(s < 0 for s in data.strides)
    result = run_segmentation(Volume(data, source.geometry), threshold_model(source.geometry.spacing_mm))
    np.testing.assert_array_equal(result.labels.array, (np.asarray(data) > THRESHOLD_HU).astype(np.uint8))
    labels, kw, kind = result_layer(result, source, "mask")
    assert kind == "labels" and kw["features"]["name"] == ["background", "dense"]
    on_disk = source_volume(labels, kw["metadata"]["ctseg"])
    assert on_disk.geometry == source.source_geometry


def test_cancel_before_start_and_bad_model_folder(oblique_case: ObliqueCase, tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(SegmentationCancelled):
        run_segmentation(oblique_case.ct, threshold_model(oblique_case.ct.geometry.spacing_mm), cancel=cancel)
    with pytest.raises(CheckpointError, match="not a ctseg model folder"):
        load_model_cached(tmp_path)


def test_model_cache_reuses_a_loaded_model(tiny_model_dir: Path) -> None:
    assert load_model_cached(tiny_model_dir) is load_model_cached(tiny_model_dir)
