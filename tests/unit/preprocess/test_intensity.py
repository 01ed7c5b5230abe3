from __future__ import annotations

import numpy as np
import pytest

from ctseg.errors import ConfigError
from ctseg.preprocess import WINDOW_PRESETS, apply_window, apply_zscore, compute_intensity_stats, window_preset
from ctseg.volume import Geometry, Volume


def _vol(values: list[float], dtype: type = np.int16) -> Volume:
    arr = np.array(values, dtype=dtype).reshape(1, 1, -1)
    return Volume(arr, Geometry(arr.shape))


def test_presets_are_the_documented_ones() -> None:
    assert WINDOW_PRESETS == {
        "soft_tissue": (40.0, 400.0),
        "lung": (-600.0, 1500.0),
        "bone": (400.0, 1800.0),
        "brain": (40.0, 80.0),
        "liver": (60.0, 160.0),
    }
    with pytest.raises(ConfigError, match="unknown window preset 'abdomen'; expected one of soft_tissue"):
        window_preset("abdomen")


@pytest.mark.parametrize("name", list(WINDOW_PRESETS))
def test_window_maps_edges_and_centre(name: str) -> None:
    level, width = window_preset(name)
    out = apply_window(
        _vol([level - width, level - width / 2, level, level + width / 2, level + width], np.float32), level, width
    )
    assert out.array.dtype == np.float32
    np.testing.assert_allclose(out.array.ravel(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_window_keeps_geometry_and_input() -> None:
    v = _vol([-1000, 0, 1000])
    before = v.array.copy()
    out = apply_window(v, 40, 400)
    assert out.geometry is v.geometry
    np.testing.assert_array_equal(v.array, before)
    with pytest.raises(ConfigError, match="window width must be > 0 HU, got 0"):
        apply_window(v, 40, 0)


def test_percentile_zscore() -> None:
    rng = np.random.default_rng(0)
    body = rng.normal(50, 20, 10000)
    arr = np.concatenate([np.full(5000, -1000.0), body, [3000.0]]).astype(np.float32).reshape(1, 1, -1)
    v = Volume(arr, Geometry(arr.shape))
    stats = compute_intensity_stats([v])
    # Air is not foreground; the single 3000 HU outlier is above the 99.5th percentile and clipped.
    assert stats.lower_hu == pytest.approx(np.percentile(body, 0.5), abs=2.0)
    assert stats.upper_hu < 200 and stats.mean_hu == pytest.approx(50, abs=1.0)
    out = apply_zscore(v, stats)
    fg = out.array.ravel()[5000:15000]
    assert abs(fg.mean()) < 0.05 and fg.std() == pytest.approx(1.0, abs=0.05)
    assert out.array.max() == pytest.approx((stats.upper_hu - stats.mean_hu) / stats.std_hu, rel=1e-5)


def test_zscore_with_label_mask_and_empty_foreground() -> None:
    v = _vol([0, 10, 20, 30], np.float32)
    stats = compute_intensity_stats([v], [np.array([0, 1, 1, 0]).reshape(1, 1, 4)])
    assert stats.mean_hu == pytest.approx(15.0, abs=0.1)
    with pytest.raises(ConfigError, match="no foreground voxels"):
        compute_intensity_stats([_vol([-1000, -1000], np.float32)])
