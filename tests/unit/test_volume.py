from __future__ import annotations

import numpy as np
import pytest

from ctseg.errors import GeometryError
from ctseg.volume import Geometry, Volume
from tests.synthetic import OBLIQUE, make_volume


def test_affine_maps_index_to_lps() -> None:
    g = Geometry((4, 5, 6), (2.5, 0.7, 0.8), (10.0, -20.0, 30.0), OBLIQUE)
    d = np.array(OBLIQUE)
    idx = np.array([[1, 2, 3]])
    expected = np.array([10.0, -20.0, 30.0]) + d @ (np.array([1, 2, 3]) * np.array([2.5, 0.7, 0.8]))
    np.testing.assert_allclose(g.index_to_world(idx)[0], expected)
    np.testing.assert_allclose(g.affine[:3, 3], [10.0, -20.0, 30.0])
    np.testing.assert_allclose(g.world_to_index(g.index_to_world(idx)), idx, atol=1e-12)


def test_from_affine_round_trip() -> None:
    g = Geometry((4, 5, 6), (2.5, 0.7, 0.8), (1.0, 2.0, 3.0), OBLIQUE)
    assert Geometry.from_affine(g.shape, g.affine).is_close(g, atol_mm=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (0, 2, 2)}, "shape must be 3 positive"),
        ({"shape": (2, 2)}, "shape must be 3 positive"),
        ({"shape": (2, 2, 2), "spacing_mm": (1.0, 0.0, 1.0)}, "spacing_mm must be > 0"),
        ({"shape": (2, 2, 2), "spacing_mm": (1.0, 1.0)}, "spacing_mm must be 3 finite"),
        ({"shape": (2, 2, 2), "origin_mm": (np.nan, 0, 0)}, "origin_mm must be 3 finite"),
        ({"shape": (2, 2, 2), "direction": ((1, 0, 0), (0.2, 1, 0), (0, 0, 1))}, "not orthonormal"),
        ({"shape": (2, 2, 2), "direction": ((1, 0), (0, 1))}, "finite 3x3"),
    ],
)
def test_geometry_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(GeometryError, match=match):
        Geometry(**kwargs)


def test_from_affine_rejects_zero_axis() -> None:
    a = np.eye(4)
    a[1, 1] = 0.0
    with pytest.raises(GeometryError, match="zero-length axis"):
        Geometry.from_affine((2, 2, 2), a)
    with pytest.raises(GeometryError, match="affine must be 4x4"):
        Geometry.from_affine((2, 2, 2), np.eye(3))


def test_volume_shape_must_match() -> None:
    with pytest.raises(GeometryError, match=r"array shape \(2, 2, 3\) does not match geometry shape \(2, 2, 2\)"):
        Volume(np.zeros((2, 2, 3)), Geometry((2, 2, 2)))


def test_is_close_tolerances() -> None:
    g = Geometry((4, 5, 6), (2.5, 0.7, 0.8), (1.0, 2.0, 3.0), OBLIQUE)
    moved = Geometry((4, 5, 6), (2.5, 0.7, 0.8), (1.0, 2.0, 3.02), OBLIQUE)
    assert not g.is_close(moved)
    assert g.is_close(moved, atol_mm=0.05)
    assert not g.is_close(Geometry((4, 5, 7), (2.5, 0.7, 0.8), (1.0, 2.0, 3.0), OBLIQUE))


def test_orientation_codes() -> None:
    assert Geometry((2, 2, 2)).orientation_codes() == "SPL"
    assert Geometry((2, 2, 2), direction=((1, 0, 0), (0, 0, 1), (0, -1, 0))).orientation_codes() == "LIP"


@pytest.mark.parametrize(
    "direction", [OBLIQUE, ((0, 0, -1), (0, -1, 0), (-1, 0, 0)), ((1, 0, 0), (0, 0, 1), (0, -1, 0))]
)
def test_closest_canonical_keeps_world_positions(direction) -> None:
    v = make_volume(shape=(3, 4, 5), spacing=(2.0, 0.5, 0.7), direction=direction)
    c = v.to_closest_canonical()
    assert sorted(c.shape) == sorted(v.shape)
    d = c.geometry.direction_matrix
    assert all(d[w, a] > 0 for a, w in enumerate((2, 1, 0)))
    # The same world point holds the same value in both.
    idx = np.argwhere(np.ones(c.shape, bool))
    world = c.geometry.index_to_world(idx)
    back = np.rint(v.geometry.world_to_index(world)).astype(int)
    np.testing.assert_array_equal(c.array.reshape(-1), v.array[back[:, 0], back[:, 1], back[:, 2]])
