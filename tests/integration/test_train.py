"""Training end to end on phantoms the test writes: overfit, exact resume after kill -9, DDP equivalence, artefact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

import ctseg
from ctseg.cli.main import cli
from ctseg.errors import CheckpointError
from ctseg.io import read_volume
from ctseg.io.model_files import load_model_files
from ctseg.phantom import write_phantom_dataset

TINY = [
    "--set",
    "train.steps_per_epoch=3",
    "--set",
    "train.val_every=1",
    "--set",
    "train.num_workers=0",
    "--set",
    "model.channels=[8,16,32]",
    "--set",
    "model.strides=[[2,2,2],[2,2,2]]",
    "--set",
    "train.patch_size=[16,24,24]",
]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_dataset(
        tmp_path_factory.mktemp("ds") / "Dataset001", 1, shape=(32, 48, 48), spacing_mm=(4.0, 3.0, 3.0)
    )


def _train(*args: str) -> str:
    result = CliRunner().invoke(cli, ["train", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_overfit_phantom_reaches_dice_09(phantoms: Path, tmp_path: Path) -> None:
    """The whole pipeline (plan, cache, sampling, AMP step, sliding-window validation) learns one case."""
    model_dir = tmp_path / "model"
    _train(
        str(phantoms),
        "--out",
        str(tmp_path / "run"),
        "--model-dir",
        str(model_dir),
        "--epochs",
        "30",
        "--set",
        "train.steps_per_epoch=10",
        "--set",
        "train.val_every=5",
        "--set",
        "train.learning_rate=0.01",
        "--set",
        "train.num_workers=0",
        "--set",
        "train.augment=false",
    )
    meta = json.loads((model_dir / "model.json").read_text())
    dice = meta["training"]["val_dice"]
    assert dice["liver"] > 0.9 and dice["lungs"] > 0.9 and dice["spine"] > 0.9, dice
    # The artefact alone segments the case with the same quality, on the input's own grid.
    image = read_volume(phantoms / "imagesTr" / "phantom_000_0000.nii.gz")
    ref = read_volume(phantoms / "labelsTr" / "phantom_000.nii.gz").array
    pred = ctseg.segment(image, ctseg.load_model(model_dir))
    assert pred.geometry == image.geometry
    liver = (pred.array == 1, ref == 1)
    assert 2 * (liver[0] & liver[1]).sum() / (liver[0].sum() + liver[1].sum()) > 0.85
    run = tmp_path / "run"
    for name in (
        "plan.yaml",
        "fingerprint.json",
        "split.json",
        "checkpoint.pt",
        "metrics.csv",
        "metrics.jsonl",
        "progress.png",
        "manifest.json",
    ):
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["versions"]["torch"] == torch.__version__


def test_model_artefact_is_verified(phantoms: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    _train(str(phantoms), "--out", str(tmp_path / "run"), "--model-dir", str(model_dir), "--epochs", "1", *TINY)
    meta = json.loads((model_dir / "model.json").read_text())
    assert set(meta) >= {
        "config",
        "labels",
        "colors",
        "patch_size",
        "fingerprint",
        "sha256",
        "ctseg_version",
        "torch_version",
        "source_values",
    }
    state, _ = load_model_files(model_dir)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    weights = model_dir / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="has sha256 .* but model.json records"):
        ctseg.load_model(model_dir)
    (model_dir / "model.json").unlink()
    with pytest.raises(CheckpointError, match="model.json is missing"):
        ctseg.load_model(model_dir)


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def _train_cmd(dataset: Path, run: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ctseg",
        "train",
        str(dataset),
        "--out",
        str(run),
        "--model-dir",
        str(run / "model"),
        "--deterministic",
        "--epochs",
        "4",
        *TINY,
        *extra,
    ]


def test_resume_after_kill_9_is_exact(phantoms: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_train_cmd(phantoms, tmp_path / "full"), check=True, env=env, capture_output=True)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(phantoms, run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # mid-epoch 2, with no chance to save anything
    proc.wait()
    assert len((run / "metrics.jsonl").read_text().splitlines()) < 4
    subprocess.run(_train_cmd(phantoms, run, "--resume"), check=True, env=env, capture_output=True)
    full, resumed = _final_weights(tmp_path / "full"), _final_weights(run)
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


def test_sigterm_checkpoints_and_resume_extends(phantoms: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _train_cmd(phantoms, run, "--epochs", "50"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    step = int(torch.load(run / "checkpoint.pt", weights_only=True)["step"])
    assert 3 <= step < 150
    out = subprocess.run(
        _train_cmd(phantoms, run, "--resume", "--epochs", str(step // 3 + 2)),
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"trained {step // 3 + 2} epochs" in out.stdout


def test_train_user_errors(phantoms: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["train", str(phantoms), "--out", str(tmp_path / "r"), "--set", "train.epoch=3"])
    assert res.exit_code == 1 and "unknown key(s) epoch" in res.output and "Traceback" not in res.output
    res = runner.invoke(cli, ["train", str(phantoms), "--out", str(tmp_path / "r2"), "--resume"])
    assert res.exit_code == 1 and "Error:" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(cli, ["train", str(phantoms), "--out", str(tmp_path / "r3"), "--check"])
    assert res.exit_code == 0 and "1 cases" in res.output and "ready to train" in res.output
    res = runner.invoke(
        cli, ["train", str(phantoms), "--out", str(tmp_path / "r4"), "--set", "train.patch_size=[15,24,24]", *TINY[:6]]
    )
    assert res.exit_code == 1 and "must be a multiple of" in res.output


@pytest.mark.dist
def test_ddp_two_processes_equal_one(phantoms: Path, tmp_path: Path) -> None:
    """2-process gloo DDP with local batch 1 == 1 process with batch 2 (same global batch), within float tolerance."""
    # SGD: its update is linear in the gradient, so all-reduce rounding stays at float noise (Adam divides
    # near-zero gradients by their own magnitude and would amplify it to the size of the learning rate).
    common = [
        "--epochs",
        "2",
        *TINY,
        "--set",
        "train.batch_size=2",
        "--set",
        "train.amp=false",
        "--set",
        "train.optimizer=sgd",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ctseg",
            "train",
            str(phantoms),
            "--out",
            str(single),
            "--model-dir",
            str(single / "m"),
            *common,
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    multi = tmp_path / "multi"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29533",
            "-m",
            "ctseg",
            "train",
            str(phantoms),
            "--out",
            str(multi),
            "--model-dir",
            str(multi / "m"),
            *common,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _final_weights(single), _final_weights(multi)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst
    assert json.loads((multi / "manifest.json").read_text())["world_size"] == 2
    assert np.isclose(
        json.loads((single / "metrics.jsonl").read_text().splitlines()[-1])["train_loss"],
        json.loads((multi / "metrics.jsonl").read_text().splitlines()[-1])["train_loss"],
        atol=1e-2,
    )


def test_a_setting_model_json_cannot_record_is_refused_before_training(phantoms: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli, ["train", str(phantoms), "--out", str(tmp_path / "r"), "--set", "infer.overlap=0.99", *TINY]
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "run config: config.infer.overlap is 0.99; expected a number in [0.0, 0.95]" in res.output
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_time_budget_finishes_in_time_and_resume_keeps_its_horizon(phantoms: Path, tmp_path: Path) -> None:
    """The defaults plus ``--time-budget``: the run measures its step time, fits the schedule and stays in budget."""
    run, model_dir = tmp_path / "run", tmp_path / "model"
    args = [str(phantoms), "--out", str(run), "--model-dir", str(model_dir), *TINY]
    t0 = time.monotonic()
    out = _train(*args, "--time-budget", "20s", "--set", "train.learning_rate=3e-3")
    # budget + tolerance: the epoch under way when the time runs out, the final validation and saving the model,
    # all several times slower when other processes crowd the CPU (the default, a 15-minute budget, takes 45x longer)
    assert time.monotonic() - t0 < 20 + 70, out
    assert (model_dir / "model.pt").is_file() and (model_dir / "model.json").is_file()
    plan = yaml.safe_load((run / "plan.yaml").read_text())
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    epochs = plan["train"]["epochs"]
    assert plan["train"]["time_budget_minutes"] == pytest.approx(1 / 3) and plan["train"]["learning_rate"] == 3e-3
    assert state["epochs_total"] == epochs and state["epoch"] == epochs and state["step"] == epochs * 3
    assert epochs >= 2 and f"trained {epochs} epochs" in out
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["lr"] > 0 for r in rows[:-1]), rows  # the horizon never fell behind the steps trained
    assert "# mirror_axes []: CT is reoriented canonically" in (run / "plan.yaml").read_text()
    # --resume without new settings continues the recorded horizon (here: it is complete), --epochs extends it.
    assert f"trained {epochs} epochs ({epochs * 3} steps)" in _train(*args, "--resume")
    assert f"trained {epochs + 1} epochs" in _train(*args, "--resume", "--epochs", str(epochs + 1))


def test_mirroring_follows_the_plan_unless_set(phantoms: Path, tmp_path: Path) -> None:
    _train(str(phantoms), "--out", str(tmp_path / "a"), "--model-dir", str(tmp_path / "ma"), "--epochs", "1", *TINY)
    assert yaml.safe_load((tmp_path / "a" / "plan.yaml").read_text())["train"]["mirror_axes"] == []
    sets = ["--set", "train.mirror_axes=[0,1,2]"]
    _train(
        str(phantoms), "--out", str(tmp_path / "b"), "--model-dir", str(tmp_path / "mb"), "--epochs", "1", *TINY, *sets
    )
    plan = yaml.safe_load((tmp_path / "b" / "plan.yaml").read_text())
    assert plan["train"]["mirror_axes"] == [0, 1, 2] and plan["train"]["time_budget_minutes"] is None


def test_time_budget_user_errors(phantoms: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["train", str(phantoms), "--out", str(tmp_path / "r"), *TINY]
    res = runner.invoke(cli, [*base, "--time-budget", "20 minutes"])
    assert res.exit_code == 1 and "--time-budget '20 minutes': expected a number and a unit" in res.output
    res = runner.invoke(cli, [*base, "--time-budget", "5s"])
    assert res.exit_code == 1 and "expected between 10s and 30d" in res.output
    res = runner.invoke(cli, [*base, "--time-budget", "5m", "--epochs", "3"])
    assert res.exit_code == 1 and "--epochs and --time-budget both set the schedule" in res.output
    res = runner.invoke(cli, [*base, "--set", "train.learning_rate=2"])
    assert res.exit_code == 1 and "train.learning_rate is 2.0; expected a number in (0, 1]" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "r" / "checkpoint.pt").exists()
