"""``ctseg predict`` (and ``evaluate --out``) on bad and odd inputs: every case a clear outcome, never a traceback.

Each scenario builds an input tree under ``tmp_path``, runs the command as a user would, and checks: the exit code,
each case's status and error type in the manifest, no traceback in the output, the input tree byte-identical
before and after, and nothing written outside ``--out`` (the whole ``tmp_path`` outside ``--out`` is snapshotted).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner, Result

from ctseg.cli.main import cli
from ctseg.config import InferConfig, ModelConfig, RunConfig, to_dict
from ctseg.io.dicom.write import write_ct_series
from ctseg.io.images import write_image
from ctseg.io.model_files import save_model_files
from ctseg.model import build_model
from ctseg.phantom import make_phantom
from ctseg.volume import Geometry
from tests.stand_in import FULL_RANGE
from tests.synthetic import PHI_ID, PHI_NAME, make_volume, write_dicom_series

PHANTOM_GRID = Geometry((6, 16, 16), (4.0, 3.0, 3.0))


def _model(folder: Path, seed: int) -> Path:
    import torch

    torch.manual_seed(seed)
    cfg = RunConfig(model=ModelConfig(channels=(4, 8), strides=((2, 2, 2),)), preprocess=FULL_RANGE)
    meta = {
        "config": {
            "model": to_dict(cfg.model),
            "preprocess": to_dict(cfg.preprocess),
            "infer": to_dict(InferConfig(overlap=0.25)),
        },
        "labels": {"0": "background", "1": "liver", "2": "spleen"},
        "colors": {"1": [255, 0, 0], "2": [0, 0, 255]},
        "patch_size": [8, 16, 16],
        "in_channels": 1,
    }
    return save_model_files(folder, build_model(cfg.model, 1, 3).state_dict(), meta)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: these tiny models run faster without thread hand-offs on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return _model(root / "a", 0), _model(root / "b", 1)


def study(folder: Path, seed: int = 0, *, grid: Geometry = PHANTOM_GRID, **tags: object) -> Path:
    """A small phantom CT study (one series) in ``folder``; ``tags`` overwrite header values in every file."""
    write_ct_series(make_phantom(grid, seed=seed)[0], folder)
    set_tags(folder, **tags)
    return folder


def set_tags(folder: Path, **tags: object) -> None:
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID = PHI_NAME, PHI_ID
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.save_as(path)


def snapshot(root: Path, skip: Path) -> dict[str, str]:
    """Every entry under ``root`` except ``skip``: relative path -> content hash, ``dir`` or the link target."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d != skip]
        for d in dirnames:
            p = here / d
            out[str(p.relative_to(root))] = f"-> {os.readlink(p)}" if p.is_symlink() else "dir"
        for f in filenames:
            p = here / f
            if p.is_symlink():
                out[str(p.relative_to(root))] = f"-> {os.readlink(p)}"
            else:
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def manifest(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "manifest.csv", newline="") as fp:
        return {r["case"]: r for r in csv.DictReader(fp)}


@dataclass
class Scenario:
    """What to run (``args``; ``{model}`` and ``{model_b}`` are replaced) and what must come out."""

    args: list[str]
    exit_code: int
    statuses: dict[str, str] | None = None  # case -> status in the manifest; None: no manifest expected
    errors: dict[str, str] = field(default_factory=dict)  # case -> text in the manifest's error
    output: list[str] = field(default_factory=list)  # text in the command's output
    check: Callable[[Path, Result], None] | None = None


