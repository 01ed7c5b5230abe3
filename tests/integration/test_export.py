"""``ctseg export`` and ``--runtime``: round trip, accuracy gate, hash checks and fallback on a tiny U-Net."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ctseg.cli.main import cli
from ctseg.errors import CheckpointError, ConfigError
from ctseg.export import ExportData, export_model, export_variants, gather_data
from ctseg.infer import load_model, segment
from ctseg.infer.pipeline import make_predictor
from ctseg.infer.sliding_window import predict_labels
from ctseg.io.images import write_image
from ctseg.preprocess.pipeline import background_value, preprocess_image
from ctseg.runtime import read_exports
from ctseg.runtime.backends import onnxruntime_predictor, openvino_predictor
from ctseg.runtime.variants import read_verified
from tests.tiny_model import PATCH, phantom_ct, write_tiny_model

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")
pytest.importorskip("nncf")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "model")


@pytest.fixture
def calibration(tmp_path: Path) -> Path:
    folder = tmp_path / "calibration"
    folder.mkdir()
    for seed in range(2):
        write_image(phantom_ct(seed=seed), folder / f"ct{seed}.nii.gz")
    return folder


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def test_fp32_exports_give_torch_argmax(model_dir: Path) -> None:
    for runtime in ("openvino", "onnxruntime"):
        export_model(model_dir, runtime=runtime)
    model = load_model(model_dir)
    records = read_exports(model.meta)
    assert set(records) == {"openvino", "onnxruntime"}
    image = torch.from_numpy(np.asarray(preprocess_image(phantom_ct(seed=7), model.preprocess).array))[None]
    kwargs = {"overlap": 0.5, "pad_value": background_value(model.preprocess)}
    reference = predict_labels(image, make_predictor(model.network, torch.device("cpu"), amp=False), PATCH, **kwargs)
    ov = read_verified(model_dir, records["openvino"])
    ov_fp32 = openvino_predictor(ov["model.openvino.xml"], ov["model.openvino.bin"], precision="f32")
    ort = onnxruntime_predictor(read_verified(model_dir, records["onnxruntime"])["model.onnx"])
    for predictor in (ov_fp32, ort):
        assert _agreement(predict_labels(image, predictor, PATCH, **kwargs), reference) >= 0.999
    # Through segment(): the exported runtime on the input grid.
    ct = phantom_ct(seed=7)
    torch_labels = segment(ct, model, runtime="torch", config=model.infer.__class__(amp=False))
    ort_labels = segment(ct, model, runtime="onnxruntime")
    assert ort_labels.geometry == ct.geometry
    assert _agreement(ort_labels.array, torch_labels.array) >= 0.999
    assert all(r.recommended and r.gate["min_ratio"] >= 0.99 for r in records.values())


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_gate_marks_blank_calibration_not_recommended(model_dir: Path, calibration: Path, runtime: str) -> None:
    model = load_model(model_dir)
    good = gather_data(model, calibration)
    blank = [np.full((1, 1, *PATCH), background_value(model.preprocess), np.float32) for _ in range(4)]
    records = export_variants(model, model_dir, runtime, ExportData(blank, good.cases, "blank"), int8=True)
    by_name = {r.variant: r for r in records}
    int8 = by_name[f"{runtime}-int8"]
    assert not int8.recommended
    assert int8.gate["min_ratio"] < 0.99
    assert by_name[runtime].recommended
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["exports"][f"{runtime}-int8"]["recommended"] is False
    assert segment(phantom_ct(), load_model(model_dir), runtime="auto") is not None
    from ctseg.runtime import choose_variant

    assert meta["exports"]["torch"]["window_seconds"] > 0  # torch's own time, measured beside the exports
    exports_only = {**meta, "exports": {k: v for k, v in meta["exports"].items() if k != "torch"}}
    assert choose_variant(exports_only, runtime="auto", device="cpu") == runtime  # never the failed int8


def test_tampered_export_is_refused(model_dir: Path) -> None:
    export_model(model_dir, runtime="onnxruntime")
    path = model_dir / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    model = load_model(model_dir)
    with pytest.raises(CheckpointError, match=r"model.onnx has sha256 .* but model.json records"):
        segment(phantom_ct(), model, runtime="auto")
    path.unlink()
    with pytest.raises(CheckpointError, match="model.onnx is missing; model.json lists it"):
        segment(phantom_ct(), load_model(model_dir), runtime="onnxruntime")


def test_absent_runtime_package_falls_back_to_torch(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    export_model(model_dir, runtime="openvino")
    model = load_model(model_dir)
    monkeypatch.setitem(sys.modules, "openvino", None)
    ct = phantom_ct()
    with caplog.at_level(logging.WARNING):
        first = segment(ct, model, runtime="auto")
        segment(ct, model, runtime="auto")  # a second case: no second warning
    assert sum("not installed" in r.getMessage() for r in caplog.records) == 1
    np.testing.assert_array_equal(first.array, segment(ct, model, runtime="torch").array)


def test_export_refuses_bad_requests(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--int8 needs --calibration DATA"):
        export_model(model_dir, runtime="openvino", int8=True)
    with pytest.raises(ConfigError, match="--runtime 'tflite': expected one of openvino, onnxruntime"):
        export_model(model_dir, runtime="tflite")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no CT"):
        export_model(model_dir, runtime="onnxruntime", int8=True, calibration=tmp_path / "empty")
    with pytest.raises(ConfigError, match="int8 export needs calibration windows"):
        export_variants(load_model(model_dir), model_dir, "onnxruntime", ExportData([], [], "none"), int8=True)
    with pytest.raises(ConfigError, match="needs at least one evaluation case"):
        export_variants(load_model(model_dir), model_dir, "onnxruntime", ExportData([], [], "none"), int8=False)


def test_cli_export_then_predict_with_runtime(model_dir: Path, calibration: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["export", str(model_dir), "--runtime", "onnxruntime", "--int8", "--calibration", str(calibration)]
    )
    assert result.exit_code == 0, result.output
    assert "onnxruntime: recommended" in result.output
    assert "onnxruntime-int8:" in result.output
    meta = json.loads((model_dir / "model.json").read_text())
    assert set(meta["exports"]) == {"onnxruntime", "onnxruntime-int8", "torch"}  # torch: its time per window
    load_model(model_dir)  # model.pt still verifies after model.json was rewritten
    out = tmp_path / "out"
    args = ["predict", str(calibration / "ct0.nii.gz"), "--model", str(model_dir), "--out", str(out)]
    result = runner.invoke(cli, [*args, "--format", "nifti", "--runtime", "onnxruntime", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (out / "ct0" / "mask.nii.gz").is_file()
    result = runner.invoke(cli, ["export", str(model_dir), "--runtime", "openvino", "--int8"])
    assert result.exit_code == 1
    assert "Error: --int8 needs --calibration DATA" in result.output
    assert "Traceback" not in result.output


def test_train_with_export_calibrates_on_the_run_cache(tmp_path: Path) -> None:
    from ctseg.phantom import write_phantom_dataset

    data = write_phantom_dataset(tmp_path / "Dataset001", 1, shape=(32, 48, 48), spacing_mm=(4.0, 3.0, 3.0))
    tiny = ["--set", "train.steps_per_epoch=2", "--set", "train.val_every=1", "--set", "train.num_workers=0"]
    tiny += ["--set", "model.channels=[4,8]", "--set", "model.strides=[[2,2,2]]"]
    tiny += ["--set", "train.patch_size=[16,24,24]", "--epochs", "1"]
    args = ["train", str(data), "--out", str(tmp_path / "run"), "--model-dir", str(tmp_path / "model"), *tiny]
    result = CliRunner().invoke(cli, [*args, "--export", "onnxruntime"])
    assert result.exit_code == 0, result.output
    assert "onnxruntime:" in result.output and "onnxruntime-int8:" in result.output
    records = read_exports(load_model(tmp_path / "model").meta)
    assert set(records) == {"onnxruntime", "onnxruntime-int8"}
    gate = records["onnxruntime-int8"].gate
    assert gate["evaluated_on"].startswith("training run") and gate["cases"] == 1


def test_exports_of_both_runtimes_are_kept_and_a_changed_model_is_refused(model_dir: Path) -> None:
    model = load_model(model_dir)
    data = ExportData([], [(np.asarray(preprocess_image(phantom_ct(), model.preprocess).array), None)], "phantom")
    export_variants(model, model_dir, "openvino", data, int8=False)
    export_variants(model, model_dir, "onnxruntime", data, int8=False)  # the same in-memory model, one process
    assert set(read_exports(load_model(model_dir).meta)) == {"openvino", "onnxruntime"}
    write_tiny_model(model_dir, seed=1)  # retrained while an export was running
    with pytest.raises(CheckpointError, match="changed to other weights during the export"):
        export_variants(model, model_dir, "onnxruntime", data, int8=False)


def test_export_without_the_runtime_package_says_how_to_install(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError, match=r"exporting to openvino needs openvino: pip install 'ctseg\[cpu-fast\]'"):
        export_model(model_dir, runtime="openvino")
    result = CliRunner().invoke(cli, ["export", str(model_dir), "--runtime", "openvino"])
    assert result.exit_code == 1
    assert "Error: exporting to openvino needs openvino" in result.output
    assert "Traceback" not in result.output
