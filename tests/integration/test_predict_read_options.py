"""``ctseg predict`` reads DICOM as ``ctseg convert`` does (same read options, same grid), and its DICOM SEG
references exactly the instances of the series plan that was read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from click.testing import CliRunner

from ctseg.cli.main import cli
from ctseg.infer.batch import PredictOptions, predict_case
from ctseg.io import read_volume
from ctseg.io.dicom import ReadOptions, read_dicom
from ctseg.volume import Volume
from tests.integration.test_predict import _tiny_model
from tests.stand_in import THRESHOLD_HU, threshold_model
from tests.synthetic import GRADIENT, make_volume, oracle_hu, write_dicom_series, write_oracle_series

FINE = {"slope": 0.25, "intercept": -1024.0}


def _predict(tmp_path: Path, folder: Path, model: Path, *options: str) -> tuple[int, str]:
    args = ["predict", str(folder), "--model", str(model), "--out", str(tmp_path / "out"), "--device", "cpu"]
    res = CliRunner().invoke(cli, [*args, "--format", "nifti", "--no-qa", "--overwrite", *options])
    return res.exit_code, res.output


def _convert(tmp_path: Path, folder: Path, *options: str) -> Volume:
    out = tmp_path / "ct.nii.gz"
    res = CliRunner().invoke(cli, ["convert", str(folder), str(out), "--overwrite", *options])
    assert res.exit_code == 0, res.output
    return read_volume(out)


def test_predict_allow_gaps_gives_the_grid_of_convert(tmp_path: Path) -> None:
    zs = [0, 2, 4, 6, 10, 12, 14, 16]  # the slice at 8 mm is missing
    write_oracle_series(tmp_path / "in", [(-5.0, -6.0, z) for z in zs], **FINE)
    model = _tiny_model(tmp_path)
    code, output = _predict(tmp_path, tmp_path / "in", model)  # by default a gap is refused, as convert does
    assert code == 1 and "MISSING_SLICE" in output and "0 done" in output
    code, output = _predict(tmp_path, tmp_path / "in", model, "--allow-gaps")
    assert code == 0, output
    mask = read_volume(tmp_path / "out" / "in" / "mask.nii.gz")
    converted = _convert(tmp_path, tmp_path / "in", "--allow-gaps")
    assert converted.shape[0] == 9 and mask.shape == converted.shape
    assert mask.geometry.is_close(converted.geometry, atol_mm=1e-4)


def test_predict_series_gives_the_grid_of_convert(tmp_path: Path) -> None:
    thick = make_volume(shape=(4, 8, 8), spacing=(5.0, 0.7, 0.7))
    thin = make_volume(shape=(9, 8, 8), spacing=(2.0, 0.7, 0.7))
    folder = tmp_path / "in"
    write_dicom_series(folder, thick, names=[f"a{k}" for k in range(4)], series_number=1, **FINE)
    write_dicom_series(folder, thin, names=[f"b{k}" for k in range(9)], series_number=2, **FINE)
    uid = str(pydicom.dcmread(folder / "a0").SeriesInstanceUID)
    model = _tiny_model(tmp_path)
    code, output = _predict(tmp_path, folder, model, "--series", uid)
    assert code == 0, output
    mask = read_volume(tmp_path / "out" / "in" / "mask.nii.gz")
    converted = _convert(tmp_path, folder, "--series", uid)
    assert mask.shape == converted.shape == (4, 8, 8)  # the thick series, not the one the rule picks
    assert mask.geometry.is_close(converted.geometry, atol_mm=1e-4)
    code, output = _predict(tmp_path, folder, model, "--series", "9.9.9")
    assert code == 1 and "SERIES_NOT_FOUND" in output


def test_seg_references_exactly_the_plan_instances(tmp_path: Path) -> None:
    # The oracle ramp crosses the threshold mid-volume, so the mask has both classes; a scout in the same series
    # is skipped by the read and must not be referenced.
    probe = make_volume(shape=(6, 12, 10), spacing=(2.5, 0.8, 0.9))
    centre = probe.geometry.index_to_world([[2.5, 5.5, 4.5]])[0]
    shift = GRADIENT * (THRESHOLD_HU - float(oracle_hu(centre))) / float(GRADIENT @ GRADIENT)
    volume = make_volume(shape=(6, 12, 10), spacing=(2.5, 0.8, 0.9), origin=tuple(shift))
    uid = pydicom.uid.generate_uid()
    folder = tmp_path / "in"
    write_dicom_series(folder, volume, series_uid=uid, **FINE)
    scout = write_oracle_series(
        folder,
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
    image = read_dicom(folder)
    plan_uids = [i.sop_instance_uid for i in image.instances]
    assert len(plan_uids) == 6 and len(set(plan_uids)) == 6
    assert str(pydicom.dcmread(scout[0]).SOPInstanceUID) not in plan_uids
    options = PredictOptions(formats=("dicom-seg",), device="cpu", qa=False, read=ReadOptions())
    result = predict_case("c", folder, threshold_model(image.volume.geometry.spacing_mm), tmp_path / "out", options)
    assert result.status == "ok" and result.outputs[0] == "seg.dcm", result.error
    seg = pydicom.dcmread(tmp_path / "out" / "c" / "seg.dcm")
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == image.series_uid == uid
    assert seg.StudyInstanceUID == image.study_uid
    assert sorted(r.ReferencedSOPInstanceUID for r in series.ReferencedInstanceSequence) == sorted(plan_uids)
    # Each frame derives from the plan instance at the frame's position (slice k of the volume is plan instance k).
    mask = (image.volume.array > THRESHOLD_HU).astype(np.uint8)
    assert 0 < mask.mean() < 1
    position_of = {uid: np.asarray(s.position) for uid, s in zip(plan_uids, image.plan.slices, strict=True)}
    referenced = []
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ipp = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        np.testing.assert_allclose(ipp, position_of[source], atol=1e-3)
        referenced.append(source)
    assert sorted(referenced) == sorted(plan_uids[k] for k in range(mask.shape[0]) if mask[k].any())
