"""Per-case outputs of predict: structure statistics (bounding-box passes) and the Pillow preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ctseg.infer.preview import ALPHA, MARGIN_PX, PANEL_PX, TITLE_PX, blend_slice, write_preview
from ctseg.infer.stats import structure_stats
from ctseg.volume import Geometry, Volume


def _case(rng: np.random.Generator) -> tuple[Volume, Volume]:
    g = Geometry((20, 24, 28), (2.0, 0.8, 0.7))
    labels = np.zeros(g.shape, np.uint8)
    labels[3:9, 4:15, 5:12] = 1
    labels[12:18, 10:20, 2:26] = 2
    labels[5, 20, 20] = 2  # a second, separate piece of class 2 widens its box
    hu = rng.normal(0.0, 100.0, g.shape).astype(np.float32)
    return Volume(hu, g), Volume(labels, g)


def test_stats_match_a_direct_computation(rng: np.random.Generator) -> None:
    ct, lab = _case(rng)
    out = structure_stats(lab, ct, {1: "liver", 2: "spleen", 3: "kidneys"})
    voxel_ml = 2.0 * 0.8 * 0.7 / 1000.0
    for k, name in ((1, "liver"), (2, "spleen")):
        mask = lab.array == k
        values = ct.array[mask].astype(np.float64)
        where = np.argwhere(mask)
        entry = out["structures"][name]
        assert entry["voxels"] == mask.sum()
        assert entry["volume_ml"] == round(mask.sum() * voxel_ml, 3)
        assert abs(entry["mean_hu"] - values.mean()) < 0.006
        assert abs(entry["std_hu"] - values.std()) < 0.006
        assert entry["bbox_index_zyx"] == [where.min(0).tolist(), where.max(0).tolist()]
    assert out["structures"]["kidneys"] == {
        "label": 3,
        "voxels": 0,
        "volume_ml": 0.0,
        "mean_hu": None,
        "std_hu": None,
        "bbox_index_zyx": None,
        "bbox_centre_lps_mm": None,
    }


def test_blend_windows_and_colours() -> None:
    hu = np.array([[-1000.0, 40.0], [240.0, 40.0]], np.float32)
    labels = np.array([[0, 0], [0, 1]], np.uint8)
    lut = np.array([[0, 0, 0], [255, 0, 0]], np.float32)
    rgb = blend_slice(hu, labels, lut)
    assert rgb[0, 0].tolist() == [0, 0, 0]  # below the window: black
    assert rgb[1, 0].tolist() == [255, 255, 255]  # above it: white
    assert rgb[0, 1].tolist() == [128, 128, 128]  # the level: mid grey
    expected = round((1 - ALPHA) * 127.5 + ALPHA * 255)
    assert rgb[1, 1].tolist() == [expected, round((1 - ALPHA) * 127.5), round((1 - ALPHA) * 127.5)]


def test_preview_shows_three_views_superior_up(tmp_path: Path) -> None:
    g = Geometry((20, 30, 30), (1.0, 1.0, 1.0))
    hu = np.full(g.shape, 40.0, np.float32)
    labels = np.zeros(g.shape, np.uint8)
    labels[:, 10:20, 10:20] = 1
    labels[-2:, 10:20, 10:20] = 2  # the most superior slices (array z grows superior in the canonical order)
    path = tmp_path / "preview.png"
    write_preview(Volume(hu, g), Volume(labels, g), {1: (255, 0, 0), 2: (0, 0, 255)}, path, title="case")
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (PANEL_PX + 2 * TITLE_PX + 2 * MARGIN_PX, 3 * PANEL_PX + 4 * MARGIN_PX, 3)
    top = 2 * TITLE_PX + MARGIN_PX
    coronal = image[top : top + PANEL_PX, 2 * MARGIN_PX + PANEL_PX : 2 * MARGIN_PX + 2 * PANEL_PX]
    column = coronal[:, PANEL_PX // 2]
    blue = np.flatnonzero((column[:, 2] > 150) & (column[:, 0] < 100))
    red = np.flatnonzero((column[:, 0] > 150) & (column[:, 2] < 100))
    assert len(blue) and len(red) and blue.max() < red.min()  # class 2 (superior) drawn above class 1


def test_preview_centre_on_large_volumes() -> None:
    """Large volumes are sampled on every second voxel: the centre stays within 2 voxels of the full count, and a
    foreground that falls between the samples is still found."""
    from ctseg.infer import preview

    labels = np.zeros((130, 256, 256), np.uint8)  # 8.5 M voxels: the sampled path
    assert labels.size > preview.CENTRE_SUBSAMPLE_VOXELS
    labels[20:71, 100:181, 31:90] = 1
    labels[90:121, 40:61, 150:231] = 2
    zz, yy, xx = np.nonzero(labels)
    exact = np.array([zz.mean(), yy.mean(), xx.mean()])
    assert np.all(np.abs(preview._centre(labels) - exact) <= 2.0)
    labels[:] = 0
    labels[101, 3, 7] = 1  # odd indices: not on the samples
    assert preview._centre(labels).tolist() == [101, 3, 7]
    assert preview._centre(np.zeros((4, 6, 8), np.uint8)).tolist() == [2, 3, 4]  # no foreground: the middle
