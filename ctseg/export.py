"""``ctseg export``: the network of a model folder exported to OpenVINO or ONNX Runtime, optionally int8.

Only the network is exported (one window, batch 1); the sliding window, pre- and post-processing stay in ctseg.
int8 is post-training static quantisation calibrated on windows of preprocessed CTs: NNCF ``nncf.quantize`` for
OpenVINO, ONNX Runtime ``quantize_static`` (QDQ, per-channel weights) for ONNX Runtime; dynamic quantisation is not
offered (slow or missing ``ConvInteger`` kernels). Calibration windows come from a training run's cache (``DATA`` is
the run folder: its training cases calibrate, its validation cases with their labels evaluate) or from a folder of
CTs (DICOM or NIfTI/NRRD/MHA), preprocessed the model's way, which then also serve for evaluation with the torch
fp32 prediction as the reference.

Every variant written is evaluated against torch fp32 (per-class Dice over the evaluation cases, on the model's
grid); one under :data:`~ctseg.runtime.variants.GATE_RATIO` x the fp32 Dice for any class is recorded as not
recommended and never chosen by ``--runtime auto``. Files are listed with their sha256 in ``model.json``.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctseg.device import amp_dtype
from ctseg.errors import ConfigError
from ctseg.infer.model import LoadedModel, load_model
from ctseg.infer.pipeline import make_predictor
from ctseg.infer.sliding_window import predict_labels, window_starts
from ctseg.io.model_files import read_model_card
from ctseg.preprocess.pipeline import background_value, preprocess_image
from ctseg.runtime.backends import INSTALL_HINT, WindowPredictor, onnxruntime_predictor, openvino_predictor
from ctseg.runtime.variants import (
    GATE_RATIO,
    TORCH_TIMING,
    VARIANTS,
    ExportRecord,
    file_hashes,
    write_exports,
)

log = logging.getLogger(__name__)

EXPORT_RUNTIMES = ("openvino", "onnxruntime")
ONNX_OPSET = 17
#: Windows of a calibration pass; NNCF's default subset is 300, but 3D windows are large and few suffice.
DEFAULT_CALIBRATION_WINDOWS = 32
#: At most this many cases are segmented per variant for the accuracy gate.
DEFAULT_EVALUATION_CASES = 8
#: Window timing (torch and every variant, interleaved): at least this many calls each and this many seconds in all.
TIMING_MIN_REPEATS = 5
TIMING_MIN_SECONDS = 3.0
TIMING_MAX_ROUNDS = 200


@dataclass(frozen=True)
class ExportData:
    """Calibration windows and evaluation cases, all preprocessed the model's way.

    ``windows``: each ``(1, 1, pz, py, px)`` float32. ``cases``: ``(image (Z, Y, X) float32, labels (Z, Y, X) uint8
    or None)``; without labels the torch fp32 prediction is the reference. ``source`` says where they came from.
    """

    windows: list[np.ndarray]
    cases: list[tuple[np.ndarray, np.ndarray | None]]
    source: str


def _tile_windows(image: np.ndarray, patch: tuple[int, int, int], pad_value: float) -> list[np.ndarray]:
    """Non-overlapping windows covering ``image`` (padded up to the patch where smaller), each ``(1, 1, *patch)``."""
    pad = [(0, max(0, p - s)) for s, p in zip(image.shape, patch, strict=True)]
    arr = np.pad(image, pad, constant_values=pad_value) if any(b for _, b in pad) else image
    starts = [window_starts(s, p, 0.0) for s, p in zip(arr.shape, patch, strict=True)]
    pz, py, px = patch
    return [
        np.ascontiguousarray(arr[z : z + pz, y : y + py, x : x + px], dtype=np.float32)[None, None]
        for z in starts[0]
        for y in starts[1]
        for x in starts[2]
    ]


def _sample(windows: list[np.ndarray], limit: int, seed: int = 0) -> list[np.ndarray]:
    if len(windows) <= limit:
        return windows
    pick = np.random.default_rng(seed).choice(len(windows), limit, replace=False)
    return [windows[i] for i in sorted(pick)]


def _run_cache(run_dir: Path) -> tuple[Path, dict[str, list[str]]]:
    """The preprocessed cache of a training run and its split (the newest cache holding every case of the split)."""
    split = json.loads((run_dir / "split.json").read_text())
    names = [*split.get("train", []), *split.get("val", [])]
    root = run_dir.parent / ".ctseg_cache"
    found = [d for d in root.glob("*") if d.is_dir() and all((d / f"{n}.json").is_file() for n in names)]
    if not found:
        raise ConfigError(
            f"--calibration {run_dir}: a training run, but its cache ({root}) is gone; pass a folder of CTs instead"
        )
    return max(found, key=lambda d: d.stat().st_mtime), split


def data_from_run(model: LoadedModel, run_dir: Path, *, max_windows: int, max_cases: int) -> ExportData:
    """Calibration windows from a run's training cases, evaluation on its validation cases (with labels)."""
    from ctseg.train.cache import open_case

    cache, split = _run_cache(run_dir)
    pad = background_value(model.preprocess)
    windows: list[np.ndarray] = []
    for name in split.get("train", []) or split.get("val", []):
        windows += _tile_windows(np.asarray(open_case(cache, name).image), model.patch_size, pad)
    cases: list[tuple[np.ndarray, np.ndarray | None]] = []
    for name in split.get("val", [])[:max_cases]:
        case = open_case(cache, name)
        cases.append((np.array(case.image, np.float32), np.array(case.labels, np.uint8)))  # copies, not the mmap
    return ExportData(_sample(windows, max_windows), cases, f"training run {run_dir} (validation cases with labels)")


