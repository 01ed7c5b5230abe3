"""Gantry-tilt correction: ctseg against dcm2niix on the two real tilted CT series in ``dcm_qa_ct``.

For each series, runs the ``dcm2niix`` CLI (its ``_Tilt`` output) and ``ctseg.io.dicom.read_dicom_series``, then
prints both grids, the |HU difference| at the world points both cover (dcm2niix's volume resampled linearly onto
ctseg's grid with SimpleITK), the world offset between the two first voxels, and the wall time of each tool.

Padding is kept as stored (``padding_hu=None``) because dcm2niix keeps it. A ctseg voxel counts as covered when two
reads with different ``fill_hu`` agree on it; a dcm2niix voxel when the resampling point falls inside its grid.

Usage::

    python benchmarks/tilt_vs_dcm2niix.py [SHARED_DATA]   # default: ../shared/data next to the repository
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ctseg.io.dicom import ReadOptions, inspect_dicom, read_dicom_series
from ctseg.io.images import read_nifti, volume_to_sitk
from ctseg.volume import Volume

SERIES = {
    "GE head, tilt 18.5 deg, steps 1.08/4.0/7.0 mm": "dcm_qa_ct/In/GE",
    "Philips STEREOTAXIS, tilt -18.5 deg, 2.37 mm": "dcm_qa_ct/In/Philips/S21610/S2010",
}
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: Sentinel fills far outside the CT range, to find voxels that no slice (ctseg) or grid (dcm2niix) covers.
FILL_A_HU, FILL_B_HU, OUTSIDE_HU = -9999.0, 9999.0, -99999.0


def run_dcm2niix(dcm2niix: str, folder: Path, work: Path) -> tuple[Volume, float]:
    """dcm2niix's tilt-corrected volume of the series ctseg would read from ``folder``, and its wall time (s)."""
    found = inspect_dicom(folder)
    if found.chosen is None:
        raise SystemExit(f"no usable series in {folder}: {found.reason}")
    src, out = work / "dicom", work / "nifti"
    src.mkdir(parents=True)
    out.mkdir()
    for f in found.chosen.group.files:
        shutil.copy(f.path, src / f.path.name)
    start = time.perf_counter()
    subprocess.run([dcm2niix, "-z", "y", "-f", "%s", "-o", str(out), str(src)], check=True, capture_output=True)
    seconds = time.perf_counter() - start
    tilted = sorted(out.glob("*_Tilt*.nii.gz"))
    if len(tilted) != 1:
        raise SystemExit(f"expected one dcm2niix _Tilt output for {folder}, got {[p.name for p in tilted]}")
    return read_nifti(tilted[0]), seconds


def compare(name: str, folder: Path, dcm2niix: str, work: Path) -> None:
    """Print the comparison for one series."""
    theirs, dcm2niix_s = run_dcm2niix(dcm2niix, folder, work)
    start = time.perf_counter()
    ours = read_dicom_series(folder, options=ReadOptions(padding_hu=None, fill_hu=FILL_A_HU))
    ctseg_s = time.perf_counter() - start
    other = read_dicom_series(folder, options=ReadOptions(padding_hu=None, fill_hu=FILL_B_HU))
    theirs_itk = sitk.Cast(volume_to_sitk(theirs), sitk.sitkFloat32)
    resampled = sitk.Resample(theirs_itk, volume_to_sitk(ours), sitk.Transform(), sitk.sitkLinear, OUTSIDE_HU)
    moved = sitk.GetArrayFromImage(resampled)
    both = (ours.array == other.array) & (moved > OUTSIDE_HU / 2)
    diff = np.abs(ours.array[both] - moved[both])
    a, b = ours.to_closest_canonical().geometry, theirs.to_closest_canonical().geometry
    offset = np.subtract(a.origin_mm, b.origin_mm)
    print(f"== {name}  ({folder})")
    print("   (canonical axis order: z along the slice normal, y, x; shape and spacing per axis)")
    print(f"   ctseg    shape {a.shape}  spacing {np.round(a.spacing_mm, 4).tolist()} mm  time {ctseg_s:.2f} s")
    print(f"   dcm2niix shape {b.shape}  spacing {np.round(b.spacing_mm, 4).tolist()} mm  time {dcm2niix_s:.2f} s")
    print(f"   time ratio ctseg / dcm2niix: {ctseg_s / dcm2niix_s:.2f} (dcm2niix time includes writing .nii.gz)")
    print(f"   voxels of ctseg's grid both cover: {both.sum()} ({both.mean():.1%})")
    print(
        f"   |HU difference| mean {diff.mean():.3f}  p95 {np.percentile(diff, 95):.3f}  median "
        f"{np.median(diff):.3f}  max {diff.max():.1f}"
    )
    print(
        f"   first voxel, ctseg - dcm2niix (LPS mm): {np.round(offset, 4).tolist()}  |{np.linalg.norm(offset):.4f}| mm"
        f" = {np.round(offset @ a.direction_matrix / np.array(a.spacing_mm), 3).tolist()} ctseg voxels (z, y, x)"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and compare both series."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    args = parser.parse_args(argv)
    dcm2niix = shutil.which("dcm2niix") or shutil.which("dcm2niix", path=str(Path(sys.executable).parent))
    if dcm2niix is None:
        print("dcm2niix not found on PATH; pip install dcm2niix", file=sys.stderr)
        return 1
    version = subprocess.run([dcm2niix, "-v"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    print(f"dcm2niix {version}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, rel) in enumerate(SERIES.items()):
            folder = args.data / rel
            if not folder.is_dir():
                print(f"missing {folder}; pass the shared data folder as the argument", file=sys.stderr)
                return 1
            compare(name, folder, dcm2niix, Path(tmp) / str(i))
    return 0


if __name__ == "__main__":
    sys.exit(main())
