"""Output path safety: case names, writes confined to the output folder, outputs never over inputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ctseg.errors import DicomSegError, InputQAError, OutputPathError
from ctseg.infer.qa import check_work_size
from ctseg.io.dicom import read_dicom
from ctseg.io.dicom.studies import find_dicom_cases
from ctseg.io.dicom_seg import write_dicom_seg
from ctseg.io.paths import MAX_NAME_CHARS, path_inside, refuse_output_over_inputs, safe_case_name, unique_names
from tests.synthetic import make_volume, write_dicom_series


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("..", "case"),
        (".", "case"),
        ("", "case"),
        ("../../etc", "etc"),
        ("a/b\\c", "a_b_c"),
        ("a\nb\tc\x00d", "a_b_c_d"),
        (".hidden", "hidden"),
        (os.fsdecode(b"pat\xff\xfeX"), "pat__X"),
        ("manifest.csv", "case_manifest.csv"),
        ("Leber 1 ü", "Leber 1 ü"),
    ],
)
def test_safe_case_name(raw: str, expected: str) -> None:
    name = safe_case_name(raw)
    assert name == expected
    name.encode("utf-8")  # always valid UTF-8


def test_long_names_are_cut_and_stay_distinct() -> None:
    a, b = safe_case_name("x" * 300 + "a"), safe_case_name("x" * 300 + "b")
    assert len(a) == len(b) == MAX_NAME_CHARS and a != b


def test_unique_names_case_insensitive() -> None:
    assert unique_names(["p", "P", "p", "p_2"]) == ["p", "P_2", "p_3", "p_2_2"]


def test_path_inside_refuses_escapes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert path_inside(out, "case", "mask.nii.gz") == out / "case" / "mask.nii.gz"
    with pytest.raises(OutputPathError, match="outside the output folder"):
        path_inside(out, "..")
    with pytest.raises(OutputPathError, match="outside the output folder"):
        path_inside(out, ".")
    (tmp_path / "elsewhere").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputPathError, match="remove the link"):
        path_inside(out, "link", "stats.json")


def test_refuse_output_over_inputs(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    refuse_output_over_inputs(tmp_path / "out", [study])
    with pytest.raises(OutputPathError, match="is or lies inside the input"):
        refuse_output_over_inputs(study, [study])
    with pytest.raises(OutputPathError, match="is or lies inside the input"):
        refuse_output_over_inputs(study / "results", [study])
    with pytest.raises(OutputPathError, match="lies inside --out"):
        refuse_output_over_inputs(tmp_path, [study])


def test_out_dir_checks(tmp_path: Path) -> None:
    from ctseg.infer.batch import check_out_dir

    (tmp_path / "in").mkdir()
    (tmp_path / "file.txt").write_text("x")
    check_out_dir(tmp_path / "out", [tmp_path / "in"])
    with pytest.raises(OutputPathError, match="is an existing file; --out names a folder"):
        check_out_dir(tmp_path / "file.txt", [tmp_path / "in"])
    with pytest.raises(OutputPathError, match="inputs are never modified"):
        check_out_dir(tmp_path / "in", [tmp_path / "in"])


def test_work_size_limit() -> None:
    v = make_volume(shape=(8, 20, 20), spacing=(500.0, 500.0, 500.0))
    with pytest.raises(InputQAError, match="check the spacing in the file's header"):
        check_work_size(v, (1.5, 1.5, 1.5))
    with pytest.raises(InputQAError, match="less than one voxel"):
        check_work_size(make_volume(shape=(8, 20, 20), spacing=(0.01, 0.01, 0.01)), (1.5, 1.5, 1.5))
    check_work_size(make_volume(shape=(8, 20, 20)), (1.5, 1.5, 1.5))


def test_seg_refuses_blank_references(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "ct", make_volume(shape=(4, 8, 8)), blank_uids=True)
    image = read_dicom(tmp_path / "ct")
    mask = image.volume.with_array(np.ones(image.volume.shape, np.uint8))
    with pytest.raises(DicomSegError, match="blank StudyInstanceUID, SeriesInstanceUID"):
        write_dicom_seg(mask, image, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_studies_grouped_by_uid_then_folder(tmp_path: Path) -> None:
    v = make_volume(shape=(4, 8, 8))
    write_dicom_series(tmp_path / "cohort" / "a", v)
    write_dicom_series(tmp_path / "cohort" / "b" / "s1", v)
    write_dicom_series(tmp_path / "cohort" / "c" / "x", v, blank_uids=True)
    write_dicom_series(tmp_path / "cohort" / "c" / "y", v, blank_uids=True, series_number=4)
    cases = find_dicom_cases(tmp_path / "cohort")
    assert [c.label for c in cases] == ["a", "b/s1", "c"]
    assert cases[2].study_key == "folder:c" and cases[2].folder == tmp_path / "cohort" / "c"
    every = find_dicom_cases(tmp_path / "cohort", all_series=True)
    assert [c.label for c in every] == ["a", "b/s1", "c/s3", "c/s4"]
