"""Variant choice: ``auto`` takes the fastest gate-passing export on the CPU, never a not-recommended one."""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from typing import Any

import pytest

from ctseg.errors import CheckpointError, ConfigError
from ctseg.runtime import ExportRecord, choose_variant, read_exports
from ctseg.runtime.variants import VARIANTS

WEIGHTS = "ab" * 32


def _record(
    variant: str, *, recommended: bool, seconds: float | None, torch_seconds: float | None = None
) -> dict[str, Any]:
    runtime, precision, files = VARIANTS[variant]
    rec = ExportRecord(
        variant,
        runtime,
        precision,
        dict.fromkeys(files, "0" * 64),
        WEIGHTS,
        [16, 16, 16],
        recommended,
        seconds,
        torch_window_seconds=torch_seconds,
    )
    return asdict(rec)


def _meta(**records: dict[str, Any]) -> dict[str, Any]:
    return {"sha256": WEIGHTS, "exports": {k.replace("_", "-"): v for k, v in records.items()}}


def test_auto_picks_the_fastest_recommended_variant() -> None:
    meta = _meta(
        openvino=_record("openvino", recommended=True, seconds=0.12),
        openvino_int8=_record("openvino-int8", recommended=True, seconds=0.08),
        onnxruntime=_record("onnxruntime", recommended=True, seconds=0.35),
    )
    assert choose_variant(meta, runtime="auto", device="cpu") == "openvino-int8"


def test_auto_never_picks_a_not_recommended_variant() -> None:
    meta = _meta(
        openvino=_record("openvino", recommended=True, seconds=0.12),
        openvino_int8=_record("openvino-int8", recommended=False, seconds=0.01),
        onnxruntime_int8=_record("onnxruntime-int8", recommended=False, seconds=0.02),
    )
    assert choose_variant(meta, runtime="auto", device="cpu") == "openvino"
    only_bad = _meta(onnxruntime_int8=_record("onnxruntime-int8", recommended=False, seconds=0.01))
    assert choose_variant(only_bad, runtime="auto", device="cpu") == "torch"


def test_auto_without_exports_and_on_cuda_is_torch() -> None:
    assert choose_variant({"sha256": WEIGHTS}, runtime="auto", device="cpu") == "torch"
    meta = _meta(openvino=_record("openvino", recommended=True, seconds=0.1))
    assert choose_variant(meta, runtime="auto", device="cuda") == "torch"
    with pytest.raises(ConfigError, match="runs on the CPU, but the device is cuda"):
        choose_variant(meta, runtime="openvino", device="cuda")


def test_exports_of_other_weights_are_ignored() -> None:
    meta = _meta(openvino=_record("openvino", recommended=True, seconds=0.1))
    meta["sha256"] = "cd" * 32  # the model was retrained after the export
    assert read_exports(meta) == {}
    assert choose_variant(meta, runtime="auto", device="cpu") == "torch"


def test_explicit_runtime_without_export_is_refused() -> None:
    with pytest.raises(ConfigError, match="has no onnxruntime export.*ctseg export MODEL_DIR --runtime onnxruntime"):
        choose_variant({"sha256": WEIGHTS}, runtime="onnxruntime", device="cpu")
    with pytest.raises(ConfigError, match="--runtime 'tensorrt': expected one of auto, torch"):
        choose_variant({"sha256": WEIGHTS}, runtime="tensorrt", device="cpu")


def test_explicit_runtime_prefers_its_recommended_variant(caplog: pytest.LogCaptureFixture) -> None:
    meta = _meta(
        onnxruntime=_record("onnxruntime", recommended=True, seconds=0.3),
        onnxruntime_int8=_record("onnxruntime-int8", recommended=False, seconds=0.1),
    )
    assert choose_variant(meta, runtime="onnxruntime", device="cpu") == "onnxruntime"
    with caplog.at_level(logging.WARNING):
        assert choose_variant(meta, runtime="onnxruntime-int8", device="cpu") == "onnxruntime-int8"
    assert "failed the accuracy gate" in caplog.text