def predict(ws: Path, *inputs: str | Path, out: Path | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    out = out if out is not None else ws / "out"
    return ["predict", *map(str, inputs), "--model", "{model}", "--out", str(out), "--device", "cpu", *extra]


def run(args: list[str], models: tuple[Path, Path]) -> Result:
    args = [a.replace("{model}", str(models[0])).replace("{model_b}", str(models[1])) for a in args]
    return CliRunner().invoke(cli, args)


def case_json(out: Path, case: str) -> dict[str, object]:
    return json.loads((out / case / "case.json").read_text())


# ---- item 1: unusable UIDs -------------------------------------------------------------------------------------
def blank_uids(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "ct", StudyInstanceUID="", SeriesInstanceUID="", SOPInstanceUID="", SOPClassUID="")

    def check(out: Path, res: Result) -> None:
        assert {p.name for p in (out / "ct").iterdir()} == {"mask.nii.gz", "stats.json", "preview.png", "case.json"}
        seg = case_json(out, "ct")["seg"]
        assert isinstance(seg, dict) and not seg["written"] and "blank StudyInstanceUID" in seg["reason"]
        assert "no DICOM SEG" in manifest(out)["ct"]["warnings"]

    return Scenario(predict(ws, ws / "in" / "ct"), 0, {"ct": "ok"}, check=check)


# ---- item 2: names and paths -----------------------------------------------------------------------------------
def dotdot_argument(ws: Path, models: tuple[Path, Path]) -> Scenario:
    (study(ws / "in" / "series") / "sub").mkdir()
    (ws / "stats.json").write_text("{}")  # a file the case would overwrite if named '..'
    return Scenario(predict(ws, f"{ws}/in/series/sub/.."), 0, {"series": "ok"})


def dotdot_listing(ws: Path, models: tuple[Path, Path]) -> Scenario:
    (study(ws / "in" / "series") / "sub").mkdir()
    (ws / "in" / "cases.txt").write_text("series/sub/..\n")
    (ws / "stats.json").write_text("{}")
    return Scenario(predict(ws, ws / "in" / "cases.txt"), 0, {"series": "ok"})


def non_utf8_folder(ws: Path, models: tuple[Path, Path]) -> Scenario:
    folder = study(ws / "in" / os.fsdecode(b"pat\xff\xfe1"))

    def check(out: Path, res: Result) -> None:
        assert (out / "pat__1" / "preview.png").is_file()
        assert "\ufffd" in manifest(out)["pat__1"]["input"]  # the input shown, undecodable bytes replaced

    return Scenario(predict(ws, folder), 0, {"pat__1": "ok"}, check=check)


def control_characters(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "a\nb\tc")
    return Scenario(predict(ws, ws / "in" / "a\nb\tc"), 0, {"a_b_c": "ok"})


def long_name(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / ("x" * 200))

    def check(out: Path, res: Result) -> None:
        (name,) = [p.name for p in out.iterdir() if p.is_dir()]
        assert len(name) == 96 and name.startswith("xxx")

    return Scenario(predict(ws, ws / "in" / ("x" * 200)), 0, check=check)


def same_name_twice(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "A" / "pX", 0)
    study(ws / "in" / "B" / "pX", 1)

    def check(out: Path, res: Result) -> None:
        assert case_json(out, "pX")["input"] == str(ws / "in" / "A" / "pX")
        assert case_json(out, "pX_2")["input"] == str(ws / "in" / "B" / "pX")

    return Scenario(
        predict(ws, ws / "in" / "A" / "pX", ws / "in" / "B" / "pX"), 0, {"pX": "ok", "pX_2": "ok"}, check=check
    )


def symlink_in_out(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "ct")
    (ws / "elsewhere").mkdir()
    (ws / "elsewhere" / "keep.txt").write_text("mine")
    (ws / "out").mkdir()
    (ws / "out" / "ct").symlink_to(ws / "elsewhere")
    return Scenario(predict(ws, ws / "in" / "ct"), 1, {"ct": "failed"}, {"ct": "OutputPathError"})


# ---- item 3: identity on rerun ---------------------------------------------------------------------------------
def _first_run(ws: Path, models: tuple[Path, Path], *inputs: Path, model: str = "{model}") -> None:
    args = [a.replace("{model}", model) for a in predict(ws, *inputs)]
    res = run(args, models)
    assert res.exit_code == 0, res.output


def rerun_other_input(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "A" / "pX", 0)
    study(ws / "in" / "B" / "pX", 1)
    _first_run(ws, models, ws / "in" / "A" / "pX")

    def check(out: Path, res: Result) -> None:
        assert case_json(out, "pX")["input"] == str(ws / "in" / "A" / "pX")  # A's results kept

    return Scenario(
        predict(ws, ws / "in" / "B" / "pX"), 1, {"pX": "failed"}, {"pX": "CaseConflictError"}, ["--overwrite"], check
    )


def rerun_other_input_overwrite(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "A" / "pX", 0)
    study(ws / "in" / "B" / "pX", 1)
    _first_run(ws, models, ws / "in" / "A" / "pX")

    def check(out: Path, res: Result) -> None:
        assert case_json(out, "pX")["input"] == str(ws / "in" / "B" / "pX")

    return Scenario(predict(ws, ws / "in" / "B" / "pX", extra=("--overwrite",)), 0, {"pX": "ok"}, check=check)


def rerun_changed_series(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "pX", 0)
    _first_run(ws, models, ws / "in" / "pX")
    shutil.rmtree(ws / "in" / "pX")
    study(ws / "in" / "pX", 1)  # same path, new instances
    return Scenario(predict(ws, ws / "in" / "pX"), 1, {"pX": "failed"}, {"pX": "different series uid and fingerprint"})


def rerun_other_model(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "pX")
    _first_run(ws, models, ws / "in" / "pX")
    args = [a.replace("{model}", "{model_b}") for a in predict(ws, ws / "in" / "pX")]
    return Scenario(args, 1, {"pX": "failed"}, {"pX": "different model sha256"})


def rerun_same(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "pX")
    _first_run(ws, models, ws / "in" / "pX")
    return Scenario(predict(ws, ws / "in" / "pX"), 0, {"pX": "ok"}, output=["0 done, 1 already complete, 0 failed"])


def foreign_folder_in_out(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "ct")
    (ws / "out" / "ct").mkdir(parents=True)
    (ws / "out" / "ct" / "notes.txt").write_text("a user's file")

    def check(out: Path, res: Result) -> None:
        assert (out / "ct" / "notes.txt").read_text() == "a user's file"

    return Scenario(predict(ws, ws / "in" / "ct"), 1, {"ct": "failed"}, {"ct": "not written by ctseg"}, check=check)


def leftovers_of_a_killed_run(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "ct")
    _first_run(ws, models, ws / "in" / "ct")
    os.rename(ws / "out" / "ct", ws / "out" / ".ct.old-99999")  # killed between the two renames of a swap
    (ws / "out" / ".ct.partial-99999").mkdir()
    (ws / "out" / ".ct.partial-99999" / "mask.nii.gz").write_bytes(b"half")

    def check(out: Path, res: Result) -> None:
        assert sorted(p.name for p in out.iterdir()) == ["ct", "manifest.csv"]

    return Scenario(predict(ws, ws / "in" / "ct"), 0, {"ct": "ok"}, output=["1 already complete"], check=check)


# ---- item 4: one bad case never stops the batch ----------------------------------------------------------------
def _with_good_neighbours(ws: Path, bad: str, statuses: dict[str, str], errors: dict[str, str]) -> Scenario:
    study(ws / "in" / "a", 1)
    study(ws / "in" / "c", 2)
    (ws / "in" / "cases.txt").write_text(f"a\n{bad}\nc\n")
    return Scenario(predict(ws, ws / "in" / "cases.txt"), 1, {"a": "ok", "c": "ok", **statuses}, errors)


def orientation_zero(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "b", ImageOrientationPatient=[0, 0, 0, 0, 0, 0])
    return _with_good_neighbours(ws, "b", {"b": "failed"}, {"b": ""})


def rows_zero(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "b", Rows=0)
    return _with_good_neighbours(ws, "b", {"b": "failed"}, {"b": ""})


def nifti_500mm(ws: Path, models: tuple[Path, Path]) -> Scenario:
    ct = make_phantom(Geometry((8, 20, 20), (500.0, 500.0, 500.0)))[0]
    write_image(ct, ws / "in" / "b.nii.gz")
    return _with_good_neighbours(ws, "b.nii.gz", {"b": "failed"}, {"b": "ImageFormatError: b.nii.gz has voxel spacing (z, y, x) [500.0"})


def nifti_0_01mm(ws: Path, models: tuple[Path, Path]) -> Scenario:
    ct = make_phantom(Geometry((8, 20, 20), (4.0, 3.0, 3.0)))[0]
    write_image(ct, ws / "in" / "b.nii.gz")
    img = nib.load(ws / "in" / "b.nii.gz")
    affine = img.affine.copy()
    affine[:3, :3] *= 0.01 / np.linalg.norm(affine[:3, :3], axis=0)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), ws / "in" / "b.nii.gz")
    return _with_good_neighbours(ws, "b.nii.gz", {"b": "failed"}, {"b": "ImageFormatError: b.nii.gz has voxel spacing (z, y, x) [0.01"})


