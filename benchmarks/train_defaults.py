"""What a researcher's first ``ctseg train`` gives: the defaults and a time budget, on the real abdominal CT.

Builds the 2-case dataset of ``benchmarks/train_sweep.py`` from ``../shared/data/totalseg_abdomen`` (TotalSegmentator's
example CT as stored, and the same scan re-stored with its first array axis reversed; classes liver, spleen,
kidney_right, kidney_left, aorta), then runs the user's path, each step a ``ctseg`` command:

1. ``ctseg train DATASET --out RUN --labels ... --time-budget 15m`` (nothing else: the plan's defaults);
2. ``ctseg predict`` on both scans with the trained model;
3. ``ctseg evaluate`` of the predictions against the reference masks;

and prints the Dice per class on each scan (the training scan is the overfit check), the wall time of each step, the
schedule the budget chose (plan.yaml) and the CPU (model, cores, ISA flags). Both scans are the same anatomy, so the
held-out scan scores as the training one does.

Usage::

    python benchmarks/train_defaults.py                      # 15-minute budget
    python benchmarks/train_defaults.py --budget-minutes 5   # the 5-minute point of the Dice-vs-budget curve
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_sweep import CLASSES, build_dataset, cpu_description, shared_data_default  # noqa: E402


def ctseg(*args: str, log: Path) -> float:
    """Run one ``ctseg`` command (output to ``log``); its wall time in seconds. Exits if it fails."""
    t0 = time.perf_counter()
    with log.open("a") as fp:
        fp.write(f"$ ctseg {' '.join(args)}\n")
        fp.flush()
        rc = subprocess.run([sys.executable, "-m", "ctseg", *args], stdout=fp, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"ctseg {args[0]} failed (exit {rc}); see {log}")
    return time.perf_counter() - t0


def references(ds: Path, out: Path) -> Path:
    """The reference masks with the training label values (1..5 in CLASSES order), named like the predictions."""
    import nibabel as nib
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    for lab in sorted((ds / "labelsTr").glob("*.nii.gz")):
        img = nib.load(lab)
        raw = np.asarray(img.dataobj)
        mapped = np.zeros(raw.shape, np.uint8)
        for k, value in enumerate(CLASSES.values(), start=1):
            mapped[raw == value] = k
        nib.save(nib.Nifti1Image(mapped, img.affine), out / lab.name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data_default())
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--budget-minutes", type=float, default=15.0)
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="ctseg-defaults-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    ds = work / "Dataset901_AbdomenTwoOrientations"
    build_dataset(args.data / "totalseg_abdomen", ds)
    labels = ",".join(f"{k}={v}" for k, v in CLASSES.items())
    run, model, pred = work / "run", work / "model", work / "pred"
    print(
        f"CPU: {cpu_description()}; torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}; "
        f"load average at the start {os.getloadavg()[0]:.1f} (other processes on the CPU slow the steps)",
        flush=True,
    )
    budget = f"{args.budget_minutes:g}m"
    train_s = ctseg(
        "train",
        str(ds),
        "--out",
        str(run),
        "--model-dir",
        str(model),
        "--labels",
        labels,
        "--time-budget",
        budget,
        "--device",
        "cpu",
        log=log,
    )
    images = sorted((ds / "imagesTr").glob("*.nii.gz"))
    predict_s = ctseg(
        "predict",
        *map(str, images),
        "--model",
        str(model),
        "--out",
        str(pred),
        "--device",
        "cpu",
        "--format",
        "nifti",
        log=log,
    )
    ref = references(ds, work / "reference")
    metrics = work / "metrics.csv"
    ctseg("evaluate", str(pred), str(ref), "--out", str(metrics), "--labels", str(model / "model.json"), log=log)
    plan = yaml.safe_load((run / "plan.yaml").read_text())["train"]
    epochs = list(csv.DictReader((run / "metrics.csv").open()))
    step_s = sum(float(r["train_seconds"]) for r in epochs) / max(int(epochs[-1]["step"]), 1)
    rows = list(csv.DictReader(metrics.open()))
    split = json.loads((run / "split.json").read_text())
    steps = plan["epochs"] * plan["steps_per_epoch"]
    print(
        f"ctseg train --time-budget {budget} (defaults): {train_s / 60:.1f} min wall, {plan['epochs']} epochs x "
        f"{plan['steps_per_epoch']} steps = {steps} steps, validation every {plan['val_every']} epochs, "
        f"lr {plan['learning_rate']:g}, mirror_axes {plan['mirror_axes']}, augment {plan['augment']}"
    )
    print(f"mean step {step_s:.2f} s (metrics.csv); load average at the end {os.getloadavg()[0]:.1f}")
    print(f"ctseg predict (2 scans): {predict_s:.0f} s; split {split}")
    print(f"{'case':8s} " + " ".join(f"{c:>12s}" for c in CLASSES))
    for case in sorted({r["case"] for r in rows}):
        dice = {r["label"]: float(r["dice"]) for r in rows if r["case"] == case}
        role = "train" if any(case.startswith(n) for n in split["train"]) else "val"
        print(f"{case:8s} " + " ".join(f"{dice.get(c, float('nan')):12.3f}" for c in CLASSES) + f"  ({role})")
    print(f"outputs in {work}")


if __name__ == "__main__":
    main()
