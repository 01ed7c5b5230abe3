"""``ctseg predict`` and ``segment()``: exact geometry with a deterministic stand-in model, failure isolation, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ctseg.cli.main import cli
from ctseg.config import InferConfig, ModelConfig, RunConfig, to_dict
from ctseg.infer import segment
from ctseg.infer.batch import PredictOptions, predict_case
from ctseg.infer.qa import InputQAError, check_ct_input
from ctseg.io import read_volume
from ctseg.io.dicom.write import write_ct_series
from ctseg.io.dicom_seg import read_dicom_seg
from ctseg.io.images import write_image
from ctseg.io.model_files import save_model_files
from ctseg.model import build_model
from ctseg.phantom import make_phantom
from ctseg.volume import Geometry, Volume
from tests.stand_in import FULL_RANGE, THRESHOLD_HU, threshold_model
from tests.synthetic import GRADIENT, OBLIQUE, make_volume, oracle_hu, write_dicom_series, write_oracle_series

FINE = {"slope": 0.25, "intercept": -1024.0}


def _ct(direction, spacing, descending: bool, tmp_path: Path) -> Path:
    # The oracle ramp (6, -4, 9 HU/mm) is placed to cross 300 HU at the centre: the mask is a tilted half-space.
    probe = make_volume(shape=(10, 14, 12), spacing=spacing, direction=direction, origin=(0.0, 0.0, 0.0))
    centre = probe.geometry.index_to_world([[4.5, 6.5, 5.5]])[0]
    shift = GRADIENT * (THRESHOLD_HU - float(oracle_hu(centre))) / float(GRADIENT @ GRADIENT)
    v = make_volume(shape=(10, 14, 12), spacing=spacing, direction=direction, origin=tuple(shift))
    write_dicom_series(tmp_path / "dicom", v, descending=descending, **FINE)
    return tmp_path / "dicom"


CASES = {
    "oblique": (OBLIQUE, (2.5, 0.7, 0.9), False),
    "descending": (((0, 0, 1), (0, 1, 0), (1, 0, 0)), (2.0, 0.8, 0.8), True),
    "nonsquare": (((0, 0, 1), (0, 1, 0), (1, 0, 0)), (3.0, 0.5, 0.9), False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_mask_is_threshold_on_source_grid(tmp_path: Path, name: str) -> None:
    folder = _ct(*CASES[name], tmp_path)
    image = read_volume(folder)
    assert ((image.array > THRESHOLD_HU).mean() - 0.5) ** 2 < 0.2  # both classes present
    model = threshold_model(image.geometry.spacing_mm)
    mask = segment(image, model)
    assert mask.geometry == image.geometry
    np.testing.assert_array_equal(mask.array, (image.array > THRESHOLD_HU).astype(np.uint8))
    # Through the batch path: NIfTI output on the same grid as `ctseg convert` of the same input.
    # qa=False: the synthetic ramp has no air, which the QA gate would rightly refuse.
    options = PredictOptions(formats=("nifti",), device="cpu", qa=False)
    result = predict_case("c", folder, model, tmp_path / "out", options)
    assert result.status == "ok", result.error
    written = read_volume(tmp_path / "out" / "c" / "mask.nii.gz")
    runner = CliRunner()
    assert runner.invoke(cli, ["convert", str(folder), str(tmp_path / "ct.nii.gz")]).exit_code == 0
    converted = read_volume(tmp_path / "ct.nii.gz")
    assert written.geometry.is_close(converted.geometry, atol_mm=1e-4)
    np.testing.assert_array_equal(written.array, (converted.array > THRESHOLD_HU).astype(np.uint8))
    # DICOM SEG: read back on the source grid, it equals the threshold voxel for voxel, each frame on its slice.
    options = PredictOptions(formats=("nifti", "dicom-seg"), device="cpu", qa=False, overwrite=True)
    assert predict_case("c", folder, model, tmp_path / "out", options).status == "ok"
    seg, names = read_dicom_seg(tmp_path / "out" / "c" / "seg.dcm", image.geometry)
    assert names[1] == "dense" and seg.geometry == image.geometry
    np.testing.assert_array_equal(seg.array, (image.array > THRESHOLD_HU).astype(np.uint8))
    stats = json.loads((tmp_path / "out" / "c" / "stats.json").read_text())
    dense = stats["structures"]["dense"]
    assert dense["voxels"] == int((image.array > THRESHOLD_HU).sum())
    assert dense["volume_ml"] == pytest.approx(dense["voxels"] * np.prod(image.geometry.spacing_mm) / 1000, abs=1e-3)
    assert dense["mean_hu"] == pytest.approx(float(image.array[image.array > THRESHOLD_HU].mean()), abs=0.01)


def test_nifti_input_any_grid(tmp_path: Path) -> None:
    v = make_volume(shape=(9, 11, 13), spacing=(2.0, 1.1, 0.6), direction=OBLIQUE)
    write_image(v, tmp_path / "ct.nii.gz")
    image = read_volume(tmp_path / "ct.nii.gz")
    # The model works at another spacing: the mask still comes back exactly onto the input grid.
    mask = segment(image, threshold_model((1.5, 1.5, 1.5)))
    assert mask.geometry == image.geometry
    agree = (mask.array == (image.array > THRESHOLD_HU)).mean()
    assert agree > 0.97  # only voxels next to the boundary can flip after resampling


def _tiny_model(tmp_path: Path) -> Path:
    cfg = RunConfig(model=ModelConfig(channels=(4, 8), strides=((2, 2, 2),)), preprocess=FULL_RANGE)
    net = build_model(cfg.model, 1, 3)
    meta = {
        "config": {"model": to_dict(cfg.model), "preprocess": to_dict(cfg.preprocess), "infer": to_dict(InferConfig())},
        "labels": {"0": "background", "1": "liver", "2": "spleen"},
        "colors": {"1": [255, 0, 0], "2": [0, 0, 255]},
        "patch_size": [8, 16, 16],
        "in_channels": 1,
    }
    return save_model_files(tmp_path / "model", net.state_dict(), meta)


def test_batch_isolates_failures_and_resumes(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for k in range(3):
        ct, _ = make_phantom(Geometry((8, 20, 20), (4.0, 3.0, 3.0), (0.0, 0.0, 10.0 * k), OBLIQUE), seed=k)
        write_ct_series(ct, root / f"good{k}")
    write_dicom_series(root / "mr", make_volume(shape=(6, 16, 16)), modality="MR", **FINE)
    paths = write_dicom_series(root / "truncated", make_volume(shape=(6, 16, 16)), **FINE)
    paths[3].write_bytes(paths[3].read_bytes()[:-100])
    listing = tmp_path / "cases.txt"
    listing.write_text("\n".join(f"in/{n}" for n in ("good0", "mr", "good1", "truncated", "good2")) + "\n")
    model = _tiny_model(tmp_path)
    out = tmp_path / "out"
    args = ["predict", str(listing), "--model", str(model), "--out", str(out), "--device", "cpu"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1, res.output
    assert "3 done, 0 already complete, 2 failed" in res.output
    with open(out / "manifest.csv", newline="") as fp:
        rows = {r["case"]: r for r in csv.DictReader(fp)}
    assert {k: r["status"] for k, r in rows.items()} == {
        "good0": "ok",
        "good1": "ok",
        "good2": "ok",
        "mr": "failed",
        "truncated": "failed",
    }
    assert "NOT_CT" in rows["mr"]["error"] and "truncated" in rows["truncated"]["error"]
    assert float(rows["good0"]["infer_s"]) > 0 and rows["good0"]["series_uid"]
    for k in range(3):
        assert {"mask.nii.gz", "stats.json", "preview.png", "case.json"} <= {
            p.name for p in (out / f"good{k}").iterdir()
        }
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "manifest.csv"}
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "0 done, 3 already complete, 2 failed" in again.output
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "manifest.csv"}
    with open(out / "manifest.csv", newline="") as fp:
        assert {r["case"]: r["status"] for r in csv.DictReader(fp)}["good1"] == "ok"


def test_interrupted_case_is_redone(tmp_path: Path) -> None:
    write_ct_series(make_phantom(Geometry((8, 20, 20), (4.0, 3.0, 3.0)))[0], tmp_path / "in" / "a")
    model = _tiny_model(tmp_path)
    out = tmp_path / "out"
    args = [
        "predict",
        str(tmp_path / "in" / "a"),
        "--model",
        str(model),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--format",
        "nifti",
    ]
    assert CliRunner().invoke(cli, args).exit_code == 0
    (out / "a" / "stats.json").unlink()  # as if the batch died mid-write of this case
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "1 done, 0 already complete" in res.output
    assert (out / "a" / "stats.json").is_file()


def test_qa_gate_refuses_normalised_input(tmp_path: Path) -> None:
    v = make_volume(shape=(6, 16, 16))
    with pytest.raises(InputQAError, match="no air near -1000 HU; the input looks rescaled"):
        check_ct_input(v.with_array(np.random.default_rng(0).random(v.shape).astype(np.float32)))
    with pytest.raises(InputQAError, match="NaN/Inf"):
        check_ct_input(v.with_array(np.full(v.shape, np.nan, np.float32)))
    with pytest.raises(InputQAError, match="above the CT range"):
        check_ct_input(v.with_array(np.concatenate([np.full(700, -1000.0), np.full(836, 40000.0)]).reshape(v.shape)))
    ok = v.with_array(np.where(np.arange(v.array.size).reshape(v.shape) % 2, -1000.0, 40.0))
    assert check_ct_input(ok) == []
    write_image(v.with_array(np.random.default_rng(0).random(v.shape).astype(np.float32)), tmp_path / "norm.nii.gz")
    res = CliRunner().invoke(
        cli,
        [
            "predict",
            str(tmp_path / "norm.nii.gz"),
            "--model",
            str(_tiny_model(tmp_path)),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 1 and "InputQAError" in res.output


def test_predict_option_errors(tmp_path: Path) -> None:
    write_oracle_series(tmp_path / "in", [(0.0, 0.0, z) for z in (0, 2, 4)], **FINE)
    model = _tiny_model(tmp_path)
    base = ["predict", str(tmp_path / "in"), "--model", str(model), "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(cli, [*base, "--format", "png"])
    assert res.exit_code == 1 and "--format 'png'" in res.output
    res = CliRunner().invoke(cli, [*base, "--shard", "2/2"])
    assert res.exit_code == 1 and "--shard '2/2'" in res.output


def test_volume_type_unchanged() -> None:
    assert Volume  # the public types are importable from the test module's namespace


def _phantom_cases(root: Path, n: int) -> list[Path]:
    folders = []
    for k in range(n):
        ct, _ = make_phantom(Geometry((8, 20, 20), (4.0, 3.0, 3.0), (0.0, 0.0, 5.0 * k)), seed=k)
        write_ct_series(ct, root / f"case{k}")
        folders.append(root / f"case{k}")
    return folders


def test_shards_split_cases_and_merge_the_manifest(tmp_path: Path) -> None:
    _phantom_cases(tmp_path / "cohort", 3)
    model, out = _tiny_model(tmp_path), tmp_path / "out"
    for shard in ("0/2", "1/2"):
        res = CliRunner().invoke(
            cli,
            [
                "predict",
                str(tmp_path / "cohort"),
                "--subfolders",
                "--model",
                str(model),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--format",
                "nifti",
                "--shard",
                shard,
            ],
        )
        assert res.exit_code == 0, res.output
    with open(out / "manifest.csv", newline="") as fp:
        rows = {r["case"]: r["status"] for r in csv.DictReader(fp)}
    assert rows == {"case0": "ok", "case1": "ok", "case2": "ok"}


@pytest.mark.parametrize(
    "env",
    [
        {"JOB_COMPLETION_INDEX": "1", "JOB_COMPLETIONS": "2"},  # Kubernetes Indexed Job
        {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "1"},  # --array=1-2
    ],
)
def test_shard_from_the_scheduler_environment(tmp_path: Path, env: dict[str, str]) -> None:
    _phantom_cases(tmp_path / "cohort", 3)
    model, out = _tiny_model(tmp_path), tmp_path / "out"
    args = ["predict", str(tmp_path / "cohort"), "--subfolders", "--model", str(model), "--out", str(out)]
    res = CliRunner().invoke(cli, [*args, "--device", "cpu", "--format", "nifti"], env=env)
    assert res.exit_code == 0, res.output
    done = sorted(p.name for p in out.iterdir() if (p / "case.json").is_file())
    assert done == ["case1"]  # shard 1 of 2 takes every 2nd case from the second
    res = CliRunner().invoke(cli, [*args, "--format", "nifti"], env={"JOB_COMPLETION_INDEX": "0"})
    assert res.exit_code == 1 and "JOB_COMPLETIONS" in res.output


@pytest.mark.dist
def test_torchrun_ranks_split_cases(tmp_path: Path) -> None:
    import subprocess
    import sys

    _phantom_cases(tmp_path / "cohort", 3)
    model, out = _tiny_model(tmp_path), tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29541",
            "-m",
            "ctseg",
            "predict",
            str(tmp_path / "cohort"),
            "--subfolders",
            "--model",
            str(model),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--format",
            "nifti",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "manifest.csv", newline="") as fp:
        rows = {r["case"]: r["status"] for r in csv.DictReader(fp)}
    assert rows == {"case0": "ok", "case1": "ok", "case2": "ok"}
    assert {(out / f"case{k}" / "mask.nii.gz").is_file() for k in range(3)} == {True}
