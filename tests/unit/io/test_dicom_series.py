"""DICOM ingestion on pydicom-written series: exact geometry against the world-space oracle, or the specific error."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctseg.errors import DicomSeriesError, SeriesReason
from ctseg.io.dicom import ReadOptions, inspect_dicom, read_dicom_series
from ctseg.io.dicom.pixels import rescale_to_hu
from ctseg.volume import Volume
from tests.synthetic import (
    OBLIQUE,
    PHI_ID,
    PHI_NAME,
    SAGITTAL,
    assert_matches_oracle,
    make_volume,
    oracle_hu,
    write_dicom_series,
    write_oracle_series,
)

#: Slope 1/4 keeps the oracle's fractional HU exact to 0.125 HU after int16 storage.
FINE = {"slope": 0.25, "intercept": -1024.0}


def _read(path: Path, **options: object) -> Volume:
    return read_dicom_series(path, options=ReadOptions(**options))  # type: ignore[arg-type]


def _fails(path: Path, reason: SeriesReason, match: str, **options: object) -> None:
    with pytest.raises(DicomSeriesError, match=match) as info:
        _read(path, **options)
    assert info.value.reason is reason


@pytest.mark.parametrize(
    ("direction", "spacing"),
    [
        (OBLIQUE, (2.5, 0.7, 0.9)),
        (SAGITTAL, (2.0, 0.8, 0.6)),
        (((0, 0, 1), (0, 1, 0), (1, 0, 0)), (3.0, 0.5, 0.75)),  # axial, non-square pixels
    ],
    ids=["oblique", "sagittal", "axial-nonsquare"],
)
@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_geometry_matches_oracle(tmp_path: Path, direction, spacing, descending: bool) -> None:
    v = make_volume(shape=(6, 10, 12), spacing=spacing, direction=direction)
    write_dicom_series(tmp_path / "s", v, descending=descending, shuffle_instances=True, **FINE)
    out = _read(tmp_path / "s")
    assert out.shape == v.shape
    # Axis 0 follows the slice normal row x col, whatever the file or instance order.
    d = v.geometry.direction_matrix
    normal = np.cross(d[:, 2], d[:, 1])
    np.testing.assert_allclose(out.geometry.direction_matrix[:, 0], normal, atol=1e-6)
    np.testing.assert_allclose(out.geometry.spacing_mm, spacing, atol=1e-5)
    assert_matches_oracle(out, atol_hu=0.13)


def test_int16_for_integer_lut_and_values_exact(tmp_path: Path) -> None:
    v = make_volume(shape=(4, 8, 8))
    hu = np.round(v.array)
    write_dicom_series(tmp_path / "s", v.with_array(hu), slope=1.0, intercept=-1024.0)
    out = _read(tmp_path / "s")
    assert out.array.dtype == np.int16
    np.testing.assert_array_equal(out.array, hu.astype(np.int16))


def test_float_rescale_gives_float32(tmp_path: Path) -> None:
    v = make_volume(shape=(4, 8, 8))
    write_dicom_series(tmp_path / "s", v, slope=0.5, intercept=-1000.5)
    out = _read(tmp_path / "s")
    assert out.array.dtype == np.float32
    assert_matches_oracle(out, atol_hu=0.26)


def test_per_slice_rescale(tmp_path: Path) -> None:
    stored = np.full((2, 1, 1), 100, np.int16)
    hu = rescale_to_hu(stored.copy(), np.array([1.0, 1.0]), np.array([-1024.0, -1000.0]))
    assert hu.dtype == np.int16 and hu[:, 0, 0].tolist() == [-924, -900]
    hu2 = rescale_to_hu(stored.copy(), np.array([1.0, 2.0]), np.array([0.0, 0.0]))
    assert hu2.dtype == np.float32 and hu2[:, 0, 0].tolist() == [100.0, 200.0]


def test_uint16_that_overflows_int16_goes_float() -> None:
    stored = np.array([[[0, 65535]]], np.uint16)
    hu = rescale_to_hu(stored, np.array([1.0]), np.array([-1024.0]))
    assert hu.dtype == np.float32 and hu.tolist() == [[[-1024.0, 64511.0]]]


def test_blank_uids_fall_back_to_geometry_grouping(tmp_path: Path) -> None:
    v = make_volume(shape=(5, 8, 8))
    write_dicom_series(tmp_path / "s", v, blank_uids=True, **FINE)
    found = inspect_dicom(tmp_path / "s")
    assert len(found.plans) == 1 and found.plans[0].usable
    assert found.plans[0].series_uid.startswith("nouid:")
    assert any(r is SeriesReason.MISSING_TAG for r, _ in found.plans[0].warnings)
    assert_matches_oracle(_read(tmp_path / "s"), atol_hu=0.13)


def test_two_series_in_one_folder_choose_most_slices(tmp_path: Path) -> None:
    thick = make_volume(shape=(4, 8, 8), spacing=(5.0, 0.7, 0.7))
    thin = make_volume(shape=(9, 8, 8), spacing=(2.0, 0.7, 0.7))
    write_dicom_series(tmp_path, thick, names=[f"a{k}" for k in range(4)], series_number=1, **FINE)
    write_dicom_series(tmp_path, thin, names=[f"b{k}" for k in range(9)], series_number=2, **FINE)
    found = inspect_dicom(tmp_path)
    assert len(found.plans) == 2
    assert found.chosen is not None and len(found.chosen.slices) == 9
    assert "9 slices" in found.reason
    other = next(p for p in found.plans if p is not found.chosen)
    assert found.choice is not None
    (loser,) = found.choice.losers
    assert loser.plan is other and loser.verdict.startswith("fewer slices (4 vs 9")
    assert _read(tmp_path).shape == (9, 8, 8)
    picked = read_dicom_series(tmp_path, series_uid=other.series_uid)
    assert picked.shape == (4, 8, 8)
    with pytest.raises(DicomSeriesError, match="--series 9.9.9 matches no SeriesInstanceUID") as info:
        read_dicom_series(tmp_path, series_uid="9.9.9")
    assert info.value.reason is SeriesReason.SERIES_NOT_FOUND


def test_equal_slices_choose_thinnest(tmp_path: Path) -> None:
    # Same slices over the same extent: the thinner reconstruction wins (3 mm slices at 1 mm steps overlap).
    vol = make_volume(shape=(5, 8, 8), spacing=(1.0, 0.7, 0.7))
    write_dicom_series(tmp_path, vol, names=list("abcde"), extra={"SliceThickness": "3.0"}, **FINE)
    write_dicom_series(tmp_path, vol, names=list("fghij"), extra={"SliceThickness": "1.0"}, **FINE)
    found = inspect_dicom(tmp_path)
    assert found.choice is not None and found.choice.chosen is not None
    assert found.choice.chosen.thickness_mm == pytest.approx(1.0)
    (loser,) = found.choice.losers
    assert loser.verdict == "thicker slices (3 mm vs 1 mm)"


def test_localizer_inside_series_is_skipped(tmp_path: Path) -> None:
    v = make_volume(shape=(5, 8, 8))
    uid = pydicom.uid.generate_uid()
    write_dicom_series(tmp_path, v, series_uid=uid, **FINE)
    # A scout in the same series: sagittal orientation, ImageType LOCALIZER.
    write_oracle_series(
        tmp_path,
        [(0.0, -20.0, 40.0)],
        rows=8,
        cols=8,
        row_cos=(0, 1, 0),
        col_cos=(0, 0, -1),
        series_uid=uid,
        names=["scout"],
        extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
        **FINE,
    )
    found = inspect_dicom(tmp_path)
    assert found.plans[0].usable and len(found.plans[0].slices) == 5
    assert any("scout: localizer" in s for s in found.plans[0].skipped)
    assert_matches_oracle(_read(tmp_path), atol_hu=0.13)


def test_scout_without_localizer_tag_skipped_by_orientation(tmp_path: Path) -> None:
    v = make_volume(shape=(5, 8, 8))
    uid = pydicom.uid.generate_uid()
    write_dicom_series(tmp_path, v, series_uid=uid, **FINE)
    write_oracle_series(
        tmp_path,
        [(0.0, -20.0, 40.0)],
        rows=8,
        cols=8,
        row_cos=(0, 1, 0),
        col_cos=(0, 0, -1),
        series_uid=uid,
        names=["odd"],
        **FINE,
    )
    plan = inspect_dicom(tmp_path).plans[0]
    assert plan.usable and any("orientation differs" in s for s in plan.skipped)


def test_secondary_capture_in_series_skipped(tmp_path: Path) -> None:
    v = make_volume(shape=(5, 8, 8))
    uid = pydicom.uid.generate_uid()
    write_dicom_series(tmp_path, v, series_uid=uid, **FINE)
    write_oracle_series(
        tmp_path,
        [(-5.0, -6.0, 100.0)],
        rows=8,
        cols=8,
        series_uid=uid,
        names=["sc"],
        extra={"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"},
        **FINE,
    )
    plan = inspect_dicom(tmp_path).plans[0]
    assert plan.usable and len(plan.slices) == 5
    assert any("secondary capture" in s for s in plan.skipped)


def test_mixed_orientations_refused(tmp_path: Path) -> None:
    uid = pydicom.uid.generate_uid()
    write_dicom_series(tmp_path, make_volume(shape=(5, 8, 8)), series_uid=uid, names=list("abcde"), **FINE)
    write_dicom_series(
        tmp_path, make_volume(shape=(5, 8, 8), direction=SAGITTAL), series_uid=uid, names=list("fghij"), **FINE
    )
    _fails(tmp_path, SeriesReason.INCONSISTENT_ORIENTATION, "2 slice orientations")


def test_missing_slice_refused_then_resampled(tmp_path: Path) -> None:
    zs = [0, 2, 4, 6, 10, 12, 14, 16]  # the slice at 8 mm is missing
    write_oracle_series(tmp_path, [(-5.0, -6.0, z) for z in zs], **FINE)
    _fails(tmp_path, SeriesReason.MISSING_SLICE, r"4.00 mm after the slice at 6.00 mm .* where 2.00 mm is expected")
    out = _read(tmp_path, allow_gaps=True)
    assert out.shape[0] == 9 and out.geometry.spacing_mm[0] == pytest.approx(2.0)
    assert_matches_oracle(out, atol_hu=0.13)


def test_irregular_spacing_resampled_to_uniform(tmp_path: Path) -> None:
    # Two protocol zones (2 mm then 3 mm), as head CTs have: corrected with a warning, not refused.
    zs = [0, 2, 4, 6, 8, 11, 14, 17, 20]
    write_oracle_series(tmp_path, [(-5.0, -6.0, z) for z in zs], **FINE)
    plan = inspect_dicom(tmp_path).plans[0]
    assert [r for r, _ in plan.warnings] == [SeriesReason.INCONSISTENT_SPACING]
    out = _read(tmp_path)
    assert out.shape == (11, 16, 16) and out.geometry.spacing_mm[0] == pytest.approx(2.0)
    assert out.array.dtype == np.float32
    assert_matches_oracle(out, atol_hu=0.13)


def _tilted(folder: Path, angle_deg: float, n: int = 10, step: float = 2.0, rows: int = 24) -> list[tuple]:
    drift = step * np.tan(np.radians(angle_deg))
    ipps = [(-5.0, -6.0 + k * drift, -3.0 + k * step) for k in range(n)]
    write_oracle_series(folder, ipps, rows=rows, cols=16, **FINE)
    return ipps


@pytest.mark.parametrize("angle", [15.0, -20.0])
def test_gantry_tilt_corrected_onto_true_positions(tmp_path: Path, angle: float) -> None:
    ipps = _tilted(tmp_path, angle)
    out = _read(tmp_path)
    g = out.geometry
    np.testing.assert_allclose(g.direction_matrix, np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]]), atol=1e-9)
    assert g.spacing_mm[0] == pytest.approx(2.0)
    # The field of view grows to hold every slice.
    drift_rows = abs(ipps[-1][1] - ipps[0][1]) / 0.7
    assert g.shape == (10, 24 + int(np.ceil(drift_rows)), 16)
    # Voxels that lie inside every input slice match the oracle (linear interpolation keeps it exact).
    idx = np.argwhere(np.ones(g.shape, bool))
    world = g.index_to_world(idx)
    y0 = max(p[1] for p in ipps) - 1e-6
    y1 = min(p[1] for p in ipps) + 23 * 0.7 + 1e-6
    inside = (world[:, 1] >= y0) & (world[:, 1] <= y1)
    diff = np.abs(out.array.reshape(-1) - oracle_hu(world))[inside]
    assert inside.sum() > 1000 and diff.max() < 0.13
    # Where no slice reaches, the fill value.
    assert out.array.min() == pytest.approx(-1024.0)


def test_gantry_tilt_refused_on_request(tmp_path: Path) -> None:
    _tilted(tmp_path, 15.0)
    _fails(tmp_path, SeriesReason.GANTRY_TILT, "gantry tilt of 15.00 degrees", correct_tilt=False)


def test_duplicate_positions_refused(tmp_path: Path) -> None:
    write_oracle_series(tmp_path, [(0.0, 0.0, z) for z in (0, 2, 2, 4)], **FINE)
    _fails(tmp_path, SeriesReason.DUPLICATE_POSITION, "2 slices share the position 2.00 mm")


def test_duplicates_from_two_acquisitions_are_mixed(tmp_path: Path) -> None:
    uid = pydicom.uid.generate_uid()
    for acq in (1, 2):
        write_oracle_series(
            tmp_path,
            [(0.0, 0.0, z) for z in (0, 2, 4)],
            series_uid=uid,
            names=[f"a{acq}_{k}" for k in range(3)],
            extra={"AcquisitionNumber": acq},
            **FINE,
        )
    _fails(tmp_path, SeriesReason.MIXED_SERIES, "from 2 acquisitions")


def test_inconsistent_size_refused(tmp_path: Path) -> None:
    uid = pydicom.uid.generate_uid()
    write_oracle_series(tmp_path, [(0.0, 0.0, z) for z in (0, 2, 4)], series_uid=uid, names=list("abc"), **FINE)
    write_oracle_series(tmp_path, [(0.0, 0.0, 6.0)], rows=8, series_uid=uid, names=["d"], **FINE)
    _fails(tmp_path, SeriesReason.INCONSISTENT_SIZE, r"slice sizes differ: 16x16 \(3\), 8x16 \(1\)")


def test_inconsistent_pixel_spacing_refused(tmp_path: Path) -> None:
    uid = pydicom.uid.generate_uid()
    write_oracle_series(tmp_path, [(0.0, 0.0, z) for z in (0, 2, 4)], series_uid=uid, names=list("abc"), **FINE)
    write_oracle_series(tmp_path, [(0.0, 0.0, 6.0)], pixel_spacing=(0.8, 0.8), series_uid=uid, names=["d"], **FINE)
    _fails(tmp_path, SeriesReason.INCONSISTENT_PIXEL_SPACING, "pixel spacing varies 0.7000-0.8000 mm")


def test_too_few_slices(tmp_path: Path) -> None:
    write_oracle_series(tmp_path, [(0.0, 0.0, z) for z in (0, 2)], **FINE)
    _fails(tmp_path, SeriesReason.TOO_FEW_SLICES, "2 slice\\(s\\), expected at least 3")
    assert _read(tmp_path, min_slices=2).shape == (2, 16, 16)


def test_single_slice_uses_thickness(tmp_path: Path) -> None:
    write_oracle_series(tmp_path, [(0.0, 0.0, 5.0)], **FINE)
    out = _read(tmp_path, min_slices=1)
    assert out.shape == (1, 16, 16) and out.geometry.spacing_mm[0] == pytest.approx(1.0)


def test_mr_series_refused_unless_allowed(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, make_volume(shape=(4, 8, 8)), modality="MR", **FINE)
    _fails(tmp_path, SeriesReason.NOT_CT, "modality is MR, expected CT")
    assert _read(tmp_path, allow_non_ct=True).shape == (4, 8, 8)


def test_missing_position_tag(tmp_path: Path) -> None:
    paths = write_dicom_series(tmp_path, make_volume(shape=(4, 8, 8)), **FINE)
    ds = pydicom.dcmread(paths[1])
    del ds.ImagePositionPatient
    ds.save_as(paths[1])
    _fails(tmp_path, SeriesReason.MISSING_TAG, "slices lack ImagePositionPatient")


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    paths = write_dicom_series(tmp_path, make_volume(shape=(4, 8, 8)), **FINE)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:-40])
    _fails(tmp_path, SeriesReason.UNREADABLE_FILE, f"{paths[2].name} is truncated")


def test_non_dicom_files_are_ignored_and_reported(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, make_volume(shape=(4, 8, 8)), **FINE)
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "blob.dcm").write_bytes(b"\x00" * 300)
    found = inspect_dicom(tmp_path)
    assert {i.path.name for i in found.ignored} == {"notes.txt", "blob.dcm"}
    assert found.chosen is not None and len(found.chosen.slices) == 4


def test_files_found_by_content_not_name(tmp_path: Path) -> None:
    v = make_volume(shape=(4, 8, 8))
    write_dicom_series(tmp_path / "deep" / "er", v, names=["IM1", "x.jpg", "I0003", "noext"], **FINE)
    assert _read(tmp_path).shape == (4, 8, 8)


def test_no_dicom_at_all(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    _fails(tmp_path, SeriesReason.NO_DICOM, r"no DICOM image series .*1 file\(s\) ignored")
    _fails(tmp_path / "missing", SeriesReason.NO_DICOM, "does not exist")


def test_several_unusable_series_listed(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, make_volume(shape=(4, 8, 8)), modality="MR", names=list("abcd"), **FINE)
    write_oracle_series(tmp_path, [(0.0, 0.0, z) for z in (0, 2)], names=["e", "f"], **FINE)
    _fails(
        tmp_path,
        SeriesReason.NO_SERIES,
        r"no usable series .*NOT_CT.*TOO_FEW_SLICES|no usable series .*TOO_FEW_SLICES.*NOT_CT",
    )


def test_padding_value_set_to_air_or_kept(tmp_path: Path) -> None:
    v = make_volume(shape=(4, 8, 8))
    hu = np.round(v.array)
    hu[:, 0, 0] = -3024
    write_dicom_series(tmp_path, v.with_array(hu), slope=1.0, intercept=-1024.0, extra={"PixelPaddingValue": -2000})
    out = _read(tmp_path)
    assert (out.array[:, 0, 0] == -1024).all()
    assert (_read(tmp_path, padding_hu=None).array[:, 0, 0] == -3024).all()
    np.testing.assert_array_equal(out.array[:, 1:, 1:], hu[:, 1:, 1:])


def test_inputs_never_modified(tmp_path: Path) -> None:
    paths = write_dicom_series(tmp_path, make_volume(shape=(4, 8, 8)), **FINE)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}
    _read(tmp_path)
    assert before == {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


def test_no_patient_data_in_logs_or_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    write_dicom_series(tmp_path / "ok", make_volume(shape=(4, 8, 8)), **FINE)
    write_dicom_series(tmp_path / "mr", make_volume(shape=(4, 8, 8)), modality="MR", **FINE)
    _read(tmp_path / "ok")
    with pytest.raises(DicomSeriesError) as info:
        _read(tmp_path / "mr")
    text = caplog.text + str(info.value)
    assert caplog.text  # something was logged
    for secret in (PHI_NAME, PHI_ID, "Doe", "19700101"):
        assert secret not in text


def test_copy_of_series_reads_the_same(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "a", make_volume(shape=(4, 8, 8), direction=OBLIQUE), **FINE)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    a, b = _read(tmp_path / "a"), _read(tmp_path / "b")
    assert a.geometry.is_close(b.geometry, atol_mm=1e-9)
    np.testing.assert_array_equal(a.array, b.array)