def missing_listed_path(ws: Path, models: tuple[Path, Path]) -> Scenario:
    return _with_good_neighbours(ws, "ghost", {"ghost": "failed"}, {"ghost": "NO_DICOM"})


def not_dicom_folder(ws: Path, models: tuple[Path, Path]) -> Scenario:
    (ws / "in" / "b").mkdir(parents=True)
    (ws / "in" / "b" / "readme.txt").write_text("no images here")
    return _with_good_neighbours(ws, "b", {"b": "failed"}, {"b": "NO_DICOM"})


def mr_series(ws: Path, models: tuple[Path, Path]) -> Scenario:
    write_dicom_series(ws / "in" / "b", make_volume(shape=(6, 16, 16)), modality="MR")
    return _with_good_neighbours(ws, "b", {"b": "failed"}, {"b": "NOT_CT"})


def bad_model_json(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "ct")
    shutil.copytree(models[0], ws / "badmodel")
    (ws / "badmodel" / "model.json").write_text("[]")
    args = predict(ws, ws / "in" / "ct")
    args[args.index("{model}")] = str(ws / "badmodel")
    return Scenario(args, 1, None, output=["model.json"])


# ---- item 6: inputs never modified -----------------------------------------------------------------------------
def out_is_input(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "ct")
    return Scenario(predict(ws, ws / "in" / "ct", out=ws / "in" / "ct"), 1, None, output=["inputs are never modified"])


