"""Fixtures for the napari plugin tests: an oblique, anisotropic DICOM CT with a mask, and stand-in models.

The tests in this folder need the plugin's extras (``pip install -e napari_plugin "napari[pyqt6]" pytest-qt
pytest-xvfb``); each module skips itself when napari or ctseg_napari is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from ctseg.config import InferConfig, ModelConfig, RunConfig, to_dict
from ctseg.io.dicom import read_dicom_series
from ctseg.io.images import write_image
from ctseg.volume import Volume
from tests.stand_in import FULL_RANGE, THRESHOLD_HU
from tests.synthetic import GRADIENT, OBLIQUE, make_volume, oracle_hu, write_dicom_series

#: Rescale of the synthetic series: 0.25 HU steps, so HU values are not integers.
FINE = {"slope": 0.25, "intercept": -1024.0}
SHAPE = (10, 14, 12)
SPACING = (2.5, 0.7, 0.9)
#: A window covering the whole CT range: an invertible map HU -> [0, 1].
NAMES = {1: "dense", 2: "core"}


@dataclass(frozen=True)
class ObliqueCase:
    """A DICOM folder, the volume ctseg reads from it, and a two-label mask on that grid saved as NIfTI."""

    dicom: Path
    ct: Volume
    mask_path: Path
    mask: Volume


@pytest.fixture
def oblique_case(tmp_path: Path) -> ObliqueCase:
    """The oracle CT (HU linear in LPS position) as an oblique DICOM series crossing 300 HU mid-volume."""
    probe = make_volume(shape=SHAPE, spacing=SPACING, direction=OBLIQUE, origin=(0.0, 0.0, 0.0))
    centre = probe.geometry.index_to_world([[4.5, 6.5, 5.5]])[0]
    shift = GRADIENT * (THRESHOLD_HU - float(oracle_hu(centre))) / float(GRADIENT @ GRADIENT)
    volume = make_volume(shape=SHAPE, spacing=SPACING, direction=OBLIQUE, origin=tuple(shift))
    write_dicom_series(tmp_path / "dicom", volume, **FINE)
    ct = read_dicom_series(tmp_path / "dicom")
    mask = np.zeros(ct.shape, np.uint8)
    mask[ct.array > THRESHOLD_HU] = 1
    mask[2:5, 3:7, 8:11] = 2  # a box, so that the labels are not symmetric under any flip
    mask_volume = ct.with_array(mask)
    write_image(mask_volume, tmp_path / "masks" / "case_mask.nii.gz")
    return ObliqueCase(tmp_path / "dicom", ct, tmp_path / "masks" / "case_mask.nii.gz", mask_volume)


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A saved random two-level UNet model folder (model.pt + model.json), as ctseg train writes."""
    from ctseg.io.model_files import save_model_files
    from ctseg.model import build_model

    torch.manual_seed(0)
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