def _ct_inputs(folder: Path) -> list[Path]:
    from ctseg.io import is_image_file

    if folder.is_file():
        return [folder]
    children = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    inputs = [p for p in children if is_image_file(p) or p.is_dir()]
    if not inputs and any(p.is_file() for p in children):
        inputs = [folder]  # the folder itself is one DICOM series
    if not inputs:
        raise ConfigError(f"--calibration {folder} holds no CT; expected NIfTI/NRRD/MHA files or DICOM folders")
    return inputs


def data_from_cts(model: LoadedModel, folder: Path, *, max_windows: int, max_cases: int) -> ExportData:
    """Calibration windows and evaluation inputs from a folder of CTs (the fp32 prediction is the reference)."""
    from ctseg.io import read_volume

    pad = background_value(model.preprocess)
    windows: list[np.ndarray] = []
    cases: list[tuple[np.ndarray, np.ndarray | None]] = []
    for path in _ct_inputs(Path(folder)):
        image = np.asarray(preprocess_image(read_volume(path), model.preprocess).array, np.float32)
        windows += _tile_windows(image, model.patch_size, pad)
        if len(cases) < max_cases:
            cases.append((image, None))
    return ExportData(_sample(windows, max_windows), cases, f"CT folder {folder} (torch fp32 prediction as reference)")


def gather_data(
    model: LoadedModel,
    path: Path,
    *,
    max_windows: int = DEFAULT_CALIBRATION_WINDOWS,
    max_cases: int = DEFAULT_EVALUATION_CASES,
) -> ExportData:
    """:func:`data_from_run` for a training-run folder (it holds ``split.json``), else :func:`data_from_cts`."""
    path = Path(path)
    if path.is_dir() and (path / "split.json").is_file():
        return data_from_run(model, path, max_windows=max_windows, max_cases=max_cases)
    return data_from_cts(model, path, max_windows=max_windows, max_cases=max_cases)


def _example(model: LoadedModel) -> torch.Tensor:
    return torch.zeros((1, 1, *model.patch_size), dtype=torch.float32)


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write the files of one variant, each atomically."""
    from ctseg.io.atomic import write_bytes_atomic

    for name, data in files.items():
        write_bytes_atomic(folder / name, data)


def _quiet_tracing() -> warnings.catch_warnings:  # type: ignore[type-arg]
    """Silence the tracers' notes: shape-dependent branches are constant for the one fixed window size exported,
    instance norm's "training mode" note is about training statistics, and jit.trace's deprecation is the
    exporters' concern."""
    return warnings.catch_warnings(action="ignore")