def out_inside_input(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "ct")
    args = predict(ws, ws / "in" / "ct", out=ws / "in" / "ct" / "results")
    return Scenario(args, 1, None, output=["is or lies inside the input"])


def out_is_a_file(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "ct")
    (ws / "results.txt").write_text("x")
    return Scenario(predict(ws, ws / "in" / "ct", out=ws / "results.txt"), 1, None, output=["is an existing file"])


def input_inside_out(ws: Path, models: tuple[Path, Path]) -> Scenario:
    study(ws / "in" / "ct")
    return Scenario(predict(ws, ws / "in" / "ct", out=ws / "in"), 1, None, output=["lies inside --out"])


def _labels(ws: Path) -> tuple[Path, Path]:
    _, labels = make_phantom(PHANTOM_GRID)
    for folder in ("pred", "ref"):
        (ws / "in" / folder).mkdir(parents=True)
        write_image(labels, ws / "in" / folder / "a.nii.gz")
    return ws / "in" / "pred", ws / "in" / "ref"


def evaluate_out_is_reference(ws: Path, models: tuple[Path, Path]) -> Scenario:
    pred, ref = _labels(ws)
    args = ["evaluate", str(pred), str(ref), "--out", str(ref / "a.nii.gz")]
    return Scenario(args, 1, None, output=["inputs are never modified"])


def evaluate_out_inside_prediction(ws: Path, models: tuple[Path, Path]) -> Scenario:
    pred, ref = _labels(ws)
    return Scenario(["evaluate", str(pred), str(ref), "--out", str(pred / "m.csv")], 1, None, output=["lies inside"])


# ---- item 7: studies -------------------------------------------------------------------------------------------
def cohort_of_studies(ws: Path, models: tuple[Path, Path]) -> Scenario:
    for k in range(3):
        study(ws / "in" / "cohort" / f"s{k}", k)

    def check(out: Path, res: Result) -> None:
        assert res.output.index("3 case(s):") < res.output.index("3 done")  # the list comes first
        for text in (res.output, (out / "manifest.csv").read_text(), *[p.name for p in out.iterdir()]):
            assert PHI_NAME not in text and PHI_ID not in text

    return Scenario(predict(ws, ws / "in" / "cohort"), 0, {"s0": "ok", "s1": "ok", "s2": "ok"}, check=check)


