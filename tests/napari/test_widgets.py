"""The dock widgets in a real viewer (``make_napari_viewer`` + ``qtbot``; pytest-xvfb gives the X server)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")
pytest.importorskip("ctseg_napari")

import ctseg_napari._qt.segment_widget as segment_module  # noqa: E402
from ctseg_napari._qt.review_widget import PRESETS, STATUS, VOLUME, ReviewWidget  # noqa: E402
from ctseg_napari._qt.segment_widget import SegmentWidget  # noqa: E402
from ctseg_napari._review import read_review  # noqa: E402
from napari.layers import Labels  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402

from ctseg.infer.batch import PredictOptions, predict_case  # noqa: E402
from ctseg.io.dicom_seg import read_dicom_seg  # noqa: E402
from ctseg.io.images import read_image  # noqa: E402
from ctseg.preprocess import WINDOW_PRESETS  # noqa: E402
from tests.napari.conftest import ObliqueCase  # noqa: E402
from tests.stand_in import threshold_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")
PLUGIN = "ctseg-napari"
WAIT_MS = 30_000


def _labels(viewer: napari.Viewer) -> list[Labels]:
    return [layer for layer in viewer.layers if isinstance(layer, Labels)]


def test_segment_widget_runs_model_in_worker(
    make_napari_viewer, qtbot, oblique_case: ObliqueCase, tiny_model_dir: Path
) -> None:
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(oblique_case.dicom), plugin=PLUGIN)
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.image_combo.currentText() == image.name
    widget.model_edit.setText(str(tiny_model_dir))
    threads: list[str] = []
    widget._progress.changed.connect(lambda *_: threads.append(threading.current_thread().name))
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    # start() returned at once: the work is in the worker thread, and the GUI thread keeps running.
    assert widget.worker is not None and not _labels(viewer) and not widget.run_button.isEnabled()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    (mask,) = _labels(viewer)
    assert widget.status.text().startswith("Done"), widget.status.text()
    assert mask.data.shape == image.data.shape and mask.data.dtype == np.uint8
    for index in [(0, 0, 0), (9, 13, 11), (3, 5, 7)]:
        np.testing.assert_allclose(mask.data_to_world(index), image.data_to_world(index), atol=1e-9)
    assert mask.features["name"].tolist() == ["background", "liver", "spleen"]
    assert mask.colormap.map(1) == pytest.approx([1.0, 0.0, 0.0, 1.0])
    assert widget.progress_bar.value() == widget.progress_bar.maximum()
    assert threads, "no progress was reported"


def test_segment_widget_cancels(
    make_napari_viewer, qtbot, oblique_case: ObliqueCase, tiny_model_dir: Path, monkeypatch
) -> None:
    real = segment_module.run_segmentation
    started = threading.Event()

    def slow(*args, cancel: threading.Event, **kwargs):
        started.set()
        cancel.wait(WAIT_MS / 1000)  # "busy" until the user clicks Cancel
        return real(*args, cancel=cancel, **kwargs)

    monkeypatch.setattr(segment_module, "run_segmentation", slow)
    viewer = make_napari_viewer()
    viewer.open(str(oblique_case.dicom), plugin=PLUGIN)
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget)
    widget.model_edit.setText(str(tiny_model_dir))
    widget.start()
    assert started.wait(10) and widget.cancel_button.isEnabled()
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.status.text().startswith("Cancelled") and not _labels(viewer)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_review_matches_predict_stats_and_saves(
    make_napari_viewer, qtbot, oblique_case: ObliqueCase, tmp_path: Path
) -> None:
    options = PredictOptions(formats=("nifti", "dicom-seg"), device="cpu", qa=False, progress=False)
    result = predict_case(
        "c", oblique_case.dicom, threshold_model(oblique_case.ct.geometry.spacing_mm), tmp_path / "out", options
    )
    assert result.status == "ok", result.error
    case = tmp_path / "out" / "c"
    stats = json.loads((case / "stats.json").read_text())["structures"]

    viewer = make_napari_viewer()
    (image,) = viewer.open(str(oblique_case.dicom), plugin=PLUGIN)
    (mask,) = viewer.open(str(case / "mask.nii.gz"), plugin=PLUGIN)
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    assert (widget.image_combo.currentText(), widget.labels_combo.currentText()) == (image.name, mask.name)
    (row,) = widget.rows
    assert row.name == "dense"
    assert row.volume_ml == stats["dense"]["volume_ml"] and row.mean_hu == stats["dense"]["mean_hu"]
    assert widget.table.item(0, VOLUME).text() == f"{stats['dense']['volume_ml']:.2f}"

    # Window presets set the CT's contrast limits.
    for key in PRESETS:
        qtbot.mouseClick(widget.preset_buttons[key], Qt.MouseButton.LeftButton)
        level, width = WINDOW_PRESETS[key]
        assert tuple(image.contrast_limits) == pytest.approx((level - width / 2, level + width / 2))

    # Hide/show recolours only; editing with napari's paint tool updates the statistics.
    widget.set_visible(1, False)
    assert mask.colormap.map(1)[3] == 0 and widget.table.item(0, 0).checkState() == Qt.CheckState.Unchecked
    widget.set_visible(1, True)
    assert mask.colormap.map(1)[3] == 1
    before = row.voxels
    empty = np.argwhere(np.asarray(mask.data) == 0)[0]
    mask.brush_size = 1
    mask.paint(tuple(empty), 1)
    qtbot.waitUntil(lambda: widget.rows[0].voxels == before + 1, timeout=5000)

    widget.set_status(1, "flagged")
    widget.set_note(1, "leaks into the box")
    assert widget.table.cellWidget(0, STATUS).currentText() == "flagged"
    saved = widget.save(tmp_path / "review" / "mask_reviewed.nii.gz")
    assert saved is not None, widget.status.text()
    assert saved.dicom_seg is not None, saved.dicom_seg_note  # case.json names the DICOM input

    # Read back: voxels and geometry of the mask, the SEG on the CT grid, and the review record.
    original = read_image(case / "mask.nii.gz")
    back = read_image(saved.mask)
    assert back.geometry.is_close(original.geometry, atol_mm=1e-5)
    expected = original.array.copy()
    src_index = np.round(
        original.geometry.world_to_index(mask.metadata["ctseg"].geometry.index_to_world([empty]))
    ).astype(int)[0]
    expected[tuple(src_index)] = 1
    np.testing.assert_array_equal(back.array, expected)
    seg, names = read_dicom_seg(saved.dicom_seg, oblique_case.ct.geometry)
    np.testing.assert_array_equal(seg.array, expected)  # predict's mask is on the DICOM grid
    assert names == {1: "dense"}
    record = read_review(saved.review)
    (entry,) = record["structures"]
    assert {k: entry[k] for k in ("label", "name", "status", "note", "voxels")} == {
        "label": 1,
        "name": "dense",
        "status": "flagged",
        "note": "leaks into the box",
        "voxels": before + 1,
    }
    assert entry["time"] and record["mask"] == "mask_reviewed.nii.gz" and record["dicom_seg"] == "mask_reviewed.dcm"
    assert json.loads(saved.sidecar.read_text())["labels"] == {"1": "dense"}
    assert not list(saved.mask.parent.glob(".*partial*"))  # atomic writes leave no temporaries


def test_review_of_a_nifti_mask_over_dicom_saves_a_seg(
    make_napari_viewer, qtbot, oblique_case: ObliqueCase, tmp_path: Path
) -> None:
    viewer = make_napari_viewer()
    viewer.open(str(oblique_case.dicom), plugin=PLUGIN)
    (mask,) = viewer.open(str(oblique_case.mask_path), plugin=PLUGIN)
    assert mask.metadata["ctseg"].dicom_dir == ""  # a plain NIfTI knows no DICOM series...
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    assert [r.name for r in widget.rows] == ["label 1", "label 2"]
    saved = widget.save(tmp_path / "out" / "m.nii.gz")
    assert saved is not None and saved.dicom_seg is not None, widget.status.text()  # ...the CT layer on its grid does
    seg, names = read_dicom_seg(saved.dicom_seg, oblique_case.ct.geometry)
    np.testing.assert_array_equal(seg.array, oblique_case.mask.array)
    assert "m.dcm" in widget.status.text()
