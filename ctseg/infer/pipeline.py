"""``segment()``: a HU :class:`~ctseg.volume.Volume` in, a label ``Volume`` on exactly the input's grid out.

Steps: the model's own preprocessing (resample to its spacing, normalise), sliding-window prediction streamed
along z (arg-max per finished slab, so memory is bounded), the label map returned onto the input grid with
:func:`~ctseg.preprocess.spatial.resample_to` (nearest), optional post-processing, then a geometry check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from ctseg.config import InferConfig
from ctseg.device import amp_dtype, resolve_device
from ctseg.errors import ConfigError, GeometryError
from ctseg.infer.model import LoadedModel
from ctseg.infer.postprocess import fill_holes, keep_largest_component
from ctseg.infer.sliding_window import Predictor, mirror_tta, predict_labels
from ctseg.model.unet import main_output
from ctseg.preprocess.pipeline import background_value, preprocess_image
from ctseg.preprocess.spatial import resample_to
from ctseg.volume import Volume

log = logging.getLogger(__name__)


def make_predictor(network: torch.nn.Module, device: torch.device, *, amp: bool = True) -> Predictor:
    """Wrap a network as a window predictor: device transfer, autocast, inference mode, float32 logits on CPU."""
    dtype = amp_dtype(device) if amp else None

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            out = main_output(network(batch.to(device, non_blocking=True)))
        return out.float().cpu()

    return predictor


def window_predictor(model: LoadedModel, device: torch.device, *, runtime: str = "auto", amp: bool = True) -> Predictor:
    """The predictor for ``runtime`` (see :func:`ctseg.runtime.select.choose_variant`); exported ones are cached."""
    from ctseg.runtime.select import choose_variant, load_exported_predictor

    folder = model.folder
    if folder is None:  # a model built in memory has no exported files
        if runtime not in ("auto", "torch"):
            raise ConfigError(f"runtime {runtime!r} needs a model loaded from a folder with `ctseg export` files")
        variant = "torch"
    else:
        key = f"choice:{runtime}:{device}"  # chosen (and any fallback warned about) once per model, not per case
        if key not in model.runtimes:
            model.runtimes[key] = choose_variant(model.meta, runtime=runtime, device=device)
        variant = model.runtimes[key]
    if variant == "torch":
        model.network.to(device)
        return make_predictor(model.network, device, amp=amp)
    if variant not in model.runtimes:
        model.runtimes[variant] = load_exported_predictor(folder, model.meta, variant)  # type: ignore[arg-type]
        log.info("runtime: %s", variant)
    return model.runtimes[variant]  # type: ignore[no-any-return]


def segment(
    volume: Volume,
    model: LoadedModel,
    *,
    config: InferConfig | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
    runtime: str = "auto",
) -> Volume:
    """Segment a CT with a loaded model.

    Parameters
    ----------
    volume
        ``(Z, Y, X)`` HU on any grid.
    model
        From :func:`ctseg.load_model`.
    config
        Overlap, TTA, AMP and post-processing; defaults to the model's own.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
    progress
        Called as ``progress(done_windows, total_windows)``.
    runtime
        ``"auto"`` (the fastest exported variant that passed the accuracy gate, on the CPU; else torch), ``"torch"``,
        ``"openvino"`` / ``"onnxruntime"`` (that runtime's fastest export) or exactly one export:
        ``"openvino-int8"``, ``"openvino-default"``, ``"onnxruntime-int8"``, ``"onnxruntime-fp32"`` (see ``ctseg export``).

    Returns
    -------
    Volume
        ``(Z, Y, X)`` uint8 label map whose geometry equals ``volume.geometry``.

    Raises
    ------
    GeometryError
        If the result's grid differs from the input's (an internal invariant, checked on every call).
    ConfigError
        For an unknown ``runtime``, or one the model folder has no export for.
    CheckpointError
        If an exported file is missing or its sha256 differs from ``model.json``'s.
    """
    cfg = config or model.infer
    dev = resolve_device(device) if isinstance(device, str) else device
    pre = preprocess_image(volume, model.preprocess)
    predictor = window_predictor(model, dev, runtime=runtime, amp=cfg.amp)
    if cfg.tta:
        predictor = mirror_tta(predictor)
    image = torch.from_numpy(np.ascontiguousarray(pre.array))[None]
    labels = predict_labels(
        image,
        predictor,
        model.patch_size,
        overlap=cfg.overlap,
        batch_size=cfg.batch_size,
        pad_value=background_value(model.preprocess),
        progress=progress,
    )
    out = resample_to(Volume(labels, pre.geometry), volume.geometry, order="nearest")
    arr = out.array
    if cfg.largest_component:
        arr = keep_largest_component(arr)
    if cfg.fill_holes:
        arr = fill_holes(arr)
    result = Volume(arr.astype(np.uint8, copy=False), volume.geometry)
    if result.geometry != volume.geometry or result.shape != volume.shape:
        raise GeometryError(f"segment() produced grid {result.geometry} for input grid {volume.geometry}")
    return result