def _mixed_folder(ws: Path) -> Path:
    for k in range(2):
        study(ws / "tmp" / f"s{k}", k)
        for p in (ws / "tmp" / f"s{k}").iterdir():
            (ws / "in" / "mixed").mkdir(parents=True, exist_ok=True)
            p.rename(ws / "in" / "mixed" / f"s{k}_{p.name}")
    shutil.rmtree(ws / "tmp")
    return ws / "in" / "mixed"


def studies_in_one_folder(ws: Path, models: tuple[Path, Path]) -> Scenario:
    folder = _mixed_folder(ws)

    def check(out: Path, res: Result) -> None:
        names = sorted(manifest(out))
        assert len(names) == 2 and all(n.startswith("mixed_") and len(n) == len("mixed_") + 8 for n in names)

    return Scenario(predict(ws, folder), 0, check=check)


def _two_series(ws: Path) -> Path:
    folder = ws / "in" / "st"
    study(folder / "thin", 0, SeriesNumber=2)
    uid = str(pydicom.dcmread(next((folder / "thin").glob("*.dcm"))).StudyInstanceUID)
    study(folder / "thick", 1, grid=Geometry((4, 20, 20), (8.0, 3.0, 3.0)), StudyInstanceUID=uid, SeriesNumber=3)
    return folder


def two_series_one_study(ws: Path, models: tuple[Path, Path]) -> Scenario:
    folder = _two_series(ws)
    thin = str(pydicom.dcmread(next((folder / "thin").glob("*.dcm"))).SeriesInstanceUID)

    def check(out: Path, res: Result) -> None:
        series = case_json(out, "st")["series"]
        assert isinstance(series, dict) and series["uid"] == thin and series["number"] == "2"
        assert "6 slices" in series["reason"] and "2 of 2 series ranked" in series["reason"]

    return Scenario(predict(ws, folder), 0, {"st": "ok"}, check=check)


def all_series(ws: Path, models: tuple[Path, Path]) -> Scenario:
    folder = _two_series(ws)
    return Scenario(predict(ws, folder, extra=("--all-series",)), 0, {"st_s2": "ok", "st_s3": "ok"})


def blank_uid_cohort(ws: Path, models: tuple[Path, Path]) -> Scenario:
    for k in range(2):
        study(ws / "in" / "cohort" / f"p{k}", k, StudyInstanceUID="", SeriesInstanceUID="")
    return Scenario(predict(ws, ws / "in" / "cohort"), 0, {"p0": "ok", "p1": "ok"})


def inspect_cases(ws: Path, models: tuple[Path, Path]) -> Scenario:
    for k in range(2):
        study(ws / "in" / "cohort" / f"s{k}", k)
    folder = _two_series(ws)
    shutil.move(folder, ws / "in" / "cohort" / "st")
    args = ["inspect", str(ws / "in" / "cohort"), "--cases", "--all-series"]
    return Scenario(args, 0, None, output=["4 case(s)", "  s0 <- ", "  s1 <- ", "  st_s2 <- ", "  st_s3 <- "])


