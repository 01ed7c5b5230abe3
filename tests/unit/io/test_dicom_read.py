"""``read_dicom``: the volume and the frozen plan it came from (instances in slice order, warnings, source UIDs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctseg.errors import DicomSeriesError, SeriesReason
from ctseg.io.dicom import CheckedSeries, ReadOptions, RejectedSeries, inspect_dicom, read_dicom, read_dicom_series
from tests.synthetic import OBLIQUE, make_volume, write_dicom_series, write_oracle_series

FINE = {"slope": 0.25, "intercept": -1024.0}


def test_instances_follow_slice_order_not_file_order(tmp_path: Path) -> None:
    v = make_volume(shape=(5, 8, 8), direction=OBLIQUE)
    paths = write_dicom_series(tmp_path, v, descending=True, shuffle_instances=True, **FINE)
    image = read_dicom(tmp_path)
    np.testing.assert_array_equal(image.volume.array, read_dicom_series(tmp_path).array)
    assert image.volume.geometry.is_close(v.geometry, atol_mm=1e-4)
    headers = {p: pydicom.dcmread(p) for p in paths}
    # Slice k of the volume is the file whose IPP is voxel (k, 0, 0): the descending files, reversed.
    assert [i.path for i in image.instances] == paths[::-1]
    assert [i.sop_instance_uid for i in image.instances] == [str(headers[p].SOPInstanceUID) for p in paths[::-1]]
    assert image.series_uid == str(headers[paths[0]].SeriesInstanceUID)
    assert image.study_uid == str(headers[paths[0]].StudyInstanceUID)
    assert (
        image.modality == "CT"
        and image.warnings == ()
        and "axial, ORIGINAL" in image.reason
        and image.choice is not None
        and image.choice.chosen is not None
    )


def test_image_and_plan_are_frozen(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, make_volume(shape=(4, 8, 8)), **FINE)
    image = read_dicom(tmp_path)
    assert isinstance(image.plan, CheckedSeries)
    with pytest.raises(dataclasses.FrozenInstanceError):
        image.plan.warnings = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        image.volume = image.volume  # type: ignore[misc]


def test_gap_warning_kept_in_the_plan_and_rejected_series_carry_the_error(tmp_path: Path) -> None:
    write_oracle_series(tmp_path, [(-5.0, -6.0, z) for z in (0, 2, 4, 6, 10, 12)], **FINE)
    (plan,) = inspect_dicom(tmp_path).plans
    assert isinstance(plan, RejectedSeries) and plan.error.reason is SeriesReason.MISSING_SLICE
    assert len(plan.slices) == 6 and plan.shape is None  # the stack that was refused, in slice order
    with pytest.raises(DicomSeriesError, match="find the missing files, or pass allow_gaps") as info:
        read_dicom(tmp_path)
    assert info.value.reason is SeriesReason.MISSING_SLICE
    image = read_dicom(tmp_path, options=ReadOptions(allow_gaps=True))
    assert [r for r, _ in image.warnings] == [SeriesReason.MISSING_SLICE, SeriesReason.INCONSISTENT_SPACING]
    assert len(image.instances) == 6 and image.volume.shape[0] == 7 and image.plan.geometry == image.volume.geometry


def test_an_unusable_series_named_by_uid_raises_its_own_error(tmp_path: Path) -> None:
    write_dicom_series(tmp_path, make_volume(shape=(6, 8, 8)), names=[f"a{k}" for k in range(6)], **FINE)
    write_dicom_series(tmp_path, make_volume(shape=(2, 8, 8)), names=["b0", "b1"], **FINE)
    uid = str(pydicom.dcmread(tmp_path / "b0").SeriesInstanceUID)
    found = inspect_dicom(tmp_path, series_uid=uid)
    assert found.chosen is None and found.picked is not None and found.picked.series_uid == uid
    with pytest.raises(DicomSeriesError, match=r"2 slice\(s\), expected at least 3") as info:
        read_dicom(tmp_path, series_uid=uid)
    assert info.value.reason is SeriesReason.TOO_FEW_SLICES
