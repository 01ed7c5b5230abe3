from __future__ import annotations

import numpy as np
import pytest

from ctseg.errors import ConfigError
from ctseg.preprocess import resample_to, resample_to_spacing, spacing_grid
from ctseg.volume import Geometry, Volume
from tests.synthetic import OBLIQUE, make_spheres, make_volume, oracle_hu


def _oracle_error(v: Volume, source: Geometry, margin: float = 1.0) -> float:
    """Max |value - oracle| over voxels that lie at least ``margin`` voxels inside ``source``."""
    idx = np.argwhere(np.ones(v.shape, bool))
    world = v.geometry.index_to_world(idx)
    src = source.world_to_index(world)
    inside = np.all((src >= margin) & (src <= np.array(source.shape) - 1 - margin), axis=1)
    assert inside.sum() > 100
    return float(np.abs(v.array.reshape(-1) - oracle_hu(world))[inside].max())


@pytest.mark.parametrize("order", ["linear", "bspline"])
def test_resample_to_spacing_is_world_exact(order: str) -> None:
    v = make_volume(shape=(12, 20, 24), spacing=(2.5, 0.7, 0.9), direction=OBLIQUE)
    out = resample_to_spacing(v, (1.5, 1.5, 1.5), order=order)  # type: ignore[arg-type]
    assert out.geometry == spacing_grid(v.geometry, (1.5, 1.5, 1.5))
    assert out.geometry.spacing_mm == (1.5, 1.5, 1.5) and out.array.dtype == np.float32
    # B-spline's mirrored boundary bends a linear ramp within ~2 voxels of the edge; the interior is exact.
    margin = 1.0 if order == "linear" else 3.0
    assert _oracle_error(out, v.geometry, margin) < (1e-3 if order == "linear" else 0.2)


def test_spacing_grid_shape_and_origin() -> None:
    g = Geometry((10, 20, 30), (3.0, 1.0, 0.5), (0.0, 0.0, 0.0))
    t = spacing_grid(g, (1.5, 2.0, 1.5))
    assert t.shape == (20, 10, 10)
    # First voxel edges stay aligned: centre moves by (new - old) / 2 along each axis (axial: z, y, x -> LPS z, y, x).
    np.testing.assert_allclose(t.origin_mm, (0.5, 0.5, -0.75))
    with pytest.raises(ConfigError, match="target spacing must be 3 positive numbers"):
        spacing_grid(g, (1.0, 0.0, 1.0))


def test_round_trip_returns_exactly_to_source_grid() -> None:
    v = make_volume(shape=(12, 20, 24), spacing=(2.5, 0.7, 0.9), direction=OBLIQUE)
    there = resample_to_spacing(v, (1.5, 1.5, 1.5))
    back = resample_to(there, v.geometry)
    assert back.geometry == v.geometry
    assert _oracle_error(back, there.geometry, margin=1.0) < 1e-3


def test_separable_path_handles_flips_and_permutations() -> None:
    v = make_volume(shape=(10, 12, 14), spacing=(2.0, 1.0, 1.5))
    # Same grid seen with axes permuted and one flipped: a pure re-indexing, no interpolation error.
    flipped = Geometry(
        (14, 12, 10), (1.5, 1.0, 2.0), v.geometry.index_to_world([[0, 0, 13]])[0], ((-1, 0, 0), (0, 1, 0), (0, 0, 1))
    )
    out = resample_to(v, flipped)
    np.testing.assert_allclose(out.array, np.flip(v.array.transpose(2, 1, 0), axis=0), atol=1e-4)


def test_oblique_target_uses_general_resampler() -> None:
    v = make_volume(shape=(12, 20, 24), spacing=(2.5, 0.7, 0.9), direction=OBLIQUE)
    target = Geometry((8, 10, 10), (2.0, 1.0, 1.0), v.geometry.index_to_world([[6, 10, 12]])[0])
    out = resample_to(v, target, fill_value=-1024)
    assert out.geometry == target
    assert _oracle_error(out, v.geometry) < 1e-3


def test_points_outside_get_fill() -> None:
    v = make_volume(shape=(4, 4, 4), spacing=(1.0, 1.0, 1.0))
    shifted = Geometry(
        (4, 4, 4), (1.0, 1.0, 1.0), (v.geometry.origin_mm[0], v.geometry.origin_mm[1], v.geometry.origin_mm[2] + 2.0)
    )
    out = resample_to(v, shifted, fill_value=-1024)
    assert (out.array[2:] == -1024).all() and (out.array[:2] != -1024).all()