SCENARIOS: dict[str, Callable[[Path, tuple[Path, Path]], Scenario]] = {
    f.__name__: f
    for f in (
        blank_uids,
        dotdot_argument,
        dotdot_listing,
        non_utf8_folder,
        control_characters,
        long_name,
        same_name_twice,
        symlink_in_out,
        rerun_other_input,
        rerun_other_input_overwrite,
        rerun_changed_series,
        rerun_other_model,
        rerun_same,
        foreign_folder_in_out,
        leftovers_of_a_killed_run,
        orientation_zero,
        rows_zero,
        nifti_500mm,
        nifti_0_01mm,
        missing_listed_path,
        not_dicom_folder,
        mr_series,
        bad_model_json,
        out_is_input,
        out_inside_input,
        out_is_a_file,
        input_inside_out,
        evaluate_out_is_reference,
        evaluate_out_inside_prediction,
        cohort_of_studies,
        studies_in_one_folder,
        two_series_one_study,
        all_series,
        blank_uid_cohort,
        inspect_cases,
    )
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_adversarial_input(tmp_path: Path, models: tuple[Path, Path], name: str) -> None:
    ws = tmp_path / "ws"
    (ws / "in").mkdir(parents=True)
    scenario = SCENARIOS[name](ws, models)
    out = Path(scenario.args[scenario.args.index("--out") + 1]) if "--out" in scenario.args else ws / "out"
    outside = out if out.is_relative_to(ws) and not (ws / "in").is_relative_to(out) else ws / "none"
    before = snapshot(ws, outside)
    res = run(scenario.args, models)
    assert res.exit_code == scenario.exit_code, res.output
    assert "Traceback" not in res.output and (res.exception is None or isinstance(res.exception, SystemExit))
    assert snapshot(ws, outside) == before  # inputs byte-identical, nothing written outside --out
    for text in scenario.output:
        assert text in res.output, res.output
    if scenario.statuses is not None:
        rows = manifest(out)
        assert {k: r["status"] for k, r in rows.items()} == scenario.statuses, rows
        for case, text in scenario.errors.items():
            assert rows[case]["error"] and text in rows[case]["error"], rows[case]["error"]
        for case, status in scenario.statuses.items():
            if status == "ok":
                assert (out / case / "mask.nii.gz").is_file() and case_json(out, case)["status"] == "ok"
    elif scenario.exit_code and out != ws / "in" / "ct":
        assert not (out / "manifest.csv").exists()
    if scenario.check is not None:
        scenario.check(out, res)


# ---- a batch with bad cases first, last and in the middle ------------------------------------------------------
def test_batch_of_20_with_6_bad(tmp_path: Path, models: tuple[Path, Path]) -> None:
    bad = {
        0: ("mr", "NOT_CT"),
        1: ("truncated", "truncated"),
        9: ("tilted_zero", ""),
        10: ("empty", "NO_DICOM"),
        18: ("ghost", "does not exist"),
        19: ("huge.nii.gz", "ImageFormatError"),
    }
    write_dicom_series(tmp_path / "in" / "mr", make_volume(shape=(6, 16, 16)), modality="MR")
    paths = sorted(study(tmp_path / "in" / "truncated").glob("*.dcm"))
    paths[2].write_bytes(paths[2].read_bytes()[:-100])
    study(tmp_path / "in" / "tilted_zero", ImageOrientationPatient=[0, 0, 0, 0, 0, 0])
    (tmp_path / "in" / "empty").mkdir()
    write_image(make_phantom(Geometry((6, 16, 16), (500.0, 500.0, 500.0)))[0], tmp_path / "in" / "huge.nii.gz")
    lines = []
    for k in range(20):
        if k in bad:
            lines.append(bad[k][0])
        else:
            lines.append(study(tmp_path / "in" / f"good{k:02d}", k).name)
    (tmp_path / "in" / "cases.txt").write_text("\n".join(lines) + "\n")
    before = snapshot(tmp_path, tmp_path / "out")
    res = run(predict(tmp_path, tmp_path / "in" / "cases.txt"), models)
    assert res.exit_code == 1 and "14 done, 0 already complete, 6 failed" in res.output, res.output
    assert "Traceback" not in res.output
    assert snapshot(tmp_path, tmp_path / "out") == before
    rows = manifest(tmp_path / "out")
    assert len(rows) == 20
    for k, line in enumerate(lines):
        row = rows[line.removesuffix(".nii.gz")]
        if k in bad:
            assert row["status"] == "failed" and row["error"] and bad[k][1] in row["error"], row
        else:
            assert row["status"] == "ok" and row["outputs"] and float(row["total_s"]) > 0, row


# ---- SIGINT / SIGTERM: the current case finishes, the manifest is written ---------------------------------------
def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    # One thread, as in-process (see one_thread): tiny models on a busy machine are slower with a thread pool.
    path = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_finishes_the_case_and_writes_the_manifest(
    tmp_path: Path, models: tuple[Path, Path], signum: int, code: int
) -> None:
    for k in range(6):
        study(tmp_path / "in" / "cohort" / f"s{k}", k)
    out = tmp_path / "out"
    args = [a.replace("{model}", str(models[0])) for a in predict(tmp_path, tmp_path / "in" / "cohort")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctseg", *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not (out / "s0" / "case.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr and "stopping after the current case" in stderr
    assert f"stopped by signal {int(signum)}" in stdout
    rows = manifest(out)
    statuses = [rows[f"s{k}"]["status"] for k in range(6)]
    assert statuses[0] == "ok" and "not_run" in statuses and set(statuses) <= {"ok", "not_run"}, statuses
    assert statuses == sorted(statuses, key=lambda s: s != "ok")  # done cases first, then the rest
    for k, status in enumerate(statuses):
        assert (out / f"s{k}").is_dir() == (status == "ok")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


# ---- kill -9 while --overwrite replaces cases: every case wholly old or wholly new ------------------------------
KILLER = """
import json, os, signal, sys

import torch  # imported once here, before any thread pool exists, then shared by every fork
import ctseg.infer.batch  # noqa: F401

torch.set_num_threads(1)
from ctseg.cli.main import cli

warm_up, jobs = json.loads(sys.argv[1])
cli(warm_up, standalone_mode=False)  # the libraries' first-use set-up (highdicom, matplotlib) once, not per fork
codes = []
for point, args in jobs:
    pid = os.fork()
    if pid == 0:
        count = [0]

        def after(real):
            def call(*a, **k):
                real(*a, **k)
                count[0] += 1
                if count[0] == point:
                    os.kill(os.getpid(), signal.SIGKILL)
            return call

        os.replace, os.rename = after(os.replace), after(os.rename)
        try:
            cli(args)
        finally:
            os._exit(3)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(json.dumps(codes))
"""


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _is_new(folder: Path, reference: Path, model_sha: str) -> bool:
    record = json.loads((folder / "case.json").read_text())
    files = _files(folder)
    if record["model_sha256"] != model_sha or set(files) != {*record["outputs"], "case.json"}:
        return False
    ref = _files(reference)
    same_mask = np.array_equal(
        nib.load(folder / "mask.nii.gz").get_fdata(), nib.load(reference / "mask.nii.gz").get_fdata()
    )
    return same_mask and files["stats.json"] == ref["stats.json"] and files["preview.png"] == ref["preview.png"]


def test_kill_during_overwrite_leaves_every_case_old_or_new(tmp_path: Path, models: tuple[Path, Path]) -> None:
    for k in range(2):
        study(tmp_path / "in" / "cohort" / f"s{k}", k)
    model_b_sha = json.loads((models[1] / "model.json").read_text())["sha256"]
    old_args = predict(tmp_path, tmp_path / "in" / "cohort")
    assert run(old_args, models).exit_code == 0
    old = {c: _files(tmp_path / "out" / c) for c in ("s0", "s1")}
    new_args = [a.replace("{model}", str(models[1])) for a in [*old_args, "--overwrite"]]
    reference = tmp_path / "reference"
    assert run(predict(tmp_path, tmp_path / "in" / "cohort", out=reference), (models[1], models[1])).exit_code == 0
    base = tmp_path / "out"
    # Renames of one case: mask, seg, stats, preview, case.json (atomic writes), the two of the swap, the manifest.
    points = range(1, 9)
    jobs = []
    for point in points:
        shutil.copytree(base, tmp_path / f"out{point}", symlinks=True)
        jobs.append([point, [str(tmp_path / f"out{point}") if a == str(base) else a for a in new_args]])
    shutil.copytree(base, tmp_path / "warm_up", symlinks=True)
    warm_up = [str(tmp_path / "warm_up") if a == str(base) else a for a in new_args]
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, json.dumps([warm_up, jobs])],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0 and json.loads(proc.stdout.splitlines()[-1]) == [-signal.SIGKILL] * len(jobs), proc
    for point, args in jobs:
        out = tmp_path / f"out{point}"
        for case in ("s0", "s1"):
            folder = out / case
            if not folder.exists():  # killed between the two renames: the old folder waits beside it
                (folder,) = out.glob(f".{case}.old-*")
            assert _files(folder) == old[case] or _is_new(folder, reference / case, model_b_sha), (point, case)
        res = run(args, models)  # the rerun finishes the job
        assert res.exit_code == 0, res.output
        for case in ("s0", "s1"):
            assert _is_new(out / case, reference / case, model_b_sha), (point, case)
        assert not [p for p in out.iterdir() if p.name.startswith(".")], point


# ---- real data: a public CT series with its UIDs blanked --------------------------------------------------------
def test_real_series_with_blank_uids(tmp_path: Path, shared_data: Path) -> None:
    from dataclasses import replace

    from ctseg.infer.batch import PredictOptions, predict_case
    from ctseg.io import read_volume
    from tests.stand_in import THRESHOLD_HU, threshold_model

    source = shared_data / "dcmqi" / "ct-3slice"
    folder = tmp_path / "in" / "ct"
    folder.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
            setattr(ds, key, "")
        ds.save_as(folder / path.stem)  # extensionless, as PACS exports are
    ct = read_volume(folder)
    model = replace(threshold_model(ct.geometry.spacing_mm), patch_size=(8, 128, 128))
    result = predict_case("ct", folder, model, tmp_path / "out", PredictOptions(device="cpu", progress=False))
    assert result.status == "ok", result.error
    assert result.outputs == ["mask.nii.gz", "stats.json", "preview.png"]
    assert any("no DICOM SEG" in w and "blank StudyInstanceUID" in w for w in result.warnings)
    mask = read_volume(tmp_path / "out" / "ct" / "mask.nii.gz")
    assert mask.geometry.is_close(ct.geometry, atol_mm=1e-4)
    np.testing.assert_array_equal(mask.array, (ct.array > THRESHOLD_HU).astype(np.uint8))
    record = json.loads((tmp_path / "out" / "ct" / "case.json").read_text())
    assert record["seg"]["written"] is False and "SOPInstanceUID, SOPClassUID" in record["seg"]["reason"]
    assert record["fingerprint"] and record["series"]["modality"] == "CT"


def test_a_case_is_written_while_the_next_is_segmented(
    tmp_path: Path, models: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing runs on the writer thread, overlapping the next case's inference; the manifest keeps case order and
    a failure while writing stays that case's."""
    import threading

    from ctseg.infer import case as case_module
    from ctseg.infer.batch import PredictOptions, predict_batch

    inputs = [study(tmp_path / "in" / f"s{k}", seed=k) for k in range(3)]
    events: list[tuple[str, str, str]] = []
    real_segment, real_write = case_module.segment, case_module._write_outputs

    def segment(*args: object, **kwargs: object) -> object:
        events.append(("segment start", threading.current_thread().name, ""))
        time.sleep(0.3)  # long enough for the previous case's writing to start beside it
        out = real_segment(*args, **kwargs)  # type: ignore[arg-type]
        events.append(("segment end", threading.current_thread().name, ""))
        return out

    def write(folder: Path, done: object, *args: object) -> object:
        name = folder.name.split(".partial")[0].lstrip(".")
        events.append(("write start", threading.current_thread().name, name))
        if name == "s1":
            raise OSError("disk full (simulated)")
        return real_write(folder, done, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(case_module, "segment", segment)
    monkeypatch.setattr(case_module, "_write_outputs", write)
    results = predict_batch(inputs, models[0], tmp_path / "out", PredictOptions(progress=False))
    assert [(r.case, r.status) for r in results] == [("s0", "ok"), ("s1", "failed"), ("s2", "ok")]
    assert "disk full" in results[1].error and not (tmp_path / "out" / "s1").exists()
    assert all(t.startswith("ctseg-write") for kind, t, _ in events if kind == "write start")
    kinds = [(kind, name) for kind, _, name in events]
    # s0 is being written before the second case's inference has ended
    assert kinds.index(("write start", "s0")) < [i for i, k in enumerate(kinds) if k[0] == "segment end"][1]
    rows = list(csv.DictReader(open(tmp_path / "out" / "manifest.csv")))
    assert [(r["case"], r["status"]) for r in rows] == [("s0", "ok"), ("s1", "failed"), ("s2", "ok")]
    for name in ("s0", "s2"):
        assert json.loads((tmp_path / "out" / name / "case.json").read_text())["status"] == "ok"
    assert not list((tmp_path / "out").glob(".*partial*"))