def test_precision_names_force_one_variant() -> None:
    """``openvino`` means the fastest OpenVINO export; ``openvino-default`` its non-quantised one even when int8 is
    faster (a user comparing precisions, or distrusting int8 on their data)."""
    meta = _meta(
        openvino=_record("openvino", recommended=True, seconds=0.12),
        openvino_int8=_record("openvino-int8", recommended=True, seconds=0.08),
        onnxruntime=_record("onnxruntime", recommended=True, seconds=0.3),
        onnxruntime_int8=_record("onnxruntime-int8", recommended=True, seconds=0.1),
    )
    assert choose_variant(meta, runtime="openvino", device="cpu") == "openvino-int8"
    assert choose_variant(meta, runtime="openvino-default", device="cpu") == "openvino"
    assert choose_variant(meta, runtime="onnxruntime", device="cpu") == "onnxruntime-int8"
    assert choose_variant(meta, runtime="onnxruntime-fp32", device="cpu") == "onnxruntime"
    only_int8 = _meta(openvino_int8=_record("openvino-int8", recommended=True, seconds=0.08))
    with pytest.raises(ConfigError, match="no openvino-default export.*ctseg export MODEL_DIR --runtime openvino`"):
        choose_variant(only_int8, runtime="openvino-default", device="cpu")
    with pytest.raises(ConfigError, match="ctseg export MODEL_DIR --runtime onnxruntime --int8 --calibration DATA"):
        choose_variant(only_int8, runtime="onnxruntime-int8", device="cpu")


def test_the_cli_offers_every_runtime_choice() -> None:
    """The CLI lists the choices literally (importing the selector would import torch at start-up)."""
    import click

    from ctseg.cli.predict_cmd import predict
    from ctseg.runtime import RUNTIME_CHOICES

    option = next(p for p in predict.params if p.name == "runtime")
    assert isinstance(option.type, click.Choice)
    assert tuple(option.type.choices) == RUNTIME_CHOICES


def test_missing_runtime_package_falls_back_to_torch_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    meta = _meta(openvino=_record("openvino", recommended=True, seconds=0.1))
    with caplog.at_level(logging.WARNING):
        assert choose_variant(meta, runtime="auto", device="cpu") == "torch"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "openvino not installed (pip install 'ctseg[cpu-fast]'); using torch" in warnings[0].getMessage()


def test_missing_fastest_runtime_falls_back_to_the_next_installed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    meta = _meta(
        openvino=_record("openvino", recommended=True, seconds=0.1),
        onnxruntime=_record("onnxruntime", recommended=True, seconds=0.3),
    )
    with caplog.at_level(logging.WARNING):
        assert choose_variant(meta, runtime="auto", device="cpu") == "onnxruntime"
    assert "using onnxruntime" in caplog.text


def test_malformed_exports_section_is_refused() -> None:
    with pytest.raises(CheckpointError, match="'exports' is list, expected an object"):
        read_exports({"sha256": WEIGHTS, "exports": []})
    with pytest.raises(CheckpointError, match="export 'openvino' is malformed"):
        read_exports({"sha256": WEIGHTS, "exports": {"openvino": {"variant": "openvino"}}})


def _torch_timing(seconds: object, weights: str = WEIGHTS) -> dict[str, Any]:
    return {
        "variant": "torch",
        "runtime": "torch",
        "precision": "bf16",
        "files": {},
        "weights_sha256": weights,
        "patch_size": [16, 16, 16],
        "recommended": True,
        "window_seconds": seconds,
        "gate": {},
    }


def test_auto_keeps_torch_unless_an_export_is_clearly_faster() -> None:
    exports = {"openvino": _record("openvino", recommended=True, seconds=0.12)}
    as_fast = {"sha256": WEIGHTS, "exports": {**exports, "torch": _torch_timing(0.125)}}
    assert choose_variant(as_fast, runtime="auto", device="cpu") == "torch"
    faster = {"sha256": WEIGHTS, "exports": {**exports, "torch": _torch_timing(0.5)}}
    assert choose_variant(faster, runtime="auto", device="cpu") == "openvino"
    # asked for by name, the export runs whatever torch's time
    assert choose_variant(as_fast, runtime="openvino", device="cpu") == "openvino"
    # the torch entry is not a variant: read_exports leaves it out
    assert set(read_exports(as_fast)) == {"openvino"}