@pytest.mark.parametrize("order", ["nearest", "onehot"])
def test_labels_keep_dtype_and_return_to_grid(order: str) -> None:
    labels = make_spheres((40, 48, 48))
    v = Volume(labels, Geometry(labels.shape, (1.2, 0.8, 0.8), (1.0, 2.0, 3.0), OBLIQUE))
    there = resample_to_spacing(v, (1.5, 1.5, 1.5), order=order)  # type: ignore[arg-type]
    assert there.array.dtype == np.uint8 and set(np.unique(there.array)) == {0, 1, 2}
    back = resample_to(there, v.geometry, order="nearest")
    assert back.geometry == v.geometry and back.array.dtype == np.uint8
    assert (back.array == labels).mean() > 0.98
    # Volume kept within a few percent after a 0.8 -> 1.5 mm -> 0.8 mm round trip (nearest is the coarser of the two).
    tol = 0.08 if order == "nearest" else 0.05
    for label in (1, 2):
        assert abs(int((back.array == label).sum()) - int((labels == label).sum())) / (labels == label).sum() < tol


def test_identity_resample_is_a_copy() -> None:
    v = make_volume(shape=(3, 4, 5))
    out = resample_to(v, v.geometry)
    np.testing.assert_array_equal(out.array, v.array)
    assert out.array is not v.array


def test_unknown_interpolation() -> None:
    v = make_volume(shape=(3, 4, 5))
    with pytest.raises(ConfigError, match="unknown interpolation 'cubic'"):
        resample_to_spacing(v, (1, 1, 1), order="cubic")  # type: ignore[arg-type]


def test_nearest_labels_on_flipped_permuted_and_partly_outside_grids_match_simpleitk() -> None:
    """The label path back to a source grid (numpy.take per axis): same voxels as SimpleITK's nearest neighbour,
    fill outside the source, on a permuted, flipped, finer and shifted grid."""
    from ctseg.preprocess.spatial import _resample_sitk

    labels = make_spheres((10, 16, 14))
    v = Volume(labels, Geometry(labels.shape, (2.0, 1.0, 1.5), (1.0, 2.0, 3.0)))
    exact = Geometry(
        (14, 16, 10), (1.5, 1.0, 2.0), v.geometry.index_to_world([[0, 0, 13]])[0], ((-1, 0, 0), (0, 1, 0), (0, 0, 1))
    )
    np.testing.assert_array_equal(
        resample_to(v, exact, order="nearest").array, np.flip(labels.transpose(2, 1, 0), axis=0)
    )
    origin = tuple(float(c) for c in v.geometry.index_to_world([[-1.3, -2.2, 12.6]])[0])  # starts outside
    finer = Geometry((23, 37, 29), (0.83, 0.47, 0.71), origin, ((-1, 0, 0), (0, 1, 0), (0, 0, 1)))  # type: ignore[arg-type]
    out = resample_to(v, finer, order="nearest", fill_value=7)
    assert out.array.dtype == np.uint8 and out.geometry == finer
    np.testing.assert_array_equal(out.array, _resample_sitk(v, finer, "nearest", 7))
    assert set(np.unique(out.array)) == {0, 1, 2, 7}  # background, both spheres, and fill outside the source


@pytest.mark.parametrize(
    ("shape", "spacing", "target"),
    [
        ((60, 96, 80), (1.0, 0.7, 0.7), (3.0, 3.0, 3.0)),  # a CT to a coarse model grid
        ((30, 64, 64), (2.5, 0.8, 0.8), (2.0, 3.2, 3.2)),  # one axis finer, the others 4x coarser
        ((9, 40, 33), (5.0, 0.9, 0.9), (7.85, 3.48, 3.25)),  # odd sizes and ratios, the demo model's spacing
    ],
)
@pytest.mark.parametrize("chunk", [8_000_000, 5_000])  # one chunk per pass, or many
def test_gathered_linear_downsampling_matches_torch(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    target: tuple[float, float, float],
    chunk: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gathered separable path (taken when the output is small) gives torch's trilinear values, on int16 HU."""
    import torch

    from ctseg.preprocess import spatial

    monkeypatch.setattr(spatial, "GATHER_CHUNK_VOXELS", chunk)

    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 2000, size=shape).astype(np.int16)
    v = Volume(hu, Geometry(shape, spacing, (0.0, 0.0, 0.0)))
    out = resample_to_spacing(v, target)
    grid = spacing_grid(v.geometry, target)
    assert np.prod(grid.shape) <= spatial.GATHER_MAX_OUTPUT_FRACTION * hu.size  # the gathered path ran
    scale = np.array(spacing) / np.array(target)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(hu.astype(np.float32))[None, None],
        scale_factor=tuple(float(s) for s in scale),
        mode="trilinear",
        recompute_scale_factor=False,
        align_corners=False,
    )[0, 0, : grid.shape[0], : grid.shape[1], : grid.shape[2]].numpy()
    assert out.shape == grid.shape and out.array.dtype == np.float32
    np.testing.assert_allclose(out.array, ref, rtol=0, atol=2e-3)