def _onnx_bytes(model: LoadedModel) -> bytes:
    with tempfile.TemporaryDirectory() as tmp, _quiet_tracing():
        torch.onnx.export(
            _MainOutput(model.network),
            (_example(model),),
            Path(tmp) / "model.onnx",
            opset_version=ONNX_OPSET,
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
        )
        return (Path(tmp) / "model.onnx").read_bytes()


class _MainOutput(torch.nn.Module):
    """The network's full-resolution logits only (deep-supervision heads are dropped from the export)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ctseg.model.unet import main_output

        return main_output(self.network(x))


def _openvino_ir(ov_model: Any) -> tuple[bytes, bytes]:
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(ov_model, xml, compress_to_fp16=False)
        return xml.read_bytes(), xml.with_suffix(".bin").read_bytes()


def _export_openvino(model: LoadedModel, windows: list[np.ndarray] | None) -> dict[str, dict[str, bytes]]:
    import openvino as ov

    with _quiet_tracing():
        ov_model = ov.convert_model(_MainOutput(model.network).eval(), example_input=_example(model))
    names = VARIANTS["openvino"][2]
    out = {"openvino": dict(zip(names, _openvino_ir(ov_model), strict=True))}
    if windows is not None:
        import nncf

        quantised = nncf.quantize(ov_model, nncf.Dataset(windows), subset_size=len(windows))
        out["openvino-int8"] = dict(zip(VARIANTS["openvino-int8"][2], _openvino_ir(quantised), strict=True))
    return out


def _export_onnxruntime(model: LoadedModel, windows: list[np.ndarray] | None) -> dict[str, dict[str, bytes]]:
    fp32 = _onnx_bytes(model)
    out = {"onnxruntime": {VARIANTS["onnxruntime"][2][0]: fp32}}
    if windows is not None:
        calibration = windows
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self) -> None:
                self.items = iter(calibration)

            def get_next(self) -> dict[str, np.ndarray] | None:
                item = next(self.items, None)
                return None if item is None else {"image": item}

        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            src.write_bytes(fp32)
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # the quantiser logs notes per node on the root logger
            try:
                quantize_static(
                    src,
                    dst,
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                )
            finally:
                root.setLevel(level)
            out["onnxruntime-int8"] = {VARIANTS["onnxruntime-int8"][2][0]: dst.read_bytes()}
    return out


def export_files(model: LoadedModel, runtime: str, windows: list[np.ndarray] | None) -> dict[str, dict[str, bytes]]:
    """``{variant: {file name: bytes}}`` for ``runtime``: the default-precision variant, and int8 when ``windows``
    (calibration inputs, each ``(1, 1, pz, py, px)`` float32) are given.

    Raises
    ------
    ConfigError
        For an unknown runtime.
    ImportError
        If the runtime's package (or NNCF for OpenVINO int8) is not installed.
    """
    if runtime not in EXPORT_RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r}: expected one of {', '.join(EXPORT_RUNTIMES)}")
    try:
        if runtime == "openvino":
            return _export_openvino(model, windows)
        return _export_onnxruntime(model, windows)
    except ModuleNotFoundError as exc:
        raise ImportError(f"exporting to {runtime} needs {exc.name}: {INSTALL_HINT}") from exc


def predictor_from_files(variant: str, files: dict[str, bytes]) -> WindowPredictor:
    """A window predictor over a variant's file bytes (just written and hashed)."""
    names = VARIANTS[variant][2]
    if VARIANTS[variant][0] == "openvino":
        return openvino_predictor(files[names[0]], files[names[1]])
    return onnxruntime_predictor(files[names[0]])


def class_dice(pred: list[np.ndarray], ref: list[np.ndarray], num_classes: int) -> list[float | None]:
    """Dice per foreground class pooled over cases; ``None`` where the class is absent from both."""
    out: list[float | None] = []
    for k in range(1, num_classes):
        inter = sum(int(np.count_nonzero((p == k) & (r == k))) for p, r in zip(pred, ref, strict=True))
        total = sum(
            int(np.count_nonzero(p == k)) + int(np.count_nonzero(r == k)) for p, r in zip(pred, ref, strict=True)
        )
        out.append(2.0 * inter / total if total else None)
    return out


