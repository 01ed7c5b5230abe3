"""Metrics against hand-computed cases, a brute-force oracle and MONAI; the empty-mask rules; world-space cases."""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from ctseg.evaluate.metrics import (
    ClassMetrics,
    EvaluationError,
    compute_class_metrics,
    dice,
    evaluate_case,
    hd95,
    nsd,
    surface_distances,
    volume_difference_ml,
)
from ctseg.volume import Geometry, Volume
from tests.synthetic import OBLIQUE, make_spheres

#: Binary-exact, anisotropic: distances along one axis are exact multiples in floating point.
SPACING = (2.5, 0.75, 0.5)


def _cube(shape: tuple[int, int, int] = (10, 8, 8), start: int = 2, size: int = 4) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[start : start + size, start : start + size, start : start + size] = True
    return m


def _brute_distances(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """All-pairs surface distances on the uncropped arrays (no distance transform)."""
    face = ndimage.generate_binary_structure(3, 1)
    points = [np.argwhere(m & ~ndimage.binary_erosion(m, face)) * np.array(spacing) for m in (pred, ref)]
    d = cdist(points[0], points[1])
    return d.min(axis=1), d.min(axis=0)


def _blob(rng: np.random.Generator, shape: tuple[int, int, int] = (16, 20, 20)) -> np.ndarray:
    return ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.52


# -- hand-computed ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [1, 2])
def test_cubes_shifted_along_z(shift: int) -> None:
    # 4x4x4 cubes, the prediction `shift` slices (2.5 mm each) further along z.
    ref = _cube()
    pred = np.roll(ref, shift, axis=0)
    assert Fraction(dice(pred, ref)) == Fraction(4 - shift, 4)  # overlap (4 - shift)/4 of each cube
    # The far face (16 of 56 surface voxels, > 5%) lies exactly `shift` slices from the other surface.
    assert hd95(pred, ref, SPACING) == shift * 2.5
    d_pr, d_rp = surface_distances(pred, ref, SPACING)
    assert d_pr.size == d_rp.size == 64 - 8 and d_pr.max() == d_rp.max() == shift * 2.5
    assert nsd(pred, ref, SPACING, tolerance_mm=shift * 2.5 + 0.1) == 1.0
    if shift == 1:
        # Per surface: 16 at 2.5 mm (far face), 4 at 0.5 mm (inner face centre, nearest surface 1 voxel along x),
        # 36 at 0 mm.
        assert nsd(pred, ref, SPACING, tolerance_mm=1.0) == pytest.approx(40 / 56, abs=1e-15)
        assert nsd(pred, ref, SPACING, tolerance_mm=0.25) == pytest.approx(36 / 56, abs=1e-15)
    else:
        # 16 at 5.0 mm, 12 at 2.5 mm (overhanging side ring), 4 at 0.5 mm, 24 at 0 mm.
        assert nsd(pred, ref, SPACING, tolerance_mm=3.0) == pytest.approx(40 / 56, abs=1e-15)
        assert nsd(pred, ref, SPACING, tolerance_mm=1.0) == pytest.approx(28 / 56, abs=1e-15)


def test_spacing_is_per_axis() -> None:
    ref = _cube()
    pred = np.roll(ref, 2, axis=2)  # two columns of 0.5 mm
    assert hd95(pred, ref, SPACING) == 1.0
    assert hd95(np.roll(ref, 2, axis=1), ref, SPACING) == 1.5


def test_sphere_against_itself() -> None:
    sphere = make_spheres(shape=(20, 24, 24), seed=3) == 1
    d_pr, d_rp = surface_distances(sphere, sphere, SPACING)
    assert d_pr.size > 0 and not d_pr.any() and not d_rp.any()
    m = compute_class_metrics(sphere, sphere, SPACING)
    assert (m.dice, m.hd95_mm, m.nsd, m.volume_diff_ml, m.status) == (1.0, 0.0, 1.0, 0.0, "ok")


def test_volumes_in_ml() -> None:
    ref = _cube()  # 64 voxels of 2.5 * 0.75 * 0.5 mm^3
    pred = ref.copy()
    pred[2, 2, 2:6] = False  # 4 voxels fewer
    voxel_ml = 2.5 * 0.75 * 0.5 / 1000
    diff_ml, diff_pct = volume_difference_ml(pred, ref, SPACING)
    assert diff_ml == pytest.approx(-4 * voxel_ml) and diff_pct == pytest.approx(-100 * 4 / 64)
    m = compute_class_metrics(pred, ref, SPACING)
    assert m.volume_ref_ml == pytest.approx(64 * voxel_ml) and m.volume_pred_ml == pytest.approx(60 * voxel_ml)
    assert m.volume_diff_pct == pytest.approx(-6.25)


# -- oracles ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distances_equal_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred, ref = _blob(rng), _blob(rng)  # blobs touch the array edge too: edge voxels are surface either way
    spacing = (2.0, 0.7, 0.9)
    got = surface_distances(pred, ref, spacing)
    want = _brute_distances(pred, ref, spacing)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-12)  # same C order of surface voxels


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecation notice
@pytest.mark.parametrize("seed", [3, 4])
def test_matches_monai(seed: int) -> None:
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(seed)
    pred, ref = _blob(rng), _blob(rng)
    spacing = (2.5, 0.75, 0.5)

    def onehot(m: np.ndarray) -> Any:
        return torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))

    monai_nsd = compute_surface_dice(onehot(pred), onehot(ref), class_thresholds=[2.0], spacing=spacing).item()
    assert nsd(pred, ref, spacing, 2.0) == pytest.approx(monai_nsd, rel=1e-6)
    # MONAI's percentile HD is the larger directed percentile, not the pooled one: compare like with like.
    monai_hd = compute_hausdorff_distance(onehot(pred), onehot(ref), percentile=95, spacing=spacing).item()
    d_pr, d_rp = surface_distances(pred, ref, spacing)
    assert max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)) == pytest.approx(monai_hd, rel=1e-5)
    assert hd95(pred, ref, spacing) == pytest.approx(np.percentile(np.concatenate([d_pr, d_rp]), 95))


