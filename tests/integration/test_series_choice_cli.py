"""Series choice end to end: ``ctseg inspect`` reports, steering options on every command, a model's kernel class,
a quiet terminal, and a real mixed study from ../shared/data chosen as a radiologist would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ctseg.cli.main import cli
from ctseg.errors import ModelFileError
from ctseg.io import read_volume
from ctseg.io.dicom import ReadOptions, inspect_dicom
from ctseg.io.model_files import ModelCard, read_model_card, save_model_files
from tests.integration.test_predict import _tiny_model
from tests.unit.io.test_series_choice import CORONAL, write_series

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A mixed synthetic study: scout, soft and bone axial series, a coronal MPR, a thick venous series."""
    root = tmp_path / "study"
    write_series(root, "scout", number=1, image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"], n=1, kernel="B30f")
    write_series(root, "bone", number=2, kernel="B70f", description="ABD 1.0 B70f", n=20)
    write_series(root, "soft", number=3, kernel="B30f", description="ABD 1.0 B30f", n=20, contrast="IOMERON")
    write_series(
        root, "mpr", number=4, image_type=["DERIVED", "SECONDARY", "MPR"], orientation=CORONAL, description="COR MPR"
    )
    write_series(root, "thick", number=5, description="ABD venous 7.5", thickness=7.5, step=7.5, n=3)
    (root / "notes.txt").write_text("not DICOM")
    return root


def test_inspect_lists_every_series_with_why_it_lost(study: Path) -> None:
    code, out = _run("inspect", str(study))
    assert code == 0, out
    assert (
        "[*] series 3 'ABD 1.0 B30f': CT, 20 files, kernel soft (B30f), ORIGINAL/PRIMARY/AXIAL, axial, 1 mm thick"
        in out
    )
    assert "lost: bone kernel (B70f) while a soft-tissue series exists" in out
    assert "lost: coronal, not axial (acquired axial first)" in out
    assert "lost: thickness 7.5 mm outside the 0.5-5 mm band" in out
    assert "lost: not usable: [NOT_IMAGE]" in out
    assert "chosen: series 3 'ABD 1.0 B30f' (soft-tissue kernel (B30f), axial, ORIGINAL" in out
    code, out = _run("inspect", str(study), "--json")
    report = json.loads(out)
    by_number = {s["series_number"]: s for s in report["series"]}
    assert report["chosen"] == by_number["3"]["series_uid"]
    assert by_number["3"]["kernel_class"] == "soft" and by_number["3"]["contrast"] == "contrast"
    assert by_number["2"]["rule"] == "KERNEL" and by_number["2"]["kernel"] == "B70f"
    assert by_number["4"]["orientation"] == "coronal" and by_number["4"]["image_type"] == [
        "DERIVED",
        "SECONDARY",
        "MPR",
    ]
    assert by_number["5"]["thickness_mm"] == 7.5 and by_number["5"]["contrast"] == "venous"
    assert by_number["3"]["coverage_mm"] == 20.0 and by_number["3"]["slices"] == 20
    assert by_number["1"]["verdict"].startswith("not usable")


def test_steering_options_on_inspect_and_convert(study: Path, tmp_path: Path) -> None:
    code, out = _run("inspect", str(study), "--json", "--prefer-kernel", "bone")
    assert code == 0 and json.loads(out)["reason"].startswith("bone kernel (B70f)")
    code, out = _run("inspect", str(study), "--series", "*VENOUS*")
    assert code == 0 and "chosen: series 5 'ABD venous 7.5' (chosen by --series *VENOUS*)" in out
    code, out = _run("convert", str(study), str(tmp_path / "v.nii.gz"), "--series", "5")
    assert code == 0 and read_volume(tmp_path / "v.nii.gz").shape[0] == 3
    code, out = _run("convert", str(study), str(tmp_path / "t.nii.gz"), "--thickness-band", "5-10")
    assert code == 0 and read_volume(tmp_path / "t.nii.gz").shape[0] == 3  # the only series in the band
    code, out = _run("convert", str(study), str(tmp_path / "x.nii.gz"), "--series", "ABD 1.0*")
    assert code == 1 and "AMBIGUOUS_SERIES" in out and "#2 'ABD 1.0 B70f'" in out and len(out.splitlines()) == 1
    code, out = _run("inspect", str(study), "--thickness-band", "5")
    assert code == 1 and "--thickness-band '5': expected MIN-MAX in mm, e.g. 0.5-5" in out
    code, out = _run("inspect", str(study), "--thickness-band", "5-1")
    assert code == 1 and "thickness_band_mm is (5.0, 1.0)" in out
    code, out = _run("inspect", str(study), "--prefer-kernel", "sharp")
    assert code == 2 and "'sharp' is not one of" in out


def _model_with_kernel(tmp_path: Path, kernel: str) -> Path:
    folder = _tiny_model(tmp_path)
    meta = json.loads((folder / "model.json").read_text())
    meta.pop("sha256")
    import torch

    state = torch.load(folder / "model.pt", weights_only=True)
    return save_model_files(tmp_path / f"model_{kernel}", state, {**meta, "kernel_class": kernel})


def test_predict_prefers_the_kernel_class_the_model_declares(tmp_path: Path) -> None:
    root = tmp_path / "in" / "case"
    write_series(root, "soft", number=3, kernel="B30f", series_uid="1.2.3.3", n=8)
    write_series(root, "bone", number=2, kernel="B70f", series_uid="1.2.3.2", n=8)
    model = _model_with_kernel(tmp_path, "bone")
    assert read_model_card(model).kernel_class == "bone"
    args = ["predict", str(root), "--model", str(model), "--device", "cpu", "--format", "nifti", "--no-qa"]
    code, out = _run(*args, "--out", str(tmp_path / "out"))
    assert code == 0, out
    assert json.loads((tmp_path / "out" / "case" / "case.json").read_text())["series_uid"] == "1.2.3.2"
    assert json.loads((tmp_path / "out" / "case" / "stats.json").read_text())["kernel_class"] == "bone"
    code, out = _run(*args, "--out", str(tmp_path / "out2"), "--prefer-kernel", "soft")
    assert code == 0, out
    assert json.loads((tmp_path / "out2" / "case" / "case.json").read_text())["series_uid"] == "1.2.3.3"


def test_model_json_kernel_class_is_optional_and_checked(tmp_path: Path) -> None:
    meta: dict[str, Any] = json.loads((_tiny_model(tmp_path) / "model.json").read_text())
    assert "kernel_class" not in meta and ModelCard.from_dict(meta).kernel_class == ""
    assert ModelCard.from_dict({**meta, "kernel_class": "lung"}).to_dict()["kernel_class"] == "lung"
    with pytest.raises(
        ModelFileError, match=r"kernel_class is 'sharp'; expected one of soft, bone, lung \(or absent\)"
    ):
        ModelCard.from_dict({**meta, "kernel_class": "sharp"})
    with pytest.raises(ModelFileError, match="kernel_class is 3; expected a string"):
        ModelCard.from_dict({**meta, "kernel_class": 3})


def test_terminal_stays_clean_on_text_files_and_odd_headers(tmp_path: Path, shared_data: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "README.txt").write_text("exported by a PACS\n")
    (folder / "DIRFILE").write_bytes(b"DIRFILE \x00\x01\x02")
    # A real file whose header pydicom repairs (an invalid UI value) while reading it.
    (folder / "bad_sequence.dcm").symlink_to(shared_data / "pydicom_data/pydicom_data_wheel/bad_sequence.dcm")
    proc = subprocess.run(
        [sys.executable, "-m", "ctseg", "inspect", str(folder)], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no pydicom warning or log line
    assert "note HEADER_REPAIRED: pydicom repaired a header oddity" in proc.stdout
    assert "Expected implicit VR" not in proc.stdout  # what pydicom said about the text files is dropped with them
    with _no_warnings():
        found = inspect_dicom(folder)
    assert found.notes and all(r.value == "HEADER_REPAIRED" for r, _ in found.notes)
    assert all("'" not in m for _, m in found.notes)  # no quoted header value echoed


class _no_warnings:
    """Fail when any warning is issued inside the block."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self._caught = self._ctx.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
        assert [str(w.message) for w in self._caught] == []


def _link_study(shared_data: Path, target: Path) -> Path:
    """One study folder holding series of the dcm_qa_ct Philips exports (file by file: the scan follows no links
    to folders)."""
    philips = shared_data / "dcm_qa_ct" / "In" / "Philips"
    for sub in ("S21570/S1000", "S21570/S2010", "S21570/S4010", "S21610/S1000", "S21610/S2010"):
        folder = target / sub.replace("/", "_")
        folder.mkdir(parents=True)
        for f in sorted((philips / sub).iterdir()):
            (folder / f.name).symlink_to(f)
    return target


def test_real_mixed_study_is_chosen_as_a_radiologist_would(shared_data: Path, tmp_path: Path) -> None:
    root = _link_study(shared_data, tmp_path / "study")
    found = inspect_dicom(root)
    assert found.choice is not None and found.choice.chosen is not None
    by_desc = {(c.plan.description, c.series_uid[-6:]): c for c in found.choice.candidates}
    chosen = found.choice.chosen
    # The thinner soft-tissue (UB) axial head series over the 5 mm one; both ORIGINAL/PRIMARY, tilt is corrected.
    assert chosen.plan.description == "STEREOTAXIS" and chosen.kernel_class == "soft" and chosen.facts.kernel == "UB"
    thick = next(c for k, c in by_desc.items() if k[0] == "STD BRAIN 5MM")
    assert thick.verdict == "fewer slices (28 vs 54; 5 mm vs 2.5 mm thick)" and thick.rule == "SLICES"
    localizers = [c for k, c in by_desc.items() if k[0] == ""]
    assert len(localizers) == 2
    assert all(c.rule == "NOT_USABLE" and "localizer" in c.verdict for c in localizers)
    summary = next(c for k, c in by_desc.items() if k[0] == "Exam Summary")
    assert summary.rule == "NOT_USABLE" and "secondary-capture" in summary.verdict
    assert summary.facts.image_type[:2] == ("DERIVED", "SECONDARY")
    # A user who wants the untilted 5 mm series steers by the band (or by --series "STD BRAIN*").
    steered = inspect_dicom(root, options=ReadOptions(thickness_band_mm=(4.0, 6.0)))
    assert steered.choice is not None and steered.choice.chosen is not None
    assert steered.choice.chosen.plan.description == "STD BRAIN 5MM"
    stereo = next(c for c in steered.choice.candidates if c.plan.description == "STEREOTAXIS")
    assert stereo.verdict == "thickness 2.5 mm outside the 4-6 mm band"
    assert inspect_dicom(root, series_uid="std brain*").reason == "chosen by --series std brain*"


def test_train_fingerprint_counts_the_kernel_classes_of_dicom_cases(tmp_path: Path) -> None:
    from ctseg.train.dataset import Case, DatasetFolder
    from ctseg.train.setup import dicom_kernel_classes

    write_series(tmp_path / "a", "s", number=2, kernel="B30f")
    write_series(tmp_path / "b", "s", number=2, kernel="B70f")
    write_series(tmp_path / "b", "t", number=3, kernel="B31f")  # the soft series is the one read
    write_series(tmp_path / "c", "s", number=2, kernel="FC52", manufacturer="TOSHIBA")
    nifti = tmp_path / "d.nii.gz"
    cases = [Case(n, tmp_path / n, tmp_path / "unused") for n in ("a", "b", "c")] + [Case("d", nifti, nifti)]
    dataset = DatasetFolder(tmp_path, {1: "x"}, {1: 1}, cases)
    assert dicom_kernel_classes(dataset) == {"lung": 1, "soft": 2}
    assert dicom_kernel_classes(DatasetFolder(tmp_path, {1: "x"}, {1: 1}, cases[3:])) == {}