def _segment_all(model: LoadedModel, predictor: WindowPredictor, cases: list[np.ndarray]) -> list[np.ndarray]:
    pad = background_value(model.preprocess)
    return [
        predict_labels(
            torch.from_numpy(np.ascontiguousarray(img))[None],
            predictor,
            model.patch_size,
            overlap=model.infer.overlap,
            batch_size=1,
            pad_value=pad,
        )
        for img in cases
    ]


def interleaved_window_seconds(predictors: dict[str, WindowPredictor], model: LoadedModel) -> dict[str, float]:
    """Median seconds per window of each predictor, timed in interleaved rounds (one call of each per round).

    Rounds alternate the predictors so that a change of CPU state (another process, frequency) touches them all
    alike; they go on until every predictor has :data:`TIMING_MIN_REPEATS` calls and :data:`TIMING_MIN_SECONDS`
    have passed (small windows take milliseconds: three calls said little), at most :data:`TIMING_MAX_ROUNDS`.
    """
    x = _example(model)
    for predictor in predictors.values():
        predictor(x)  # warm-up (first-call allocations, lazy compilation)
    times: dict[str, list[float]] = {name: [] for name in predictors}
    start = time.perf_counter()
    for done in range(1, TIMING_MAX_ROUNDS + 1):
        for name, predictor in predictors.items():
            t0 = time.perf_counter()
            predictor(x)
            times[name].append(time.perf_counter() - t0)
        if done >= TIMING_MIN_REPEATS and time.perf_counter() - start >= TIMING_MIN_SECONDS:
            break
    return {name: round(statistics.median(t), 5) for name, t in times.items()}


def gate(
    model: LoadedModel, predictor: WindowPredictor, data: ExportData, reference: Callable[[], tuple[list, list]]
) -> dict[str, Any]:
    """Per-class Dice of ``predictor`` next to torch fp32's, and the smallest ratio of the two.

    ``reference()`` returns ``(reference label maps, torch fp32 label maps)`` (computed once by the caller).
    """
    refs, fp32 = reference()
    pred = _segment_all(model, predictor, [img for img, _ in data.cases])
    names = [model.labels.get(k, str(k)) for k in range(1, model.num_classes)]
    dice = class_dice(pred, refs, model.num_classes)
    base = class_dice(fp32, refs, model.num_classes)
    # Classes where torch fp32 scores 0 (or the class is absent from both) give no ratio: nothing to keep.
    ratios = [d / b for d, b in zip(dice, base, strict=True) if d is not None and b]
    return {
        "evaluated_on": data.source,
        "cases": len(data.cases),
        "dice": dict(zip(names, dice, strict=True)),
        "torch_fp32_dice": dict(zip(names, base, strict=True)),
        "min_ratio": round(min(ratios), 5) if ratios else None,
        "threshold": GATE_RATIO,
    }


def _torch_predictor(model: LoadedModel) -> tuple[WindowPredictor, str]:
    """torch's window predictor on the CPU with the model's precision (bf16 autocast where the CPU has it)."""
    cpu = torch.device("cpu")
    amp = bool(model.infer.amp)
    precision = "bf16" if amp and amp_dtype(cpu) is not None else "fp32"
    return make_predictor(model.network.cpu(), cpu, amp=amp), precision


