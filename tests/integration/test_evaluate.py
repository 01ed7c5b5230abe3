"""``evaluate_folders`` and ``ctseg evaluate`` on label files written to disk: matching, CSV, summary, CLI errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ctseg.cli.evaluate_cmd import evaluate
from ctseg.evaluate import EvaluationError, evaluate_folders, read_label_names
from ctseg.evaluate.cases import case_name, find_cases
from ctseg.evaluate.summary import summarize
from ctseg.evaluate.tables import ROW_COLUMNS
from ctseg.io.images import write_image
from ctseg.volume import Geometry, Volume
from tests.unit.evaluate.test_metrics import _flip_permute

SPACING = (2.5, 0.75, 0.5)
GEOMETRY = Geometry((10, 8, 8), SPACING, (12.0, -30.0, 40.0))


def _labels(shift: int = 0, *, second: bool = True) -> Volume:
    """Class 1: a 4x4x4 cube shifted by `shift` slices; class 2: a small box elsewhere."""
    a = np.zeros(GEOMETRY.shape, np.uint8)
    a[2 + shift : 6 + shift, 1:5, 1:5] = 1
    if second:
        a[1:3, 6:8, 5:8] = 2
    return Volume(a, GEOMETRY)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """REF: case1..case3 in three formats. PRED: case1 flat (shifted 1 slice), case2 as <case>/mask.nii.gz on a
    flipped/permuted grid, case3 missing, plus case9 without a reference."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    write_image(_labels(), ref / "case1.nii.gz")
    write_image(_labels(), ref / "case2.nrrd")
    write_image(_labels(), ref / "case3.mha")
    write_image(_labels(shift=1), pred / "case1.nii.gz")
    write_image(_flip_permute(_labels()), pred / "case2" / "mask.nii.gz")
    write_image(_labels(), pred / "case9.nii.gz")
    (ref / "notes.txt").write_text("not a label file")
    return pred, ref


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fp:
        return list(csv.DictReader(fp))


def test_folders_matched_scored_and_written(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = folders
    out = tmp_path / "results" / "metrics.csv"
    report = evaluate_folders(pred, ref, out=out, labels=None, nsd_tolerance_mm=2.0)
    assert report.missing_predictions == ["case3"] and report.unmatched_predictions == ["case9"]
    assert report.labels == {1: "class_1", 2: "class_2"}
    rows = _read_csv(out)
    assert tuple(rows[0]) == ROW_COLUMNS and len(rows) == 3 * 2
    by_key = {(r["case"], r["class"]): r for r in rows}
    c1 = by_key[("case1", "1")]
    assert (float(c1["dice"]), float(c1["hd95_mm"]), c1["status"]) == (0.75, 2.5, "ok")
    assert float(c1["volume_pred_ml"]) == float(c1["volume_ref_ml"]) == pytest.approx(64 * 2.5 * 0.75 * 0.5 / 1000)
    assert float(by_key[("case1", "2")]["dice"]) == 1.0
    for cls in ("1", "2"):  # the flipped, permuted grid is the same in world space
        assert float(by_key[("case2", cls)]["dice"]) == 1.0 and by_key[("case2", cls)]["status"] == "ok"
        missing = by_key[("case3", cls)]
        assert missing["status"] == "missing_prediction" and float(missing["dice"]) == 0.0
        assert math.isinf(float(missing["hd95_mm"])) and math.isnan(float(missing["volume_pred_ml"]))
        assert float(missing["volume_ref_ml"]) > 0
    summary = _read_csv(report.summary_out or tmp_path / "absent")
    assert report.summary_out == tmp_path / "results" / "metrics_summary.csv"
    s1 = summary[0]
    assert (s1["label"], s1["n_cases"], s1["n_scored"], s1["hd95_n_excluded"]) == ("class_1", "3", "3", "1")
    assert float(s1["dice_mean"]) == pytest.approx((0.75 + 1.0 + 0.0) / 3)
    assert float(s1["hd95_mean_mm"]) == pytest.approx(1.25)  # finite values 2.5 and 0 only
    # Seeded bootstrap percentile interval of the mean: inside [0, 1] (a t-interval here is [-0.98, 2.14]).
    resampled = np.array([0.75, 1, 0])[np.random.default_rng(0).integers(0, 3, (2000, 3))].mean(axis=1)
    low, high = np.quantile(resampled, [0.025, 0.975])
    assert (float(s1["dice_ci_low"]), float(s1["dice_ci_high"])) == pytest.approx((low, high))
    assert 0.0 <= low < float(s1["dice_mean"]) < high <= 1.0
    assert s1["ci_method"] == "95% bootstrap percentile, 2000 resamples, seed 0"
    assert not list(tmp_path.glob("results/.*"))  # atomic writes leave no temporary files


def test_summary_counts_both_empty_but_does_not_average_it(tmp_path: Path) -> None:
    write_image(_labels(second=False), tmp_path / "ref" / "a.nii.gz")
    write_image(_labels(shift=1, second=False), tmp_path / "pred" / "a.nii.gz")
    report = evaluate_folders(tmp_path / "pred", tmp_path / "ref", labels={1: "liver", 2: "spleen"})
    assert [(r.label, r.metrics.status) for r in report.rows] == [("liver", "ok"), ("spleen", "both_empty")]
    spleen = report.summary[1]
    assert (spleen.n_cases, spleen.n_scored) == (1, 0) and math.isnan(spleen.dice_mean)
    assert report.out is None and not (tmp_path / "metrics.csv").exists()
    # One value: a mean, but no interval.
    assert report.summary[0].dice_mean == 0.75 and all(math.isnan(v) for v in report.summary[0].dice_ci)
    assert summarize(report.rows, {1: "liver"})[0].n_scored == 1


def test_case_names_and_layouts(tmp_path: Path) -> None:
    assert case_name(Path("x/case1_0000.nii.gz")) == "case1"
    assert case_name(Path("x/case1_mask.nrrd")) == "case1"
    assert case_name(Path("x/case1/mask.nii.gz")) == "case1"
    assert case_name(Path("x/_0000.nii.gz")) == "_0000"
    write_image(_labels(), tmp_path / "pred" / "case1_0000.nii.gz")
    write_image(_labels(), tmp_path / "pred" / "case2" / "mask.mha")
    (tmp_path / "pred" / "empty_dir").mkdir()
    assert sorted(find_cases(tmp_path / "pred", role="PRED")) == ["case1", "case2"]
    # A single <case>/ prediction folder is one case, matched by name.
    write_image(_labels(), tmp_path / "ref" / "case2.nii.gz")
    report = evaluate_folders(tmp_path / "pred" / "case2", tmp_path / "ref")
    assert {r.case for r in report.rows} == {"case2"} and report.rows[0].metrics.dice == 1.0


def test_two_single_files_need_not_share_a_name(tmp_path: Path) -> None:
    write_image(_labels(shift=1), tmp_path / "my_prediction.nrrd")
    write_image(_labels(), tmp_path / "reference.nii.gz")
    report = evaluate_folders(tmp_path / "my_prediction.nrrd", tmp_path / "reference.nii.gz")
    assert [r.case for r in report.rows] == ["reference", "reference"]
    assert report.rows[0].metrics.dice == 0.75


def test_matching_errors(tmp_path: Path) -> None:
    write_image(_labels(), tmp_path / "ref" / "a.nii.gz")
    write_image(_labels(), tmp_path / "pred" / "b.nii.gz")
    with pytest.raises(EvaluationError, match="no prediction in .* matches a reference"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    write_image(_labels(), tmp_path / "pred" / "b.nrrd")
    with pytest.raises(EvaluationError, match="case 'b' appears twice"):
        find_cases(tmp_path / "pred", role="PRED")
    (tmp_path / "dataset" / "labelsTr").mkdir(parents=True)
    with pytest.raises(EvaluationError, match="holds no label files.*labelsTr"):
        find_cases(tmp_path / "dataset", role="REF")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(EvaluationError, match="is not a label file"):
        find_cases(tmp_path / "notes.txt", role="REF")


def test_label_names_from_dataset_and_model_json(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2}}))
    model = tmp_path / "model" / "model.json"
    model.parent.mkdir()
    model.write_text(json.dumps({"labels": {"1": "liver", "2": "spleen"}, "sha256": "x"}))
    assert read_label_names(dataset) == read_label_names(model) == read_label_names(model.parent)
    assert read_label_names(dataset) == {1: "liver", 2: "spleen"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"labels": {"organ": [1, 2]}}))
    with pytest.raises(EvaluationError, match="neither name -> integer value"):
        read_label_names(bad)
    bad.write_text("{not json")
    with pytest.raises(EvaluationError, match="cannot read a 'labels' mapping"):
        read_label_names(bad)
    bad.write_text(json.dumps({"labels": {"background": 0}}))
    with pytest.raises(EvaluationError, match="no foreground class"):
        read_label_names(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="neither model.json nor dataset.json"):
        read_label_names(tmp_path / "empty")


