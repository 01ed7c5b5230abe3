"""What a person sees: a shown viewer's screenshot has the label colour where the anatomy is, and the manifest."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")
pytest.importorskip("ctseg_napari")

from ctseg.io.images import write_image  # noqa: E402
from ctseg.volume import Geometry, Volume  # noqa: E402

PLUGIN = "ctseg-napari"
#: Uniform 40 HU: mid-grey in the default soft-tissue window.
SOFT_TISSUE_HU = 40
GREEN = [0, 255, 0]


def test_screenshot_shows_label_colour_in_radiological_position(make_napari_viewer, tmp_path: Path) -> None:
    # A RAS-stored NIfTI pair (as most tools write): array x runs to the patient's right, y to anterior.
    ras = ((0.0, 0.0, -1.0), (0.0, -1.0, 0.0), (1.0, 0.0, 0.0))
    g = Geometry((5, 40, 40), (3.0, 2.0, 2.0), (39.0, 39.0, 0.0), ras)
    ct = Volume(np.full(g.shape, SOFT_TISSUE_HU, np.int16), g)
    mask = np.zeros(g.shape, np.uint8)
    lps = g.index_to_world(np.argwhere(mask == 0)).reshape(*g.shape, 3)
    mask[(lps[..., 0] > 5) & (lps[..., 1] < -5)] = 1  # patient's left (+x) and anterior (-y) quadrant
    write_image(ct, tmp_path / "ct.nii.gz")
    write_image(ct.with_array(mask), tmp_path / "ct_mask.nii.gz")
    (tmp_path / "ct_mask.labels.json").write_text(json.dumps({"labels": {"1": "quadrant"}, "colors": {"1": GREEN}}))

    viewer = make_napari_viewer(show=True)
    viewer.open(str(tmp_path / "ct.nii.gz"), plugin=PLUGIN)
    viewer.open(str(tmp_path / "ct_mask.nii.gz"), plugin=PLUGIN)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    h, w = shot.shape[:2]
    side = int(0.2 * min(h, w))  # well inside the 80 x 80 mm field of view, which fills the shorter side

    def colour(dy: int, dx: int) -> np.ndarray:
        return shot[h // 2 + dy - 3 : h // 2 + dy + 4, w // 2 + dx - 3 : w // 2 + dx + 4].reshape(-1, 3).mean(axis=0)

    top_right, top_left, bottom_right = colour(-side, side), colour(-side, -side), colour(side, side)
    # Radiological convention: anterior at the top, the patient's left on the screen's right.
    assert top_right[1] > top_right[0] + 60 and top_right[1] > top_right[2] + 60, top_right
    for grey in (top_left, bottom_right):
        assert np.ptp(grey) < 10 and 90 < grey.mean() < 170, grey  # the CT's grey, no label colour


def test_manifest_validates() -> None:
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent))
    command = [npe2] if npe2 else [sys.executable, "-m", "npe2"]
    result = subprocess.run([*command, "validate", PLUGIN], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_npe2_finds_the_contributions(tmp_path: Path) -> None:
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    assert PLUGIN in pm._manifests
    readers = {r.plugin_name for r in pm.iter_compatible_readers([str(tmp_path / "x.nii.gz")])}
    writers = {w.plugin_name for w in pm.iter_compatible_writers(["labels"])}
    assert PLUGIN in readers and PLUGIN in writers
    assert [s.key for s in dict(pm.iter_sample_data())[PLUGIN]] == ["phantom"]
    widgets = {w.display_name for w in pm.iter_widgets() if w.plugin_name == PLUGIN}
    assert widgets == {"Segment CT", "Review segmentation"}
