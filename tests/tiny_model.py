"""A tiny 3D U-Net model folder with seeded random weights, for export and runtime tests (seconds, not minutes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ctseg.config import InferConfig, ModelConfig, PreprocessConfig, to_dict
from ctseg.io.model_files import save_model_files
from ctseg.model import build_model
from ctseg.phantom import make_phantom
from ctseg.volume import Geometry, Volume

SPACING_MM = (4.0, 4.0, 4.0)
PATCH = (16, 16, 16)
LABELS = {0: "background", 1: "liver", 2: "spleen"}
MODEL = ModelConfig(channels=(8, 16), strides=((2, 2, 2),), num_res_units=1)
PREPROCESS = PreprocessConfig(
    target_spacing_mm=SPACING_MM, normalization="window", window_level_hu=40.0, window_width_hu=400.0
)


def write_tiny_model(folder: Path, *, seed: int = 0) -> Path:
    """A model folder (``model.pt`` + ``model.json``) like ``ctseg train`` writes, with random weights."""
    torch.manual_seed(seed)
    net = build_model(MODEL, 1, len(LABELS))
    meta = {
        "config": {"model": to_dict(MODEL), "preprocess": to_dict(PREPROCESS), "infer": to_dict(InferConfig())},
        "in_channels": 1,
        "labels": {str(k): v for k, v in LABELS.items()},
        "colors": {"1": [255, 0, 0], "2": [0, 0, 255]},
        "patch_size": list(PATCH),
    }
    return save_model_files(Path(folder), net.state_dict(), meta)


def phantom_ct(shape: tuple[int, int, int] = (24, 40, 40), *, seed: int = 0) -> Volume:
    """A small phantom CT on the tiny model's own grid (HU, float32)."""
    ct, _ = make_phantom(Geometry(shape=shape, spacing_mm=SPACING_MM), seed=seed)
    return ct.with_array(ct.array.astype(np.float32))
