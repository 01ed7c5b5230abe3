"""The Segment widget with a ``ctseg serve`` URL instead of a model folder: the server's model does the work."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")
pytest.importorskip("ctseg_napari")

from ctseg_napari._qt.segment_widget import SegmentWidget  # noqa: E402
from ctseg_napari._remote import is_server_url, run_remote_segmentation  # noqa: E402
from ctseg_napari._segment import SegmentationCancelled  # noqa: E402
from napari.layers import Labels  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402

from ctseg.errors import ServeError  # noqa: E402
from ctseg.io.images import write_image  # noqa: E402
from ctseg.phantom import make_phantom  # noqa: E402
from ctseg.serve.config import ServeConfig  # noqa: E402
from ctseg.volume import Geometry  # noqa: E402
from tests.serve_support import TOKEN, in_process  # noqa: E402
from tests.stand_in import THRESHOLD_HU, threshold_model  # noqa: E402

SPACING = (2.0, 2.0, 2.0)
WAIT_MS = 60_000


def _phantom(tmp_path: Path) -> Path:
    ct, _ = make_phantom(Geometry((10, 32, 32), SPACING, (0.0, 0.0, 0.0)), seed=5)
    write_image(ct, tmp_path / "ct.nii.gz")
    return tmp_path / "ct.nii.gz"


def test_remote_segmentation_returns_the_mask_on_the_image_grid(tmp_path: Path) -> None:
    from ctseg.io.images import read_image

    image = read_image(_phantom(tmp_path))
    config = ServeConfig(store=tmp_path / "store", min_free_disk_bytes=0)
    with in_process(config, {"stand_in": threshold_model(SPACING)}) as srv:
        result = run_remote_segmentation(image, srv.http + "/", token=TOKEN)
        with pytest.raises(ServeError, match="answered 401.*CTSEG_SERVE_TOKEN"):
            run_remote_segmentation(image, srv.http, token="wrong-token-0123456789")
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(SegmentationCancelled):
            run_remote_segmentation(image, srv.http, token=TOKEN, cancel=cancel)
        normalised = image.with_array(image.array.astype(np.float32) / 4000.0)
        with pytest.raises(ServeError, match="job .* failed: InputQAError"):
            run_remote_segmentation(normalised, srv.http, token=TOKEN)
    assert result.labels.geometry == image.geometry
    np.testing.assert_array_equal(result.labels.array, (image.array > THRESHOLD_HU).astype(np.uint8))
    assert result.names == {1: "dense"} and result.colors[1] == (255, 0, 0)
    assert is_server_url(" HTTPS://host:8000") and not is_server_url("/models/abdomen")


def test_segment_widget_with_a_server_url(
    make_napari_viewer, qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTSEG_SERVE_TOKEN", TOKEN)
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(_phantom(tmp_path)), plugin="ctseg-napari")
    config = ServeConfig(store=tmp_path / "store", min_free_disk_bytes=0)
    with in_process(config, {"stand_in": threshold_model(SPACING)}) as srv:
        widget = SegmentWidget(viewer)
        qtbot.addWidget(widget)
        widget.model_edit.setText(srv.http)
        qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.status.text().startswith("Done"), widget.status.text()
    (mask,) = [layer for layer in viewer.layers if isinstance(layer, Labels)]
    np.testing.assert_array_equal(mask.data, (np.asarray(image.data) > THRESHOLD_HU).astype(np.uint8))
    assert mask.features["name"].tolist() == ["background", "dense"]