# -- CLI -------------------------------------------------------------------------------------------------------
def test_cli_prints_summary_and_writes_csv(folders: tuple[Path, Path], tmp_path: Path) -> None:
    pred, ref = folders
    labels = tmp_path / "dataset.json"
    labels.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "spleen": 2}}))
    out = tmp_path / "metrics.csv"
    result = CliRunner().invoke(
        evaluate, [str(pred), str(ref), "--out", str(out), "--labels", str(labels), "--nsd-tolerance", "1.0"]
    )
    assert result.exit_code == 0, result.output
    assert "Dice" in result.output and "liver" in result.output and "spleen" in result.output
    assert "missing predictions (scored as failures): case3" in result.output
    assert "predictions without reference (not scored): case9" in result.output
    assert {r["label"] for r in _read_csv(out)} == {"liver", "spleen"}
    assert (tmp_path / "metrics_summary.csv").is_file()


def test_cli_help_has_examples() -> None:
    result = CliRunner().invoke(evaluate, ["--help"])
    assert result.exit_code == 0 and "Examples:" in result.output and "ctseg evaluate preds/" in result.output


@pytest.mark.parametrize("case", ["missing_path", "no_match", "not_labels"])
def test_cli_user_errors_are_one_line(case: str, tmp_path: Path) -> None:
    write_image(_labels(), tmp_path / "ref" / "a.nii.gz")
    pred = tmp_path / "pred"
    if case == "no_match":
        write_image(_labels(), pred / "b.nii.gz")
    elif case == "not_labels":
        write_image(Volume(np.full(GEOMETRY.shape, 0.5, np.float32), GEOMETRY), pred / "a.nii.gz")
    result = CliRunner().invoke(evaluate, [str(pred), str(tmp_path / "ref")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error:")
    expected = {"missing_path": "does not exist", "no_match": "no prediction", "not_labels": "non-integer values"}
    assert expected[case] in lines[-1]
    if case != "missing_path":  # click's own usage errors print a usage line first; ours are one line
        assert len(lines) == 1 and result.exit_code == 1