# -- empty masks -----------------------------------------------------------------------------------------------
def test_both_empty() -> None:
    empty = np.zeros((4, 5, 6), bool)
    m = compute_class_metrics(empty, empty, SPACING)
    assert m == ClassMetrics(1.0, 0.0, 1.0, 0.0, 0.0, 0.0, "both_empty")
    assert [d.size for d in surface_distances(empty, empty, SPACING)] == [0, 0]
    assert volume_difference_ml(empty, empty, SPACING) == (0.0, 0.0)


@pytest.mark.parametrize("which", ["ref_empty", "pred_empty"])
def test_one_empty(which: str) -> None:
    full, empty = _cube(), np.zeros((10, 8, 8), bool)
    pred, ref = (full, empty) if which == "ref_empty" else (empty, full)
    m = compute_class_metrics(pred, ref, SPACING)
    assert (m.dice, m.hd95_mm, m.nsd, m.status) == (0.0, float("inf"), 0.0, which)
    d_pr, d_rp = surface_distances(pred, ref, SPACING)
    assert np.all(np.isinf(d_pr if which == "ref_empty" else d_rp))
    assert (d_rp if which == "ref_empty" else d_pr).size == 0
    pct = volume_difference_ml(pred, ref, SPACING)[1]
    assert np.isnan(pct) if which == "ref_empty" else pct == -100.0


