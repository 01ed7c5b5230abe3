"""DICOM SEG writing and reading: frames sit on their source slices by world position, round trips are exact."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

import ctseg
from ctseg.io.dicom import CheckedSeries, ReadOptions, inspect_dicom, read_dicom_series
from ctseg.io.dicom_seg import DicomSegError, read_dicom_seg, segment_codes, write_dicom_seg
from ctseg.io.images import read_image
from ctseg.volume import Geometry, Volume
from tests.synthetic import OBLIQUE, PHI_NAME, SAGITTAL, make_volume, write_dicom_series, write_oracle_series

hd = pytest.importorskip("highdicom")

FINE = {"slope": 0.25, "intercept": -1024.0}
SERIES = {
    "oblique": ({"direction": OBLIQUE}, False),
    "descending": ({}, True),
    "non_square": ({"shape": (6, 12, 20), "spacing": (2.0, 0.6, 0.9)}, False),
    "sagittal": ({"direction": SAGITTAL}, False),
}


def _series(folder: Path, name: str = "oblique", **options: object) -> tuple[Volume, CheckedSeries]:
    kwargs, descending = SERIES[name]
    write_dicom_series(folder, make_volume(**kwargs), descending=descending, **FINE)  # type: ignore[arg-type]
    opts = ReadOptions(**options)  # type: ignore[arg-type]
    plan = inspect_dicom(folder, options=opts).chosen
    assert plan is not None
    return read_dicom_series(folder, options=opts), plan


def _classes(ct: Volume) -> np.ndarray:
    """Three classes by HU tercile, with the first and last slices empty (so empty frames are omitted)."""
    hu = ct.array.astype(float)
    labels = np.digitize(hu, np.quantile(hu, [0.35, 0.7])).astype(np.uint8)
    labels[0] = labels[-1] = 0
    return labels


def _ipp_by_uid(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in folder.iterdir():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out[str(ds.SOPInstanceUID)] = np.array(ds.ImagePositionPatient, float)
    return out


@pytest.mark.parametrize("name", list(SERIES))
def test_round_trip_frames_sit_on_their_source_slices(tmp_path: Path, name: str) -> None:
    ct, plan = _series(tmp_path / "ct", name)
    labels = _classes(ct)
    out = write_dicom_seg(ct.with_array(labels), plan, tmp_path / "seg.dcm", names={1: "liver", 2: "spleen"})

    back, names = read_dicom_seg(out, ct.geometry)
    assert back.array.dtype == np.uint8 and back.geometry.is_close(ct.geometry)
    np.testing.assert_array_equal(back.array, labels)
    assert names == {1: "liver", 2: "spleen"}

    # Every frame references the source instance at the same world position; empty frames are omitted.
    ds = pydicom.dcmread(out)
    ipps = _ipp_by_uid(tmp_path / "ct")
    expected_frames = sum(int(np.any(labels[k] == s)) for k in range(labels.shape[0]) for s in (1, 2))
    assert int(ds.NumberOfFrames) == expected_frames
    for item in ds.PerFrameFunctionalGroupsSequence:
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.SpatialLocationsPreserved == "YES"
        frame_ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
        np.testing.assert_allclose(frame_ipp, ipps[source.ReferencedSOPInstanceUID], atol=1e-4)

    # highdicom, reading by source instance, agrees slice by slice (slice found by its IPP in the CT grid).
    seg = hd.seg.segread(out)
    for uid, ipp in ipps.items():
        k = int(np.round(ct.geometry.world_to_index([ipp])[0, 0]))
        if not labels[k].any():
            continue
        pixels = seg.get_pixels_by_source_instance([uid], combine_segments=True)
        np.testing.assert_array_equal(pixels[0], labels[k])
    # ... and so does its volume, whatever axis order highdicom picks, read onto highdicom's own grid.
    volume = seg.get_volume(combine_segments=True)
    on_hd_grid, _ = read_dicom_seg(out, Geometry.from_affine(volume.spatial_shape, volume.affine))
    np.testing.assert_array_equal(on_hd_grid.array, volume.array)


def test_frames_follow_world_position_not_array_order(tmp_path: Path) -> None:
    ct, plan = _series(tmp_path / "ct")
    labels = _classes(ct)
    write_dicom_seg(ct.with_array(labels), plan, tmp_path / "a.dcm")
    # The same mask indexed differently: axis 0 reversed and the in-plane axes swapped.
    g = ct.geometry
    d = g.direction_matrix
    origin = g.index_to_world([[g.shape[0] - 1, 0, 0]])[0]
    other = Geometry(
        (g.shape[0], g.shape[2], g.shape[1]),
        (g.spacing_mm[0], g.spacing_mm[2], g.spacing_mm[1]),
        tuple(origin),
        tuple(map(tuple, np.stack([-d[:, 0], d[:, 2], d[:, 1]], axis=1))),
    )
    write_dicom_seg(Volume(labels[::-1].transpose(0, 2, 1).copy(), other), plan, tmp_path / "b.dcm")
    a, b = pydicom.dcmread(tmp_path / "a.dcm"), pydicom.dcmread(tmp_path / "b.dcm")
    np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "b.dcm", other)[0].array, labels[::-1].transpose(0, 2, 1))


def test_read_without_geometry_uses_the_frames_own_grid(tmp_path: Path) -> None:
    ct, plan = _series(tmp_path / "ct")
    labels = _classes(ct)
    out = write_dicom_seg(ct.with_array(labels), plan, tmp_path / "seg.dcm")
    back, _ = read_dicom_seg(out)
    # Empty slices have no frames, so the SEG's own grid runs from the first to the last labelled CT slice.
    first, last = np.flatnonzero(labels.any(axis=(1, 2)))[[0, -1]]
    assert 0 < first < last < ct.shape[0] - 1
    assert back.shape == (last - first + 1, *ct.shape[1:])
    np.testing.assert_allclose(back.geometry.origin_mm, ct.geometry.index_to_world([[first, 0, 0]])[0], atol=1e-4)
    np.testing.assert_allclose(back.geometry.direction_matrix, ct.geometry.direction_matrix, atol=1e-5)
    np.testing.assert_allclose(back.geometry.spacing_mm, ct.geometry.spacing_mm, atol=1e-4)
    np.testing.assert_array_equal(back.array, labels[first : last + 1])


def test_segment_metadata(tmp_path: Path) -> None:
    ct, plan = _series(tmp_path / "ct")
    labels = np.zeros(ct.shape, np.uint8)
    labels[2, 3:6, 3:6], labels[3, 5:9, 5:9], labels[4, 1:3, 1:3] = 1, 2, 4  # label 3 absent
    names = {0: "background", 1: "Liver", 2: "spleen", 4: "thing"}
    out = write_dicom_seg(
        ct.with_array(labels),
        plan,
        tmp_path / "seg.dcm",
        names=names,
        colors={1: (221, 130, 101)},
        algorithm_name="net",
        algorithm_version="9.9",
        series_description="my seg",
    )
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY" and ds.SeriesDescription == "my seg"
    segments = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    assert list(segments) == [1, 2, 3, 4]  # numbers = label values; absent 3 is described with no frames
    assert [segments[n].SegmentLabel for n in (1, 2, 3, 4)] == ["Liver", "spleen", "label 3", "thing"]
    liver, spleen, thing = segments[1], segments[2], segments[4]
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert liver.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Anatomical Structure"
    assert spleen.SegmentedPropertyTypeCodeSequence[0].CodeValue == "78961009"
    assert thing.SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"
    assert thing.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Tissue"
    for s in segments.values():
        assert s.SegmentAlgorithmType == "AUTOMATIC"
        algo = s.SegmentationAlgorithmIdentificationSequence[0]
        assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("net", "9.9")
    assert list(liver.RecommendedDisplayCIELabValue) == list(hd.color.CIELabColor.from_rgb(221, 130, 101).value)
    assert hd.color.CIELabColor.from_dicom_value(liver.RecommendedDisplayCIELabValue).to_rgb() == (221, 130, 101)
    assert len({tuple(s.RecommendedDisplayCIELabValue) for s in segments.values()}) == 4  # fallback colours differ
    frame_segments = [
        int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber) for f in ds.PerFrameFunctionalGroupsSequence
    ]
    assert sorted(frame_segments) == [1, 2, 4]
    back, back_names = read_dicom_seg(out, ct.geometry)
    np.testing.assert_array_equal(back.array, labels)
    assert back_names == {1: "Liver", 2: "spleen", 3: "label 3", 4: "thing"}


@pytest.mark.parametrize(
    ("name", "category", "code"),
    [
        ("liver", "91723000", "10200004"),
        ("Left Kidney", "91723000", "18639004"),
        ("kidney_right", "91723000", "9846003"),
        ("urinary-bladder", "91723000", "89837001"),
        ("vertebrae", "91723000", "421060004"),
        ("tumour", "85756007", "85756007"),
    ],
)
def test_segment_codes(name: str, category: str, code: str) -> None:
    cat, kind = segment_codes(name)
    assert (cat[0], kind[0], kind[1]) == (category, code, "SCT")


def test_phi_is_copied_into_the_seg_but_not_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ct, plan = _series(tmp_path / "ct")
    with caplog.at_level(logging.DEBUG):
        out = write_dicom_seg(ct.with_array(_classes(ct)), plan, tmp_path / "seg.dcm")
        read_dicom_seg(out, ct.geometry)
    assert "wrote DICOM SEG" in caplog.text and PHI_NAME not in caplog.text
    assert str(pydicom.dcmread(out).PatientName) == PHI_NAME  # the Patient module is required in the SEG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "seg.dcm"]  # no temporary file left


@pytest.mark.parametrize(
    ("ipps", "options"),
    [
        ([(0.0, 0.3 * k, 2.0 * k) for k in range(8)], {}),  # gantry tilt
        ([(0.0, 0.0, z) for z in (0.0, 2.0, 4.0, 8.0, 10.0, 12.0)], {"allow_gaps": True}),
    ],
    ids=["tilt", "gap"],
)
def test_resampled_series_gets_own_plane_positions(tmp_path: Path, ipps: list, options: dict) -> None:
    write_oracle_series(tmp_path / "ct", ipps, **FINE)  # type: ignore[arg-type]
    opts = ReadOptions(**options)
    ct, plan = read_dicom_series(tmp_path / "ct", options=opts), inspect_dicom(tmp_path / "ct", options=opts).chosen
    assert plan is not None and plan.needs_resampling
    labels = (ct.array > np.median(ct.array)).astype(np.uint8) * 2
    out = write_dicom_seg(ct.with_array(labels), plan, tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_dicom_seg(out, ct.geometry)[0].array, labels)
    ds = pydicom.dcmread(out)
    refs = ds.ReferencedSeriesSequence[0]
    assert refs.SeriesInstanceUID == plan.series_uid and len(refs.ReferencedInstanceSequence) == len(ipps)
    for item in ds.PerFrameFunctionalGroupsSequence:
        index = ct.geometry.world_to_index([item.PlanePositionSequence[0].ImagePositionPatient])[0]
        np.testing.assert_allclose(index[1:], 0.0, atol=1e-4)
    volume = hd.seg.segread(out).get_volume()  # highdicom's own reading finds every labelled voxel
    assert int(volume.array.sum()) == int((labels > 0).sum()) and volume.spatial_shape[1:] == labels.shape[1:]


# -- real SEG files ----------------------------------------------------------------------------------------------


def test_dcmqi_liver_on_its_ct_grid_equals_the_nrrd(shared_data: Path) -> None:
    ct = read_dicom_series(shared_data / "dcmqi" / "ct-3slice")
    nrrd = read_image(shared_data / "dcmqi" / "segmentations" / "liver_seg.nrrd")
    seg = shared_data / "dcmqi" / "segmentations" / "liver.dcm"
    back, names = read_dicom_seg(seg, ct.geometry)
    assert names == {1: "Liver"}
    np.testing.assert_array_equal(back.array, nrrd.array)
    assert int(back.array.sum()) == 107098
    own, _ = read_dicom_seg(seg)
    assert own.geometry.is_close(ct.geometry)
    np.testing.assert_array_equal(own.array, nrrd.array)


def test_big_endian_liver_equals_little_endian(shared_data: Path) -> None:
    little, names = read_dicom_seg(shared_data / "dcmqi" / "segmentations" / "liver.dcm")
    big, big_names = read_dicom_seg(shared_data / "pydicom_data" / "pydicom_data_wheel" / "liver_expb.dcm")
    assert (
        pydicom.dcmread(
            shared_data / "pydicom_data" / "pydicom_data_wheel" / "liver_expb.dcm"
        ).file_meta.TransferSyntaxUID
        == "1.2.840.10008.1.2.2"
    )
    assert big.geometry.is_close(little.geometry) and big_names == names
    np.testing.assert_array_equal(big.array, little.array)


def test_dcmqi_partial_overlaps_highest_segment_wins(shared_data: Path) -> None:
    folder = shared_data / "dcmqi" / "segmentations"
    ct = read_dicom_series(shared_data / "dcmqi" / "ct-3slice")
    masks = [read_image(folder / f"partial_overlaps-{i}.nrrd").array for i in (1, 2, 3)]
    # seg-example_partial_overlaps.json: segments 1..5 = file 1 label 1, file 2 label 2, file 3 label 3,
    # file 1 label 4, file 1 label 5.
    expected = np.zeros(ct.shape, np.uint8)
    for number, (mask, value) in enumerate([(0, 1), (1, 2), (2, 3), (0, 4), (0, 5)], start=1):
        expected[masks[mask] == value] = number
    back, names = read_dicom_seg(folder / "partial_overlaps.dcm", ct.geometry)
    assert names == {1: "GREEN", 2: "ORANGE", 3: "PURPLE", 4: "LIGHT_BLUE", 5: "DARK_BLUE"}
    np.testing.assert_array_equal(back.array, expected)


def test_highdicom_binary_seg_without_geometry(shared_data: Path) -> None:
    seg_path = shared_data / "highdicom" / "seg_image_ct_binary.dcm"
    back, names = read_dicom_seg(seg_path)
    ds = pydicom.dcmread(seg_path)
    assert names == {1: "first segment"} and back.shape == (3, 16, 16)
    np.testing.assert_allclose(back.geometry.spacing_mm, (1.25, 0.488281, 0.488281), atol=1e-6)
    ipps = _ipp_by_uid(shared_data / "pydicom_data" / "pydicom_package" / "dicomdirtests_77654033_CT2")
    frames = ds.pixel_array
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
        np.testing.assert_allclose(
            ipp, ipps[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        )
        k = back.geometry.world_to_index([ipp])[0]
        np.testing.assert_allclose(k, np.round(k), atol=1e-6)
        np.testing.assert_array_equal(back.array[int(round(k[0]))], frames[f])


@pytest.mark.parametrize("name", ["seg_image_ct_binary_fractional.dcm", "seg_image_ct_true_fractional.dcm"])
def test_highdicom_fractional_segs_threshold_at_half(shared_data: Path, name: str) -> None:
    path = shared_data / "highdicom" / name
    volume = hd.seg.segread(path).get_volume()  # highdicom's own reading: fractions in 0..1, on its own grid
    back, _ = read_dicom_seg(path, Geometry.from_affine(volume.spatial_shape, volume.affine))
    np.testing.assert_array_equal(back.array, (volume.array[..., 0] >= 0.5).astype(np.uint8))
    assert back.array.any() and not back.array.all()


def test_highdicom_overlapping_seg_highest_segment_wins(shared_data: Path) -> None:
    path = shared_data / "highdicom" / "seg_image_ct_binary_overlap.dcm"
    volume = hd.seg.segread(path).get_volume()  # (..., 2): one binary channel per segment
    assert np.any(volume.array.sum(axis=-1) > 1)  # the segments do overlap
    back, names = read_dicom_seg(path, Geometry.from_affine(volume.spatial_shape, volume.affine))
    np.testing.assert_array_equal(back.array, np.max(volume.array * np.array([1, 2]), axis=-1))
    assert names == {1: "first segment", 2: "second segment"}


def test_read_labelmap_seg(tmp_path: Path) -> None:
    ct, plan = _series(tmp_path / "ct", "descending")
    labels = _classes(ct)
    sources = [pydicom.dcmread(s.file.path, stop_before_pixels=True) for s in plan.slices]
    for ds in sources:  # type-2 attributes highdicom reads and the synthetic files lack
        for keyword in ("PatientSex", "AccessionNumber", "StudyID", "StudyDate", "StudyTime"):
            setattr(ds, keyword, None)
    algorithm = hd.AlgorithmIdentificationSequence("x", hd.sr.CodedConcept("123110", "DCM", "AI"), "1")
    descriptions = [
        hd.seg.SegmentDescription(
            n,
            f"s{n}",
            hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
            hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
            "AUTOMATIC",
            algorithm,
        )
        for n in (1, 2)
    ]
    seg = hd.seg.Segmentation(
        sources,
        labels,
        "LABELMAP",
        descriptions,
        hd.UID(),
        1,
        hd.UID(),
        1,
        "m",
        "m",
        "1",
        "1",
        omit_empty_frames=True,
    )
    seg.save_as(tmp_path / "labelmap.dcm")
    back, names = read_dicom_seg(tmp_path / "labelmap.dcm", ct.geometry)
    np.testing.assert_array_equal(back.array, labels)
    assert names == {1: "s1", 2: "s2"}


def test_single_frame_seg_on_its_ct(shared_data: Path) -> None:
    ct = read_dicom_series(shared_data / "highdicom" / "ct_image.dcm", options=ReadOptions(min_slices=1))
    back, _ = read_dicom_seg(shared_data / "highdicom" / "seg_image_ct_binary_single_frame.dcm", ct.geometry)
    expected = hd.seg.segread(shared_data / "highdicom" / "seg_image_ct_binary_single_frame.dcm").pixel_array
    np.testing.assert_array_equal(back.array[0], expected)
    assert back.array.any()


def test_write_on_real_multiframe_source(tmp_path: Path, shared_data: Path) -> None:
    path = shared_data / "pydicom_data" / "pydicom_data_wheel" / "eCT_Supplemental.dcm"
    options = ReadOptions(min_slices=2)
    ct, plan = read_dicom_series(path, options=options), inspect_dicom(path, options=options).chosen
    assert plan is not None and [s.frame for s in plan.slices] == [1, 0]  # the normal points to -z: frame 2 first
    labels = (ct.array > 0).astype(np.uint8)
    out = write_dicom_seg(ct.with_array(labels), plan, tmp_path / "seg.dcm", names={1: "body"})
    np.testing.assert_array_equal(read_dicom_seg(out, ct.geometry)[0].array, labels)
    source = pydicom.dcmread(path, stop_before_pixels=True)
    for item in pydicom.dcmread(out).PerFrameFunctionalGroupsSequence:
        ref = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        src_frame = source.PerFrameFunctionalGroupsSequence[int(ref.ReferencedFrameNumber) - 1]
        np.testing.assert_allclose(
            item.PlanePositionSequence[0].ImagePositionPatient,
            src_frame.PlanePositionSequence[0].ImagePositionPatient,
        )


def test_write_on_real_descending_series(tmp_path: Path, shared_data: Path) -> None:
    folder = shared_data / "dcmqi" / "ct-3slice"
    ct, plan = read_dicom_series(folder), inspect_dicom(folder).chosen
    assert plan is not None
    labels = read_image(shared_data / "dcmqi" / "segmentations" / "liver_spine_seg.nrrd").array.astype(np.uint8)
    out = write_dicom_seg(ct.with_array(labels), plan, tmp_path / "seg.dcm", names={1: "liver", 2: "spine"})
    back, names = read_dicom_seg(out, ct.geometry)
    np.testing.assert_array_equal(back.array, labels)
    # Same frames as dcmqi's liver SEG where the liver is.
    dcmqi, _ = read_dicom_seg(shared_data / "dcmqi" / "segmentations" / "liver.dcm", ct.geometry)
    np.testing.assert_array_equal(back.array == 1, dcmqi.array == 1)
    if shutil.which("dciodvfy"):  # dicom3tools' IOD validator, where installed
        report = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True)
        assert "Error" not in report.stdout + report.stderr, report.stderr


# -- errors ------------------------------------------------------------------------------------------------------


def test_write_rejects_bad_labels(tmp_path: Path) -> None:
    ct, plan = _series(tmp_path / "ct")
    with pytest.raises(DicomSegError, match=r"integers 0\.\.255, got float32"):
        write_dicom_seg(ct.with_array(np.ones(ct.shape, np.float32)), plan, tmp_path / "a.dcm")
    with pytest.raises(DicomSegError, match=r"integers 0\.\.255, got uint16 0\.\.300"):
        write_dicom_seg(ct.with_array(np.full(ct.shape, 300, np.uint16) * (ct.array > 0)), plan, tmp_path / "a.dcm")
    with pytest.raises(DicomSegError, match="label map is empty"):
        write_dicom_seg(ct.with_array(np.zeros(ct.shape, np.uint8)), plan, tmp_path / "a.dcm")
    with pytest.raises(DicomSegError, match="has 70 characters; DICOM allows 64"):
        write_dicom_seg(ct.with_array(_classes(ct)), plan, tmp_path / "a.dcm", names={1: "x" * 70})
    assert not (tmp_path / "a.dcm").exists()


def test_write_rejects_a_mask_off_the_source_grid(tmp_path: Path) -> None:
    ct, plan = _series(tmp_path / "ct")
    g = ct.geometry
    shifted = Geometry(g.shape, g.spacing_mm, tuple(np.array(g.origin_mm) + 0.3), g.direction)
    with pytest.raises(DicomSegError, match="does not match series .*one plane per source slice.*resample_to"):
        write_dicom_seg(Volume(_classes(ct), shifted), plan, tmp_path / "a.dcm")
    # A grid with one slice fewer: every source slice but one fits, which is still not the source grid.
    cropped = Volume(
        _classes(ct)[:-1].copy(), Geometry((g.shape[0] - 1, *g.shape[1:]), g.spacing_mm, g.origin_mm, g.direction)
    )
    with pytest.raises(DicomSegError, match="does not match series"):
        write_dicom_seg(cropped, plan, tmp_path / "a.dcm")


def test_write_rejects_a_mask_off_the_resampled_grid(tmp_path: Path) -> None:
    write_oracle_series(tmp_path / "ct", [(0.0, 0.3 * k, 2.0 * k) for k in range(6)], **FINE)  # type: ignore[arg-type]
    ct, plan = read_dicom_series(tmp_path / "ct"), inspect_dicom(tmp_path / "ct").chosen
    assert plan is not None
    mask = np.ones((ct.shape[0] - 1, *ct.shape[1:]), np.uint8)
    g = ct.geometry
    with pytest.raises(DicomSegError, match="does not match series .*the resampled grid"):
        write_dicom_seg(
            Volume(mask, Geometry(mask.shape, g.spacing_mm, g.origin_mm, g.direction)), plan, tmp_path / "a.dcm"
        )


def test_write_rejects_an_unusable_series(tmp_path: Path) -> None:
    write_oracle_series(tmp_path / "ct", [(0.0, 0.0, z) for z in (0.0, 2.0, 4.0, 8.0)], **FINE)  # type: ignore[arg-type]
    plan = inspect_dicom(tmp_path / "ct").plans[0]
    assert not plan.usable
    volume = Volume(np.ones((4, 16, 16), np.uint8), Geometry((4, 16, 16)))
    with pytest.raises(DicomSegError, match=r"source series is unusable: \[MISSING_SLICE\]"):
        write_dicom_seg(volume, plan, tmp_path / "a.dcm")


def test_write_reports_what_highdicom_refuses(tmp_path: Path) -> None:
    ct, plan = _series(tmp_path / "ct")
    for path in (tmp_path / "ct").iterdir():
        ds = pydicom.dcmread(path)
        del ds.FrameOfReferenceUID
        ds.save_as(path)
    with pytest.raises(DicomSegError, match="highdicom cannot build a SEG .*Frame Of Reference UID"):
        write_dicom_seg(ct.with_array(_classes(ct)), plan, tmp_path / "a.dcm")


def test_write_without_highdicom_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ct, plan = _series(tmp_path / "ct")
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(ImportError, match="pip install highdicom"):
        write_dicom_seg(ct.with_array(_classes(ct)), plan, tmp_path / "a.dcm")


def _written(tmp_path: Path) -> tuple[Volume, Path]:
    ct, plan = _series(tmp_path / "ct")
    return ct, write_dicom_seg(ct.with_array(_classes(ct)), plan, tmp_path / "seg.dcm")


def _edit(path: Path, edit: object) -> Path:
    ds = pydicom.dcmread(path)
    edit(ds)  # type: ignore[operator]
    out = path.with_name("edited.dcm")
    ds.save_as(out)
    return out


def test_read_rejects_non_seg_and_oversized_segment_numbers(tmp_path: Path) -> None:
    ct, seg = _written(tmp_path)
    with pytest.raises(DicomSegError, match="slice0000 is not a DICOM SEG .*modality CT"):
        read_dicom_seg(tmp_path / "ct" / "slice0000")

    def renumber(ds: pydicom.Dataset) -> None:
        ds.SegmentSequence[0].SegmentNumber = 300

    with pytest.raises(DicomSegError, match="segment number 300 does not fit a uint8"):
        read_dicom_seg(_edit(seg, renumber))


def test_read_rejects_frames_off_the_given_grid(tmp_path: Path) -> None:
    ct, seg = _written(tmp_path)
    g = ct.geometry
    half = Geometry(g.shape, g.spacing_mm, tuple(g.index_to_world([[0.5, 0, 0]])[0]), g.direction)
    with pytest.raises(DicomSegError, match=r"SEG frame \d+ at IPP .* does not lie on the grid"):
        read_dicom_seg(seg, half)
    small = Geometry((g.shape[0], 4, 4), g.spacing_mm, g.origin_mm, g.direction)
    with pytest.raises(DicomSegError, match="does not lie on the grid"):
        read_dicom_seg(seg, small)


def test_read_rejects_frames_without_plane_information(tmp_path: Path) -> None:
    _, seg = _written(tmp_path)

    def strip(ds: pydicom.Dataset) -> None:
        del ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence

    with pytest.raises(DicomSegError, match="SEG frame 2 has no plane position"):
        read_dicom_seg(_edit(seg, strip))


def test_read_without_geometry_rejects_irregular_frames(tmp_path: Path) -> None:
    _, seg = _written(tmp_path)

    def move(shift: np.ndarray, frame: int = 1) -> object:
        def edit(ds: pydicom.Dataset) -> None:
            item = ds.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0]
            item.ImagePositionPatient = [f"{v:.6f}" for v in np.array(item.ImagePositionPatient, float) + shift]
            ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices = None

        return edit

    row, col = np.array(OBLIQUE)[:, 2], np.array(OBLIQUE)[:, 1]
    with pytest.raises(DicomSegError, match="shifted in plane"):
        read_dicom_seg(_edit(seg, move(2.0 * row)))
    with pytest.raises(DicomSegError, match="not on one regular grid"):
        read_dicom_seg(_edit(seg, move(0.8 * np.cross(row, col))))

    def tilt(ds: pydicom.Dataset) -> None:
        item = pydicom.Dataset()
        item.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PerFrameFunctionalGroupsSequence[0].PlaneOrientationSequence = [item]

    with pytest.raises(DicomSegError, match="differ in orientation"):
        read_dicom_seg(_edit(seg, tilt))


def test_version_default_is_the_package_version(tmp_path: Path) -> None:
    _, seg = _written(tmp_path)
    algo = pydicom.dcmread(seg).SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("ctseg", ctseg.__version__)
