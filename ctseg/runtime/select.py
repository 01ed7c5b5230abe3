"""Which runtime runs a model's windows: ``auto``, ``torch``, a runtime (``openvino``, ``onnxruntime``) or a variant.

A runtime name means the fastest variant of that runtime (gate-passing ones first); a variant name means exactly
that variant: ``openvino-int8``, ``onnxruntime-int8``, and ``openvino-default`` / ``onnxruntime-fp32`` for the
non-quantised exports (the variants ``openvino`` and ``onnxruntime`` of :data:`~ctseg.runtime.variants.VARIANTS`).

``auto`` takes the fastest variant that passed the accuracy gate among those exported for the model's current
weights, on the CPU only (CUDA stays torch); speed is the seconds per window measured at export, ties broken by the
order of :data:`~ctseg.runtime.variants.VARIANTS`. torch's own time per window is measured at export too, in the
same interleaved rounds as each variant: variants rank by their time as a fraction of torch's (so exports made by
separate runs compare fairly), and ``auto`` keeps torch unless the best export took under
:data:`AUTO_MIN_SPEEDUP_FRACTION` of it. A variant marked not recommended is never chosen by ``auto``. A runtime whose
package is not installed falls back to torch with one warning.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from ctseg.errors import ConfigError
from ctseg.runtime.backends import (
    INSTALL_HINT,
    WindowPredictor,
    onnxruntime_predictor,
    openvino_predictor,
    runtime_available,
)
from ctseg.runtime.variants import VARIANTS, ExportRecord, read_exports, read_verified, torch_window_seconds

log = logging.getLogger(__name__)

RUNTIMES = ("openvino", "onnxruntime")
#: ``auto`` takes an export only when its window time at export was under this fraction of torch's. On CPUs where
#: torch's bf16 autocast is about as fast, an export buys nothing and costs its compilation and a numpy round trip
#: per window: with the demo's model on an AVX-512 bf16 CPU, OpenVINO's window took 0.875x torch's at export, yet
#: its end to end on a 300x512x512 CT took 1.34x torch's (benchmarks/evidence/cpu_runtimes_full.txt).
AUTO_MIN_SPEEDUP_FRACTION = 0.8
#: Names of the non-quantised variants, whose keys in VARIANTS are the runtime names themselves.
PRECISION_NAMES = {"openvino-default": "openvino", "onnxruntime-fp32": "onnxruntime"}
RUNTIME_CHOICES = (
    "auto",
    "torch",
    *RUNTIMES,
    *(v for v in VARIANTS if v not in RUNTIMES),
    *PRECISION_NAMES,
)
TORCH = "torch"


def _speed_key(record: ExportRecord, by_ratio: bool) -> tuple[float, int]:
    if by_ratio:
        value = record.speed_vs_torch()
    else:
        value = record.window_seconds
    return (value if value is not None else math.inf, list(VARIANTS).index(record.variant))


def _candidates(records: dict[str, ExportRecord], runtime: str) -> list[ExportRecord]:
    if runtime == "auto":
        return [r for r in records.values() if r.recommended]
    if runtime in RUNTIMES:
        found = [r for r in records.values() if r.runtime == runtime]
        how = f"--runtime {runtime}"
    else:
        variant = PRECISION_NAMES.get(runtime, runtime)
        found = [r for r in records.values() if r.variant == variant]
        rt, precision = VARIANTS[variant][:2]
        how = f"--runtime {rt} --int8 --calibration DATA" if precision == "int8" else f"--runtime {rt}"
    if not found:
        raise ConfigError(
            f"--runtime {runtime}: the model folder has no {runtime} export for its current model.pt; "
            f"run `ctseg export MODEL_DIR {how}` or pass --runtime auto"
        )
    recommended = [r for r in found if r.recommended]
    if not recommended:
        log.warning(
            "every %s export of this model failed the accuracy gate; using it because it was asked for", runtime
        )
    return recommended or found


def choose_variant(meta: dict[str, Any], *, runtime: str = "auto", device: str | torch.device = "cpu") -> str:
    """The variant to run: ``"torch"`` or a key of :data:`~ctseg.runtime.variants.VARIANTS`.

    Parameters
    ----------
    meta
        ``model.json`` content.
    runtime
        One of :data:`RUNTIME_CHOICES`.
    device
        The inference device; exported variants run on the CPU.

    Raises
    ------
    ConfigError
        For an unknown runtime, an exported runtime asked for on a CUDA device, or a runtime the model has no
        export for.
    """
    if runtime not in RUNTIME_CHOICES:
        raise ConfigError(f"--runtime {runtime!r}: expected one of {', '.join(RUNTIME_CHOICES)}")
    if runtime == TORCH:
        return TORCH
    dev = torch.device(device)
    if dev.type != "cpu":
        if runtime == "auto":
            return TORCH
        raise ConfigError(f"--runtime {runtime} runs on the CPU, but the device is {dev}; pass --device cpu")
    found = _candidates(read_exports(meta), runtime)
    # Variants exported by separate `ctseg export` runs compare through torch, timed beside each of them; older
    # records without that timing rank by their seconds.
    by_ratio = bool(found) and all(r.speed_vs_torch() is not None for r in found)
    candidates = sorted(found, key=lambda r: _speed_key(r, by_ratio))
    usable = [r for r in candidates if runtime_available(r.runtime)]
    missing = sorted({r.runtime for r in candidates} - {r.runtime for r in usable})
    if missing and (not usable or usable[0] is not candidates[0]):
        log.warning(
            "%s not installed (%s); using %s",
            " and ".join(missing),
            INSTALL_HINT,
            usable[0].variant if usable else TORCH,
        )
    if not usable:
        return TORCH
    best = usable[0]
    if runtime == "auto" and not _clearly_faster_than_torch(best, meta):
        return TORCH
    return best.variant


def _clearly_faster_than_torch(record: ExportRecord, meta: dict[str, Any]) -> bool:
    """Whether ``record``'s window took under :data:`AUTO_MIN_SPEEDUP_FRACTION` of torch's (True when unknown)."""
    fraction = record.speed_vs_torch()
    if fraction is None:  # an older record: torch's timing from the last export run, if any
        torch_seconds = torch_window_seconds(meta)
        if torch_seconds is None or record.window_seconds is None:
            return True
        fraction = record.window_seconds / torch_seconds
    if fraction > AUTO_MIN_SPEEDUP_FRACTION:
        log.info(
            "runtime auto: %s took %.2fx torch's time per window at export; torch is as fast here, using torch",
            record.variant,
            fraction,
        )
        return False
    return True


def load_exported_predictor(folder: Path, meta: dict[str, Any], variant: str) -> WindowPredictor:
    """A window predictor for an exported variant, after every file's sha256 is verified.

    Raises
    ------
    CheckpointError
        If a file is missing or changed.
    ConfigError
        If the variant is not recorded for the current weights.
    """
    record = read_exports(meta).get(variant)
    if record is None:
        raise ConfigError(f"the model in {folder} has no '{variant}' export; run `ctseg export`")
    data = read_verified(folder, record)
    files = VARIANTS[variant][2]
    if record.runtime == "openvino":
        return openvino_predictor(data[files[0]], data[files[1]])
    return onnxruntime_predictor(data[files[0]])
