"""The ``ctseg`` command: reports, conversions, and one-line errors (never a traceback) for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ctseg.cli.main import cli
from ctseg.io import read_volume
from tests.synthetic import OBLIQUE, PHI_ID, PHI_NAME, assert_matches_oracle, make_volume, write_dicom_series

FINE = {"slope": 0.25, "intercept": -1024.0}


@pytest.fixture
def series(tmp_path: Path) -> Path:
    write_dicom_series(tmp_path / "study", make_volume(shape=(6, 10, 12), direction=OBLIQUE), **FINE)
    return tmp_path / "study"


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("command", [[], ["inspect"], ["convert"], ["demo"]])
def test_help_has_examples(command: list[str]) -> None:
    code, out = _run(*command, "--help")
    assert code == 0 and "Examples" in out


def test_inspect_text_and_json(series: Path) -> None:
    code, out = _run("inspect", str(series))
    assert code == 0
    assert "1 series" in out and "[*] series 3 'SYNTH AXIAL'" in out and "shape 6x10x12" in out and "chosen:" in out
    code, out = _run("inspect", str(series), "--json")
    report = json.loads(out)
    assert report["series"][0]["usable"] and report["series"][0]["shape_zyx"] == [6, 10, 12]
    assert report["chosen"] == report["series"][0]["series_uid"]
    assert PHI_NAME not in out and PHI_ID not in out


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_convert_writes_hu_volume(series: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"ct{suffix}"
    code, text = _run("convert", str(series), str(out))
    assert code == 0, text
    assert "wrote" in text and "shape (z,y,x) 6x10x12" in text
    assert_matches_oracle(read_volume(out), atol_hu=0.13)


def test_convert_image_to_image_keeps_geometry(series: Path, tmp_path: Path) -> None:
    _run("convert", str(series), str(tmp_path / "a.nii.gz"))
    code, _ = _run("convert", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.mha"))
    a, b = read_volume(tmp_path / "a.nii.gz"), read_volume(tmp_path / "b.mha")
    assert code == 0 and a.geometry.is_close(b.geometry, atol_mm=1e-4)
    np.testing.assert_array_equal(a.array, b.array)


def test_convert_refuses_to_overwrite(series: Path, tmp_path: Path) -> None:
    out = tmp_path / "ct.nii.gz"
    out.write_bytes(b"keep me")
    code, text = _run("convert", str(series), str(out))
    assert code == 1 and "exists; pass --overwrite" in text and out.read_bytes() == b"keep me"
    code, _ = _run("convert", str(series), str(out), "--overwrite")
    assert code == 0 and read_volume(out).shape == (6, 10, 12)


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda d: write_dicom_series(d, make_volume(shape=(4, 8, 8)), modality="MR", **FINE), [], "NOT_CT"),
        (lambda d: (d / "x.txt").write_text("no dicom here"), [], "NO_DICOM"),
        (
            lambda d: write_dicom_series(d, make_volume(shape=(4, 8, 8)), **FINE),
            ["--series", "1.2.3"],
            "SERIES_NOT_FOUND",
        ),
    ],
    ids=["mr", "no-dicom", "bad-uid"],
)
def test_user_errors_are_one_line(tmp_path: Path, make, args: list[str], message: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    make(folder)
    code, out = _run("convert", str(folder), str(tmp_path / "o.nii.gz"), *args)
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert "Traceback" not in out and not (tmp_path / "o.nii.gz").exists()


def test_unknown_output_format(series: Path, tmp_path: Path) -> None:
    code, out = _run("convert", str(series), str(tmp_path / "ct.png"))
    assert code == 1 and "unknown image format '.png'" in out


def test_missing_input_path(tmp_path: Path) -> None:
    code, out = _run("inspect", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in out and "Traceback" not in out


def test_console_script_runs_as_module(series: Path) -> None:
    # A real process: stderr must not carry a traceback for a user error either.
    proc = subprocess.run(
        [sys.executable, "-m", "ctseg", "convert", str(series), str(series / "x.png")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "unknown image format" in proc.stderr


def test_demo_data_is_consistent(tmp_path: Path) -> None:
    """The demo's held-out DICOM series read back onto exactly the grid of their reference label maps."""
    from ctseg.demo import N_HELD_OUT, N_TRAIN, write_demo_data
    from ctseg.train.dataset import check_dataset, load_dataset

    dataset, held_out, reference = write_demo_data(tmp_path)
    assert len(held_out) == N_HELD_OUT and check_dataset(load_dataset(dataset)) == []
    orientations = set()
    for folder in held_out:
        ct = read_volume(folder)
        ref = read_volume(reference / f"{folder.name}.nii.gz")
        assert ct.geometry.is_close(ref.geometry, atol_mm=1e-3)
        assert (ref.array > 0).mean() > 0.02 and ct.array.min() <= -1000
    for k in range(N_TRAIN):
        orientations.add(read_volume(dataset / "imagesTr" / f"phantom_{k:03d}_0000.nii.gz").geometry.orientation_codes())
    assert len(orientations) >= 2  # supine and prone (and oblique) grids


@pytest.mark.slow
def test_demo_reaches_dice_09(tmp_path: Path) -> None:
    """The README's first command: train, predict DICOM, evaluate; large structures reach Dice >= 0.9."""
    from ctseg.demo import LARGE, run_demo

    report = run_demo(tmp_path / "demo", progress=False)
    assert all(report.dice[name] >= 0.9 for name in LARGE), report.dice
    for case in ("phantom_008", "phantom_009"):
        assert {"mask.nii.gz", "seg.dcm", "stats.json", "preview.png"} <= {
            p.name for p in (tmp_path / "demo" / "predictions" / case).iterdir()
        }