# -- input errors ----------------------------------------------------------------------------------------------
def test_bad_inputs_raise() -> None:
    a = _cube()
    with pytest.raises(EvaluationError, match="differs from reference shape"):
        dice(a, a[:-1])
    with pytest.raises(EvaluationError, match="spacing_mm must be 3 positive"):
        surface_distances(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(EvaluationError, match="tolerance must be a finite number"):
        nsd(a, a, SPACING, -1.0)


def _volume(array: np.ndarray, geometry: Geometry | None = None) -> Volume:
    return Volume(array, geometry or Geometry(array.shape, SPACING, (10.0, -20.0, 5.0)))  # type: ignore[arg-type]


def test_evaluate_case_rejects_non_label_maps() -> None:
    labels = _cube().astype(np.uint8)
    with pytest.raises(EvaluationError, match="non-integer values .* arg-max"):
        evaluate_case(_volume(labels * 0.4), _volume(labels), None)
    with pytest.raises(EvaluationError, match="negative value -1"):
        evaluate_case(_volume(labels.astype(np.int16) - 1), _volume(labels), None)
    with pytest.raises(EvaluationError, match="label values must be 0..65535"):
        evaluate_case(_volume(labels), _volume(labels), {-2: "x"})
    with pytest.raises(EvaluationError, match="value 70000, above the largest class value"):
        evaluate_case(_volume(labels.astype(np.int32) * 70000), _volume(labels), None)
    image = np.arange(20 * 10 * 10, dtype=np.uint16).reshape(20, 10, 10)  # a "CT" stored as unsigned integers
    with pytest.raises(EvaluationError, match="hold 1999 distinct values .* image rather than a mask"):
        evaluate_case(_volume(image), _volume(np.zeros_like(image)), None)


# -- evaluate_case ---------------------------------------------------------------------------------------------
def _flip_permute(volume: Volume) -> Volume:
    """The same voxels in world space, stored as (x, y, z) with the new first axis reversed."""
    g = volume.geometry
    d = g.direction_matrix
    array = np.flip(volume.array.transpose(2, 1, 0), axis=0)
    origin = np.array(g.origin_mm) + d[:, 2] * g.spacing_mm[2] * (g.shape[2] - 1)
    direction = np.stack([-d[:, 2], d[:, 1], d[:, 0]], axis=1)
    geometry = Geometry(
        array.shape,  # type: ignore[arg-type]
        (g.spacing_mm[2], g.spacing_mm[1], g.spacing_mm[0]),
        tuple(origin.tolist()),  # type: ignore[arg-type]
        tuple(map(tuple, direction.tolist())),  # type: ignore[arg-type]
    )
    return Volume(np.ascontiguousarray(array), geometry)


def test_evaluate_case_in_world_space() -> None:
    grid = Geometry((16, 24, 20), SPACING, (3.0, 1.0, -7.0), OBLIQUE)  # type: ignore[arg-type]
    ref = _volume(make_spheres(shape=(16, 24, 20), seed=5), grid)
    pred = _flip_permute(ref)
    assert not pred.geometry.is_close(ref.geometry) and pred.shape != ref.shape
    result = evaluate_case(pred, ref, None)
    assert sorted(result) == [1, 2]
    for m in result.values():
        assert (m.dice, m.hd95_mm, m.nsd, m.status) == (1.0, 0.0, 1.0, "ok")
    # Without the world-space step, the stored arrays would not even have the same shape.
    assert pred.to_closest_canonical().array.shape == ref.to_closest_canonical().array.shape


def test_evaluate_case_classes_and_labels() -> None:
    ref_arr = np.zeros((10, 8, 8), np.uint8)
    ref_arr[_cube()] = 2
    pred_arr = np.roll(ref_arr, 1, axis=0)
    pred_arr[0, 0, 0] = 5  # a false positive class
    result = evaluate_case(_volume(pred_arr.astype(np.float32)), _volume(ref_arr), None)  # whole floats are fine
    assert sorted(result) == [2, 5]
    assert result[2].dice == 0.75 and result[2].hd95_mm == 2.5 and result[5].status == "ref_empty"
    named = evaluate_case(_volume(pred_arr), _volume(ref_arr), {0: "background", 2: "liver", 7: "spleen"})
    assert sorted(named) == [2, 7] and named[7].status == "both_empty" and named[2] == result[2]


def test_evaluate_case_resamples_other_spacing(caplog: pytest.LogCaptureFixture) -> None:
    ref_arr = np.zeros((10, 8, 8), np.uint8)
    ref_arr[_cube()] = 1
    ref = _volume(ref_arr)
    # The same cube on a grid with half the in-plane spacing: each reference voxel is 2x2 prediction voxels.
    fine = Geometry((10, 16, 16), (2.5, 0.375, 0.25), tuple(ref.geometry.index_to_world([[0, -0.25, -0.25]])[0]))
    fine_arr = np.repeat(np.repeat(ref_arr, 2, axis=1), 2, axis=2)
    assert evaluate_case(Volume(fine_arr, fine), ref, None)[1].dice == 1.0
    # A prediction shifted mostly off the reference grid: scored, and the loss of foreground is logged.
    far = Geometry(ref.shape, SPACING, (10.0, -20.0, 5.0 + 2.5 * 8))
    with caplog.at_level(logging.WARNING):
        assert evaluate_case(Volume(ref_arr, far), ref, None)[1].status == "pred_empty"
    assert "outside the reference grid" in caplog.text
