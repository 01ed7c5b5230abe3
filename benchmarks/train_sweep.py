"""Evidence for the training defaults: learning rate, mirroring and augmentation on a real CT, several runs at once.

Builds the 2-case abdominal dataset of ``benchmarks/train_defaults.py`` (TotalSegmentator's example CT as stored, and
the same scan re-stored with a flipped left-right axis; classes liver, spleen, kidney_right, kidney_left, aorta), then
trains one run per variant with ``ctseg train`` (each a separate process with ``--threads`` CPU threads, so several
run side by side on a many-core machine), segments both cases with the trained model and prints the Dice per class.

All variants get the same number of steps (``--epochs``, so no time budget), so the figures compare settings, not
machines. The variants differ from the plan only in the ``--set`` keys shown; ``plan`` is today's plan (lr 3e-3, no
mirroring), ``old_plan`` the one the evidence file's ``plan`` row measured (lr 1e-3, mirroring on all axes).

Usage::

    python benchmarks/train_sweep.py --steps 1500 --parallel 8 --threads 2 [--data ../shared/data] [--out DIR]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

CLASSES = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "aorta": 52}

#: name -> --set overrides (on top of whatever the plan chose).
VARIANTS: dict[str, list[str]] = {
    "plan": [],
    # the plan before the defaults were chosen from this sweep (evidence/train_sweep_1500steps.txt calls it "plan")
    "old_plan": ["train.learning_rate=0.001", "train.mirror_axes=[0,1,2]"],
    "lr1e-3_mirror01": ["train.learning_rate=0.001", "train.mirror_axes=[0,1]"],
    "lr1e-3_nomirror": ["train.learning_rate=0.001", "train.mirror_axes=[]"],
    "lr3e-3_nomirror": ["train.learning_rate=0.003", "train.mirror_axes=[]"],
    "lr3e-3_mirror01": ["train.learning_rate=0.003", "train.mirror_axes=[0,1]"],
    "lr1e-2_nomirror": ["train.learning_rate=0.01", "train.mirror_axes=[]"],
    "lr3e-3_nomirror_noaug": ["train.learning_rate=0.003", "train.mirror_axes=[]", "train.augment=false"],
    "sgd1e-2_nomirror": ["train.optimizer=sgd", "train.learning_rate=0.01", "train.mirror_axes=[]"],
}


def shared_data_default() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def build_dataset(src: Path, ds: Path) -> None:
    """The scan as stored (case ``a``) and re-stored with its first array axis reversed (case ``b``), same world."""
    (ds / "imagesTr").mkdir(parents=True, exist_ok=True)
    (ds / "labelsTr").mkdir(parents=True, exist_ok=True)
    ct = nib.load(src / "example_ct.nii.gz")
    seg = nib.load(src / "example_seg_fast_force_split.nii.gz")
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, ct.shape[0] - 1  # voxel i -> n-1-i, world unchanged
    for name, img, lab in (
        ("a", ct, seg),
        (
            "b",
            nib.Nifti1Image(np.asarray(ct.dataobj)[::-1].copy(), ct.affine @ flip),
            nib.Nifti1Image(np.asarray(seg.dataobj)[::-1].copy(), seg.affine @ flip),
        ),
    ):
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), ds / "imagesTr" / f"abd{name}_0000.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(lab.dataobj).astype(np.uint8), lab.affine), ds / "labelsTr" / f"abd{name}.nii.gz")
    (ds / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, **CLASSES}, "file_ending": ".nii.gz"})
    )


def dice_per_class(mask_path: Path, ref_path: Path) -> dict[str, float]:
    pred = np.asarray(nib.load(mask_path).dataobj)
    ref = np.asarray(nib.load(ref_path).dataobj)
    out = {}
    for k, (name, value) in enumerate(CLASSES.items(), start=1):
        p, r = pred == k, ref == value
        out[name] = round(float(2 * (p & r).sum() / max(p.sum() + r.sum(), 1)), 4)
    return out


def run_variant(name: str, sets: list[str], ds: Path, work: Path, steps: int, threads: int) -> dict[str, object]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    run, model, pred = work / name / "run", work / name / "model", work / name / "pred"
    epochs = max(1, steps // 50)
    cmd = [sys.executable, "-m", "ctseg", "train", str(ds), "--out", str(run), "--model-dir", str(model),
           "--labels", ",".join(f"{k}={v}" for k, v in CLASSES.items()), "--epochs", str(epochs), "--device", "cpu",
           "--set", "train.steps_per_epoch=50", "--set", "train.num_workers=0"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    log = (work / f"{name}.log").open("w")
    rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    train_s = time.perf_counter() - t0
    if rc != 0:
        return {"variant": name, "error": f"train exit {rc}", "log": str(work / f'{name}.log')}
    images = sorted((ds / "imagesTr").glob("*.nii.gz"))
    subprocess.run([sys.executable, "-m", "ctseg", "predict", *map(str, images), "--model", str(model), "--out", str(pred),
                    "--device", "cpu", "--format", "nifti", "--no-qa"], env=env, stdout=log, stderr=subprocess.STDOUT)
    dice = {}
    for img in images:
        case = img.name.removesuffix("_0000.nii.gz")
        masks = list(pred.glob(f"{img.name.split('.')[0]}*/mask.nii.gz")) + list(pred.glob(f"{case}*/mask.nii.gz"))
        if masks:
            dice[case] = dice_per_class(masks[0], ds / "labelsTr" / f"{case}.nii.gz")
    split = json.loads((run / "split.json").read_text()) if (run / "split.json").exists() else {}
    return {"variant": name, "sets": sets, "steps": epochs * 50, "train_s": round(train_s, 1), "split": split,
            "dice": dice}


def cpu_description() -> str:
    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = [f for f in ("amx_bf16", "amx_int8", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return f"{model} ({os.cpu_count()} cores; {' '.join(isa) or 'no AVX2'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data_default())
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--parallel", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="ctseg-sweep-"))
    ds = work / "Dataset901_AbdomenTwoOrientations"
    build_dataset(args.data / "totalseg_abdomen", ds)
    print(f"CPU: {cpu_description()}; {args.parallel} runs at a time, {args.threads} threads each", flush=True)
    names = [n for n in args.variants.split(",") if n]
    results = []
    with cf.ThreadPoolExecutor(args.parallel) as pool:
        futures = {pool.submit(run_variant, n, VARIANTS[n], ds, work, args.steps, args.threads): n for n in names}
        for fut in cf.as_completed(futures):
            res = fut.result()
            results.append(res)
            print(json.dumps(res), flush=True)
    (work / "sweep.json").write_text(json.dumps(results, indent=2))
    print(f"\n{'variant':26s} {'steps':>5s} {'min':>5s}  " + " ".join(f"{c[:10]:>10s}" for c in CLASSES) + "  (train case)")
    for res in sorted(results, key=lambda r: str(r["variant"])):
        dice = res.get("dice") or {}
        train_case = (res.get("split") or {}).get("train", ["a"])[0]
        d = dice.get(train_case, {})
        print(f"{res['variant']:26s} {res.get('steps', 0):5d} {float(res.get('train_s', 0)) / 60:5.1f}  "
              + " ".join(f"{d.get(c, float('nan')):10.3f}" for c in CLASSES))


if __name__ == "__main__":
    main()
