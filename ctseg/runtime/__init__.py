"""Runtimes for the network's forward pass: torch, or an exported OpenVINO / ONNX Runtime model.

Every runtime is seen through one interface, a window predictor ``(B, 1, pz, py, px) float32 -> (B, C, pz, py, px)
float32 logits on the CPU`` (what :mod:`ctseg.infer.sliding_window` calls); the sliding window, pre- and
post-processing stay in ctseg. :mod:`ctseg.runtime.select` picks the variant for a model folder and a device.
"""

from ctseg.runtime.select import RUNTIME_CHOICES, choose_variant, load_exported_predictor
from ctseg.runtime.variants import VARIANTS, ExportRecord, read_exports

__all__ = ["RUNTIME_CHOICES", "VARIANTS", "ExportRecord", "choose_variant", "load_exported_predictor", "read_exports"]