def export_variants(
    model: LoadedModel, folder: Path, runtime: str, data: ExportData, *, int8: bool
) -> list[ExportRecord]:
    """Export ``model`` for ``runtime`` into ``folder``, evaluate every variant, record them in ``model.json``.

    ``data.windows`` calibrate int8; ``data.cases`` evaluate. Returns the records written.
    """
    if int8 and not data.windows:
        raise ConfigError("int8 export needs calibration windows; pass --calibration DATA")
    if not data.cases:
        raise ConfigError("the accuracy gate needs at least one evaluation case; pass --calibration DATA")
    variants = export_files(model, runtime, data.windows if int8 else None)
    torch_fp32 = make_predictor(model.network.cpu().float(), torch.device("cpu"), amp=False)
    cache: dict[str, tuple[list, list]] = {}

    def reference() -> tuple[list, list]:
        if "ref" not in cache:
            fp32 = _segment_all(model, torch_fp32, [img for img, _ in data.cases])
            refs = [lab if lab is not None else p for (_, lab), p in zip(data.cases, fp32, strict=True)]
            cache["ref"] = (refs, fp32)
        return cache["ref"]

    from tqdm.auto import tqdm

    checked = []
    for variant, files in tqdm(variants.items(), desc="evaluating variants", unit="variant"):
        predictor = predictor_from_files(variant, files)
        result = gate(model, predictor, data, reference)
        ok = result["min_ratio"] is None or result["min_ratio"] >= GATE_RATIO
        _write_files(folder, files)
        checked.append((variant, predictor, result, ok))
        log.info(
            "%s: min Dice ratio %s -> %s", variant, result["min_ratio"], "recommended" if ok else "NOT recommended"
        )
    torch_predictor, torch_precision = _torch_predictor(model)
    seconds = interleaved_window_seconds(
        {TORCH_TIMING: torch_predictor, **{variant: predictor for variant, predictor, _, _ in checked}}, model
    )
    weights = str(model.meta.get("sha256"))
    records = [
        ExportRecord(
            variant,
            VARIANTS[variant][0],
            VARIANTS[variant][1],
            file_hashes(folder, VARIANTS[variant][2]),
            weights,
            list(model.patch_size),
            ok,
            seconds[variant],
            result,
            seconds[TORCH_TIMING],
        )
        for variant, _, result, ok in checked
    ]
    torch_record = ExportRecord(
        TORCH_TIMING, "torch", torch_precision, {}, weights, list(model.patch_size), True, seconds[TORCH_TIMING]
    )
    write_exports(folder, model.meta, [*records, torch_record])
    model.card = read_model_card(folder)  # the card now lists the exports (validated as read)
    model.runtimes.clear()  # choices made before the export are stale
    return records


def export_model(
    model_dir: Path,
    *,
    runtime: str,
    int8: bool = False,
    calibration: Path | None = None,
    max_windows: int = DEFAULT_CALIBRATION_WINDOWS,
) -> list[ExportRecord]:
    """Export the network of ``model_dir`` for ``runtime`` (``openvino`` or ``onnxruntime``), int8 too with ``int8``.

    ``calibration``: a training-run folder or a folder of CTs (needed for ``int8``; without it, the fp32 export is
    evaluated on a phantom). Returns the records written to ``model.json``.

    Raises
    ------
    ConfigError
        For an unknown runtime, ``int8`` without ``calibration``, or a calibration folder without CTs.
    CheckpointError
        For a missing or tampered model folder.
    """
    if runtime not in EXPORT_RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r}: expected one of {', '.join(EXPORT_RUNTIMES)}")
    if max_windows < 1:
        raise ConfigError(f"--calibration-windows {max_windows}: expected at least 1")
    if int8 and calibration is None:
        raise ConfigError("--int8 needs --calibration DATA (a training-run folder or a folder of CTs)")
    model = load_model(Path(model_dir))
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    data = gather_data(model, calibration, max_windows=max_windows) if calibration else _phantom_data(model)
    return export_variants(model, Path(model_dir), runtime, data, int8=int8)


def _phantom_data(model: LoadedModel) -> ExportData:
    """One phantom CT for the fp32 gate when no calibration data is given (the fp32 prediction as reference)."""
    from ctseg.phantom import make_phantom
    from ctseg.volume import Geometry

    spacing = model.preprocess.target_spacing_mm
    shape = tuple(max(2 * p, 48) for p in model.patch_size)
    ct, _ = make_phantom(Geometry(shape=shape, spacing_mm=spacing), seed=0)  # type: ignore[arg-type]
    image = np.asarray(preprocess_image(ct.with_array(ct.array.astype(np.float32)), model.preprocess).array, np.float32)
    return ExportData([], [(image, None)], "a synthetic phantom (torch fp32 prediction as reference)")
