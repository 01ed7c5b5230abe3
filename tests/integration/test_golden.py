"""Golden check on a real CT: the whole training pipeline overfits TotalSegmentator's example to Dice >= 0.9."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ctseg
from ctseg.io import read_volume
from ctseg.train.runner import TrainOptions, train

#: name -> value in example_seg_fast_force_split.nii.gz (TotalSegmentator 'total' ids, see SOURCE.txt).
CLASSES = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "aorta": 52}


@pytest.mark.golden
def test_real_ct_overfit_liver_spleen(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "totalseg_abdomen"
    ds = tmp_path / "Dataset900"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    (ds / "imagesTr" / "abdomen_0000.nii.gz").symlink_to(src / "example_ct.nii.gz")
    (ds / "labelsTr" / "abdomen.nii.gz").symlink_to(src / "example_seg_fast_force_split.nii.gz")
    (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, **CLASSES}}))
    overrides = {
        "train": {
            "epochs": 40,
            "steps_per_epoch": 50,
            "val_every": 10,
            "learning_rate": 3e-3,
            "mirror_axes": [],
            "augment": False,
        }
    }
    train(
        TrainOptions(
            dataset=ds,
            run_dir=tmp_path / "run",
            model_dir=tmp_path / "model",
            label_subset=CLASSES,
            overrides=overrides,
            progress=False,
        )
    )
    image = read_volume(ds / "imagesTr" / "abdomen_0000.nii.gz")
    ref = np.asarray(read_volume(ds / "labelsTr" / "abdomen.nii.gz").array)
    pred = ctseg.segment(image, ctseg.load_model(tmp_path / "model"))
    assert pred.geometry == image.geometry
    for k, name in ((1, "liver"), (2, "spleen")):
        p, r = pred.array == k, ref == CLASSES[name]
        assert 2 * (p & r).sum() / (p.sum() + r.sum()) >= 0.9, name
