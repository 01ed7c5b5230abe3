"""Window predictors over exported networks: OpenVINO and ONNX Runtime on the CPU.

Each takes the verified bytes of its files (never a path, so what runs is what was hashed) and returns a predictor
``(B, 1, pz, py, px) float32 tensor -> (B, C, pz, py, px) float32 tensor``. The networks are exported with a batch
of one window; a batch is run window by window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)

WindowPredictor = Callable[[torch.Tensor], torch.Tensor]

INSTALL_HINT = "pip install 'ctseg[cpu-fast]'"


def _per_window(run: Callable[[np.ndarray], np.ndarray]) -> WindowPredictor:
    def predictor(batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().to("cpu", torch.float32).numpy()
        outs = [run(np.ascontiguousarray(x[i : i + 1])) for i in range(x.shape[0])]
        out = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)  # one window: no second copy
        return torch.from_numpy(out.astype(np.float32, copy=False))

    return predictor


def compile_openvino(xml: bytes, weights: bytes, *, precision: str = "default") -> object:
    """An OpenVINO model compiled for the CPU from its IR bytes.

    ``precision`` ``"default"`` lets the CPU plugin choose (bf16 where the CPU has it); ``"f32"`` forces float32.
    An int8 model that the plugin cannot compile in bf16 (seen on AVX-512 bf16 CPUs without AMX) is compiled with
    f32 for its non-quantised layers.
    """
    import openvino as ov

    core = ov.Core()
    model = core.read_model(xml.decode(), ov.Tensor(np.frombuffer(weights, np.uint8)))
    config = {} if precision == "default" else {"INFERENCE_PRECISION_HINT": precision}
    try:
        return core.compile_model(model, "CPU", config)
    except RuntimeError as exc:
        if config:
            raise
        log.info("OpenVINO could not compile with its default precision (%s); using f32", str(exc).splitlines()[0])
        return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def openvino_predictor(xml: bytes, weights: bytes, *, precision: str = "default") -> WindowPredictor:
    """A window predictor over an OpenVINO IR (``.xml`` + ``.bin`` bytes)."""
    compiled = compile_openvino(xml, weights, precision=precision)
    request = compiled.create_infer_request()  # type: ignore[attr-defined]

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: x})
        return np.array(request.get_output_tensor(0).data, copy=True)

    return _per_window(run)


def onnxruntime_predictor(model: bytes) -> WindowPredictor:
    """A window predictor over an ONNX model's bytes, on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are noise to a user
    # ONNX Runtime's threads spin after each run by default, taking the cores from the sliding window's own work
    # between windows: ctseg predict of a 300x512x512 CT with the demo's model took 0.52 s of inference with
    # spinning and 0.31 s without, on 2 cores (OpenVINO and torch took 0.19-0.23 s).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: x})[0])

    return _per_window(run)


def runtime_available(runtime: str) -> bool:
    """Whether the Python package of ``runtime`` (``openvino`` / ``onnxruntime``) can be imported."""
    import importlib

    try:
        importlib.import_module(runtime)
    except ImportError:
        return False
    return True
