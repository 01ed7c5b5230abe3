"""Overfit check of the whole training pipeline on a real CT: liver and spleen Dice on the training case.

Uses ``../shared/data/totalseg_abdomen/example_ct.nii.gz`` with ``example_seg_fast_force_split.nii.gz`` (classes
liver=5, spleen=1, kidney_right=2, kidney_left=3, aorta=52), laid out as a one-case nnU-Net dataset (symlinks, no
copies), trained with ``ctseg train``'s code path and the CPU plan, then segmented with the written model and scored
with Dice on that same case. Goal (issue): Dice >= 0.9 for liver and spleen within 20 minutes on a 2-core CPU.

Usage: ``python benchmarks/train_real_ct.py [--data ../shared/data] [--epochs 40] [--steps 50] [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import ctseg
from ctseg.io import read_volume
from ctseg.train.dataset import parse_label_subset
from ctseg.train.runner import TrainOptions, train

CLASSES = "liver=5,spleen=1,kidney_right=2,kidney_left=3,aorta=52"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--steps", type=int, default=50, help="steps per epoch")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--augment", action="store_true", help="keep augmentation on (off: a pure overfit check)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    src = args.data / "totalseg_abdomen"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ctseg-real-"))
    ds = work / "Dataset900_TotalSegAbdomen"
    (ds / "imagesTr").mkdir(parents=True, exist_ok=True)
    (ds / "labelsTr").mkdir(parents=True, exist_ok=True)
    for link, target in (
        (ds / "imagesTr" / "abdomen_0000.nii.gz", src / "example_ct.nii.gz"),
        (ds / "labelsTr" / "abdomen.nii.gz", src / "example_seg_fast_force_split.nii.gz"),
    ):
        if not link.exists():
            link.symlink_to(target.resolve())
    subset = parse_label_subset(CLASSES)
    labels = {"background": 0, **subset}
    (ds / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz"})
    )
    t0 = time.perf_counter()
    result = train(
        TrainOptions(
            dataset=ds,
            run_dir=work / "run",
            model_dir=work / "model",
            label_subset=subset,
            overrides={
                "train": {
                    "epochs": args.epochs,
                    "steps_per_epoch": args.steps,
                    "val_every": 5,
                    "learning_rate": args.lr,
                # Left/right classes: mirroring would swap kidney_left and kidney_right (and liver/spleen sides).
                "mirror_axes": [],
                "augment": args.augment,
                }
            },
        )
    )
    minutes = (time.perf_counter() - t0) / 60
    image = read_volume(ds / "imagesTr" / "abdomen_0000.nii.gz")
    ref = np.asarray(read_volume(ds / "labelsTr" / "abdomen.nii.gz").array)
    pred = ctseg.segment(image, ctseg.load_model(work / "model")).array
    print(f"trained {result.epochs} epochs x {args.steps} steps in {minutes:.1f} min ({work})")
    for k, (name, value) in enumerate(subset.items(), start=1):
        p, r = pred == k, ref == value
        dice = 2 * (p & r).sum() / max(p.sum() + r.sum(), 1)
        goal = " (goal >= 0.9)" if name in ("liver", "spleen") else ""
        print(f"  {name:14s} Dice {dice:.3f}{goal}")


if __name__ == "__main__":
    main()