@pytest.mark.parametrize("bad", [None, "0.1", -1.0, 0.0, True, float("inf")])
def test_a_malformed_or_stale_torch_timing_is_ignored(bad: object) -> None:
    exports = {"openvino": _record("openvino", recommended=True, seconds=0.12)}
    meta = {"sha256": WEIGHTS, "exports": {**exports, "torch": _torch_timing(bad)}}
    assert choose_variant(meta, runtime="auto", device="cpu") == "openvino"
    stale = {"sha256": WEIGHTS, "exports": {**exports, "torch": _torch_timing(1.0, weights="cd" * 32)}}
    assert choose_variant(stale, runtime="auto", device="cpu") == "openvino"


def test_variants_rank_by_their_time_against_torch_timed_beside_them() -> None:
    """Two `ctseg export` runs on a CPU in different states: OpenVINO timed while the CPU was busy (everything
    slower, torch included), ONNX Runtime on an idle CPU. Seconds alone would favour ONNX Runtime; against torch
    timed in the same rounds, OpenVINO is the faster one."""
    meta = _meta(
        openvino=_record("openvino", recommended=True, seconds=0.20, torch_seconds=0.50),
        onnxruntime=_record("onnxruntime", recommended=True, seconds=0.15, torch_seconds=0.25),
    )
    meta["exports"]["torch"] = _torch_timing(0.25)  # the last run's torch timing: not used when records carry theirs
    assert choose_variant(meta, runtime="auto", device="cpu") == "openvino"
    # as fast as torch beside it (0.9x): auto keeps torch, whatever the seconds say against another run's torch
    level = _meta(openvino=_record("openvino", recommended=True, seconds=0.09, torch_seconds=0.10))
    level["exports"]["torch"] = _torch_timing(1.0)
    assert choose_variant(level, runtime="auto", device="cpu") == "torch"
    assert choose_variant(level, runtime="openvino", device="cpu") == "openvino"


@pytest.mark.parametrize("bad", ["0.1", -1.0, 0.0, True, float("nan"), 1e9])
def test_an_unreadable_window_timing_counts_as_unknown(bad: object) -> None:
    meta = _meta(openvino=_record("openvino", recommended=True, seconds=0.1, torch_seconds=0.5))
    meta["exports"]["openvino"]["torch_window_seconds"] = bad
    record = read_exports(meta)["openvino"]
    assert record.torch_window_seconds is None and record.speed_vs_torch() is None
    meta["exports"]["openvino"]["window_seconds"] = bad
    assert read_exports(meta)["openvino"].window_seconds is None
    assert choose_variant(meta, runtime="auto", device="cpu") == "openvino"  # unknown speed: the gate decides


def test_window_timing_alternates_the_predictors(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch and the variants are timed in rounds, one call each, so a change of CPU load touches all alike."""
    from types import SimpleNamespace

    import torch

    from ctseg import export

    calls: list[str] = []

    def predictor(name: str) -> Any:
        def run(x: torch.Tensor) -> torch.Tensor:
            calls.append(name)
            return x

        return run

    monkeypatch.setattr(export, "TIMING_MIN_SECONDS", 0.0)
    model = SimpleNamespace(patch_size=(4, 4, 4))
    seconds = export.interleaved_window_seconds({"torch": predictor("torch"), "openvino": predictor("openvino")}, model)  # type: ignore[arg-type]
    assert set(seconds) == {"torch", "openvino"} and all(v >= 0 for v in seconds.values())
    rounds = export.TIMING_MIN_REPEATS + 1  # a warm-up call each, then the timed rounds
    assert calls == ["torch", "openvino"] * rounds
