#!/usr/bin/env python
"""Ingestion benchmarks: DICOM reading, resampling and window/level, ctseg against the usual alternatives.

Run from the repository root (everything runs in one go and prints one table)::

    python benchmarks/ingest.py                 # full run: 300-slice series, best of 3
    python benchmarks/ingest.py --quick         # smoke run: small series, 1 repeat
    python benchmarks/ingest.py --out bench.json --profile

Sections
--------
1. DICOM reading on the Philips 5 mm series and the tilted GE series of ``dcm_qa_ct`` (from ``--data``) and on a
   synthetic ``--slices``-slice 512x512 int16 CT series written here with pydicom. Methods: ctseg
   ``read_dicom``, SimpleITK ``ImageSeriesReader``, plain sequential pydicom, ``dcm2niix`` + nibabel, and the
   floor (raw bytes -> ``np.frombuffer`` -> stack -> + intercept). Ratios are to the floor; goal: ctseg <= 2x.
2. Resampling a 512x512xZ float32 volume, spacing (1.0, 0.7, 0.7) mm (z, y, x), to 1.5 mm isotropic and back.
   Ratios are to ``torch.nn.functional.interpolate``; goal: ctseg <= 1.2x.
3. Window/level (40, 400) on the 512x512xZ int16 HU volume. Ratios are to in-place numpy on a float32 copy made
   before timing; goal: ctseg <= 1.2x. ctseg's call includes the int16 -> float32 conversion, so numpy with the
   conversion inside the timing is reported too (second ratio column).

Every method runs in its own fresh process (``multiprocessing`` 'spawn'): imports and inputs are loaded first, then
each repeat is timed with ``time.perf_counter`` and the best of ``--repeats`` is kept. Peak memory is the growth of
the process's resident set during a call: the kernel's high-water mark (``VmHWM``) is reset through
``/proc/self/clear_refs`` just before each call and read just after, minus the resident size before the call; the
largest over the repeats is reported. For dcm2niix, which runs in its own process, the external process's peak RSS
is reported as well. Torch keeps its default thread count; the machine and library versions are printed first.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

PHILIPS = "dcm_qa_ct/In/Philips/S21570/S2010"
GE = "dcm_qa_ct/In/GE"

#: Synthetic series / volume geometry, (z, y, x).
ROWS = COLS = 512
PIXEL_MM = 0.7
SLICE_MM = 1.0
INTERCEPT = -1024
TARGET_MM = (1.5, 1.5, 1.5)
WINDOW = (40.0, 400.0)  # level, width in HU

#: Goals stated in the issue: ctseg time / reference time.
GOAL_READ = 2.0
GOAL_PREPROCESS = 1.2
#: Whole-process `ctseg convert` vs dcm2niix (start-up included).
GOAL_STARTUP = 2.0
SYNTH_VERSION = 1  # bump when the synthetic series changes, so a reused --workdir is rewritten


# ------------------------------------------------------------------------------------------------------------------
# Memory measurement (inside a worker)
# ------------------------------------------------------------------------------------------------------------------
def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as fp:
        for line in fp:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False when not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fp:
            fp.write("5")
        return True
    except OSError:
        return False


def _summary(out: Any) -> dict[str, Any]:
    """Shape, dtype and simple statistics of a method's output (computed outside the timing)."""
    arr = np.asarray(out)
    if arr.size == 0:
        return {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    return {
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "mean": float(arr.mean(dtype=np.float64)),
    }


# ------------------------------------------------------------------------------------------------------------------
# Methods. Each setup function runs inside the worker: it imports what it needs and loads its inputs (untimed), and
# returns (prepare, run): ``state = prepare()`` is untimed and done before each repeat; ``run(state)`` is timed and
# returns the output array.
# ------------------------------------------------------------------------------------------------------------------
Runner = tuple[Callable[[], Any], Callable[[Any], Any]]


def _no_state() -> None:
    return None


def _torch_default_threads() -> int:
    import torch

    # A fresh process: this is torch's own default for the machine. Re-applied after other imports in case one of
    # them changed it.
    n = int(os.environ.get("_BENCH_TORCH_THREADS", "0")) or torch.get_num_threads()
    torch.set_num_threads(n)
    return n


def setup_read_ctseg(p: dict[str, Any]) -> Runner:
    sys.path.insert(0, str(REPO))
    from ctseg.io.dicom import read_dicom

    folder = Path(p["folder"])
    return _no_state, lambda _s: read_dicom(folder).volume.array


def setup_read_sitk(p: dict[str, Any]) -> Runner:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GE: "Non uniform sampling" on every call
    folder = str(p["folder"])

    def run(_s: Any) -> np.ndarray:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
        return sitk.GetArrayFromImage(reader.Execute())

    return _no_state, run


def setup_read_pydicom(p: dict[str, Any]) -> Runner:
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(p["folder"])

    def run(_s: Any) -> np.ndarray:
        datasets = []
        for path in sorted(folder.iterdir()):
            try:
                ds = pydicom.dcmread(path)
            except InvalidDicomError:
                continue
            if "PixelData" in ds:
                datasets.append(ds)
        datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
        arr = np.stack([d.pixel_array for d in datasets])
        slope, intercept = float(datasets[0].RescaleSlope), float(datasets[0].RescaleIntercept)
        if slope == 1.0 and intercept.is_integer():
            out = arr.astype(np.int16, copy=False)
            out += np.int16(intercept)
            return out
        return arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)

    return _no_state, run


def setup_read_dcm2niix(p: dict[str, Any]) -> Runner:
    import nibabel as nib

    folder = str(p["folder"])
    exe = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")

    def prepare() -> Path:
        return Path(tempfile.mkdtemp(prefix="bench-dcm2niix-"))

    def run(tmp: Path) -> np.ndarray:
        subprocess.run(
            [exe, "-z", "n", "-f", "out", "-o", str(tmp), folder],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        # With gantry tilt / uneven steps dcm2niix writes the raw stack and corrected copies (out_Tilt_Eq_1.nii);
        # load the most corrected one, the counterpart of ctseg's output.
        nii = max(tmp.glob("*.nii"), key=lambda q: len(q.name))
        arr = np.asanyarray(nib.load(nii).dataobj)  # type: ignore[attr-defined]
        return np.array(arr) if isinstance(arr, np.memmap) else arr

    return prepare, run


def setup_read_floor(p: dict[str, Any]) -> Runner:
    files = [Path(f) for f in p["files"]]
    rows, cols = int(p["rows"]), int(p["cols"])
    intercept = np.int16(p["intercept"])
    n = rows * cols

    def run(_s: Any) -> np.ndarray:
        out = np.empty((len(files), rows, cols), dtype=np.int16)
        for i, path in enumerate(files):
            buf = path.read_bytes()
            out[i] = np.frombuffer(buf, dtype="<i2", count=n, offset=len(buf) - 2 * n).reshape(rows, cols)
        out += intercept
        return out

    return _no_state, run


def _load_float_volume(p: dict[str, Any]) -> tuple[np.ndarray, tuple[float, float, float]]:
    return np.load(p["float_npy"]), tuple(p["spacing"])  # type: ignore[return-value]


def _target_shape(shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[int, int, int]:
    # The same double-precision expression as ctseg's spacing_grid (and torch's size from a scale factor).
    s = [max(1, int(np.floor(n * (o / t)))) for n, o, t in zip(shape, spacing, TARGET_MM)]
    return (s[0], s[1], s[2])


def setup_resample_ctseg(p: dict[str, Any]) -> Runner:
    sys.path.insert(0, str(REPO))
    from ctseg.preprocess import resample_to_spacing
    from ctseg.volume import Geometry, Volume

    _torch_default_threads()
    arr, spacing = _load_float_volume(p)
    vol = Volume(arr, Geometry(arr.shape, spacing, (0.0, 0.0, 0.0)))
    return _no_state, lambda _s: resample_to_spacing(vol, TARGET_MM).array


def setup_resample_torch(p: dict[str, Any]) -> Runner:
    import torch
    import torch.nn.functional as F

    _torch_default_threads()
    arr, spacing = _load_float_volume(p)
    size = _target_shape(arr.shape, spacing)
    t = torch.from_numpy(arr)[None, None]
    return _no_state, lambda _s: F.interpolate(t, size=size, mode="trilinear", align_corners=False)[0, 0].numpy()


def setup_resample_sitk(p: dict[str, Any]) -> Runner:
    import SimpleITK as sitk

    arr, spacing = _load_float_volume(p)
    size = _target_shape(arr.shape, spacing)
    img = sitk.GetImageFromArray(arr)  # ITK order is (x, y, z); the conversion is done before timing
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    # First output centre half a voxel in from the source's first voxel edge, as ctseg's spacing_grid.
    origin = tuple((t - s) / 2.0 for t, s in zip(TARGET_MM[::-1], spacing[::-1]))

    def run(_s: Any) -> np.ndarray:
        out = sitk.Resample(
            img,
            size[::-1],
            sitk.Transform(),
            sitk.sitkLinear,
            origin,
            TARGET_MM[::-1],
            img.GetDirection(),
            0.0,
            sitk.sitkFloat32,
        )
        return sitk.GetArrayFromImage(out)

    return _no_state, run


def setup_resample_monai(p: dict[str, Any]) -> Runner:
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    _torch_default_threads()
    arr, spacing = _load_float_volume(p)
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    img = MetaTensor(torch.from_numpy(arr)[None], affine=affine)
    spacer = Spacing(pixdim=TARGET_MM, mode="bilinear")
    return _no_state, lambda _s: spacer(img).as_tensor()[0].numpy()  # type: ignore[attr-defined]


def setup_back_ctseg(p: dict[str, Any]) -> Runner:
    sys.path.insert(0, str(REPO))
    from ctseg.preprocess import resample_to, resample_to_spacing
    from ctseg.volume import Geometry, Volume

    _torch_default_threads()
    arr, spacing = _load_float_volume(p)
    vol = Volume(arr, Geometry(arr.shape, spacing, (0.0, 0.0, 0.0)))
    small = resample_to_spacing(vol, TARGET_MM)
    geometry = vol.geometry
    return _no_state, lambda _s: resample_to(small, geometry).array


def setup_back_torch(p: dict[str, Any]) -> Runner:
    import torch
    import torch.nn.functional as F

    _torch_default_threads()
    arr, spacing = _load_float_volume(p)
    size = tuple(arr.shape)
    t = torch.from_numpy(arr)[None, None]
    small = F.interpolate(t, size=_target_shape(arr.shape, spacing), mode="trilinear", align_corners=False)
    del t, arr
    return _no_state, lambda _s: F.interpolate(small, size=size, mode="trilinear", align_corners=False)[0, 0].numpy()


def _window_bounds() -> tuple[float, float]:
    level, width = WINDOW
    return level - width / 2.0, level + width / 2.0


def setup_window_ctseg(p: dict[str, Any]) -> Runner:
    sys.path.insert(0, str(REPO))
    from ctseg.preprocess import apply_window
    from ctseg.volume import Geometry, Volume

    hu = np.load(p["hu_npy"])
    vol = Volume(hu, Geometry(hu.shape, tuple(p["spacing"])))
    return _no_state, lambda _s: apply_window(vol, *WINDOW).array


def _window_inplace(buf: np.ndarray) -> np.ndarray:
    lo, hi = _window_bounds()
    np.clip(buf, np.float32(lo), np.float32(hi), out=buf)
    buf -= np.float32(lo)
    buf *= np.float32(1.0 / (hi - lo))
    return buf


def setup_window_numpy_inplace(p: dict[str, Any]) -> Runner:
    hu = np.load(p["hu_npy"])
    # The float32 copy is made in prepare(), before the timing starts (and before the memory baseline).
    return (lambda: hu.astype(np.float32)), _window_inplace


def setup_window_numpy_astype(p: dict[str, Any]) -> Runner:
    hu = np.load(p["hu_npy"])
    return _no_state, lambda _s: _window_inplace(hu.astype(np.float32))


def setup_window_monai(p: dict[str, Any]) -> Runner:
    from monai.transforms import ScaleIntensityRange

    _torch_default_threads()
    hu = np.load(p["hu_npy"])
    lo, hi = _window_bounds()
    t = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
    return _no_state, lambda _s: np.asarray(t(hu))


SETUPS: dict[str, Callable[[dict[str, Any]], Runner]] = {
    name[len("setup_") :]: fn for name, fn in globals().items() if name.startswith("setup_") and callable(fn)
}


# ------------------------------------------------------------------------------------------------------------------
# Worker process
# ------------------------------------------------------------------------------------------------------------------
def _worker(method: str, params: dict[str, Any], repeats: int, queue: Any) -> None:
    try:
        t0 = time.perf_counter()
        prepare, run = SETUPS[method](params)
        setup_s = time.perf_counter() - t0
        gc.collect()
        times: list[float] = []
        peaks: list[float] = []
        resettable = True
        summary: dict[str, Any] = {}
        for r in range(repeats):
            state = prepare()
            gc.collect()
            resettable = _reset_hwm() and resettable
            base_kb = _status_kb("VmRSS")
            t = time.perf_counter()
            out = run(state)
            dt = time.perf_counter() - t
            peaks.append((_status_kb("VmHWM") - base_kb) / 1024.0)
            times.append(dt)
            if r == 0:
                summary = _summary(out)
            if isinstance(state, Path):  # a scratch folder made by prepare() (dcm2niix output)
                shutil.rmtree(state, ignore_errors=True)
            del out, state
            gc.collect()
        # Only dcm2niix runs an external process during the call (MONAI, for one, runs one at import).
        child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0 if method == "read_dcm2niix" else 0
        queue.put(
            {
                "ok": True,
                "times_s": times,
                "peak_mb": max(peaks),
                "hwm_reset": resettable,
                "child_peak_mb": child_mb if child_mb > 0 else None,
                "setup_s": setup_s,
                "output": summary,
            }
        )
    except BaseException as exc:  # noqa: BLE001 - reported in the table, the run goes on
        queue.put({"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})


@dataclass
class Row:
    section: str
    case: str
    method: str
    label: str
    note: str = ""
    best_s: float | None = None
    median_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    ratio: float | None = None
    ratio2: float | None = None
    peak_mb: float | None = None
    child_peak_mb: float | None = None
    output: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _run_once(ctx: Any, method: str, params: dict[str, Any], repeats: int, timeout_s: float) -> dict[str, Any]:
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(method, params, repeats, queue), daemon=True)
    proc.start()
    try:
        res: dict[str, Any] = queue.get(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - queue.Empty on timeout, or the worker died without reporting
        res = {"ok": False, "error": f"no result (exit code {proc.exitcode}, timeout {timeout_s:.0f} s)"}
    proc.join(timeout=30)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return res


def measure(ctx: Any, row: Row, params: dict[str, Any], repeats: int, processes: int, timeout_s: float) -> Row:
    """Run one method in ``processes`` fresh spawned processes, ``repeats`` calls each; fill ``row``.

    The best time over all calls is kept (a process can land on a slow CPU placement for its whole life, so one
    process is not enough); peak memory is the largest over all calls.
    """
    results = []
    for _ in range(processes):
        res = _run_once(ctx, row.method, params, repeats, timeout_s)
        if not res["ok"]:
            row.error = res["error"]
            print(f"  ! {row.case} / {row.label}: {row.error}", file=sys.stderr)
            if "traceback" in res:
                print(res["traceback"], file=sys.stderr)
            return row
        results.append(res)
    row.times_s = [t for res in results for t in res["times_s"]]
    row.best_s = min(row.times_s)
    row.median_s = float(np.median(row.times_s))
    row.peak_mb = max(res["peak_mb"] for res in results)
    child = [res["child_peak_mb"] for res in results if res["child_peak_mb"]]
    row.child_peak_mb = max(child) if child else None
    row.output = results[0]["output"]
    if not all(res["hwm_reset"] for res in results):
        row.note = (row.note + "; " if row.note else "") + "peak incl. imports (HWM not resettable)"
    print(f"  {row.case:<22} {row.label:<34} best {row.best_s:8.3f} s  peak {row.peak_mb:7.1f} MB", flush=True)
    return row


# ------------------------------------------------------------------------------------------------------------------
# Inputs: the synthetic series and volumes (parent process)
# ------------------------------------------------------------------------------------------------------------------
def synthetic_hu(n_slices: int, seed: int = 0) -> np.ndarray:
    """A ``(n_slices, 512, 512)`` int16 HU phantom: air, a body ellipse of soft tissue, lungs, spine, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:ROWS, 0:COLS].astype(np.float32)
    y -= ROWS / 2.0
    x -= COLS / 2.0
    out = np.empty((n_slices, ROWS, COLS), dtype=np.int16)
    for k in range(n_slices):
        f = k / max(n_slices - 1, 1)
        a, b = 200.0 + 25.0 * np.sin(np.pi * f), 140.0 + 15.0 * np.sin(np.pi * f)
        body = (x / a) ** 2 + (y / b) ** 2 <= 1.0
        hu = np.full((ROWS, COLS), -1000.0, dtype=np.float32)
        hu[body] = 40.0
        fat = body & ((x / (a - 15)) ** 2 + (y / (b - 15)) ** 2 > 1.0)
        hu[fat] = -100.0
        if f > 0.45:  # thorax: two lungs
            for cx in (-0.45 * a, 0.45 * a):
                hu[((x - cx) / (0.35 * a)) ** 2 + ((y + 0.1 * b) / (0.6 * b)) ** 2 <= 1.0] = -850.0
        else:  # abdomen: a liver-like region
            hu[((x + 0.3 * a) / (0.4 * a)) ** 2 + ((y + 0.1 * b) / (0.5 * b)) ** 2 <= 1.0] = 60.0
        hu[(x / 18.0) ** 2 + ((y - 0.65 * b) / 18.0) ** 2 <= 1.0] = 700.0  # vertebra
        hu += rng.standard_normal((ROWS, COLS), dtype=np.float32) * 15.0
        out[k] = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return out


def write_series(hu: np.ndarray, folder: Path) -> None:
    """Write ``hu`` as an axial CT series: explicit VR little endian, int16 stored = HU + 1024, 1 mm steps.

    File names are shuffled against slice position so that readers must sort by geometry.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    order = np.random.default_rng(1).permutation(hu.shape[0])
    for k in range(hu.shape[0]):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Modality = "CT"
        ds.Manufacturer = "ctseg benchmark"
        ds.PatientName = "Synthetic^Phantom"
        ds.PatientID = "BENCH0001"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame
        ds.SeriesNumber = 2
        ds.SeriesDescription = "synthetic 1 mm"
        ds.InstanceNumber = k + 1
        ds.KVP = 120
        ds.SliceThickness = SLICE_MM
        z = -150.0 + k * SLICE_MM
        ds.ImagePositionPatient = [-(COLS - 1) * PIXEL_MM / 2.0, -(ROWS - 1) * PIXEL_MM / 2.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = z
        ds.PixelSpacing = [PIXEL_MM, PIXEL_MM]
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = INTERCEPT
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = WINDOW[0]
        ds.WindowWidth = WINDOW[1]
        ds.PixelData = (hu[k].astype(np.int32) - INTERCEPT).astype("<i2").tobytes()
        ds.save_as(folder / f"IM{int(order[k]):05d}.dcm", enforce_file_format=True)


def prepare_inputs(workdir: Path, n_slices: int) -> dict[str, Any]:
    """Write (or reuse) the synthetic series and the .npy volumes for sections 2 and 3."""
    marker = workdir / "synthetic.json"
    info = {"version": SYNTH_VERSION, "slices": n_slices, "rows": ROWS, "cols": COLS}
    series = workdir / f"series_{n_slices}"
    hu_npy = workdir / f"hu_{n_slices}.npy"
    float_npy = workdir / f"float_{n_slices}.npy"
    if marker.exists() and json.loads(marker.read_text()) == info and hu_npy.exists() and float_npy.exists():
        print(f"reusing synthetic inputs in {workdir}")
    else:
        t = time.perf_counter()
        shutil.rmtree(series, ignore_errors=True)
        hu = synthetic_hu(n_slices)
        write_series(hu, series)
        np.save(hu_npy, hu)
        np.save(float_npy, hu.astype(np.float32))
        marker.write_text(json.dumps(info))
        print(f"wrote a {n_slices}-slice synthetic series to {series} in {time.perf_counter() - t:.1f} s")
    return {"series": series, "hu_npy": hu_npy, "float_npy": float_npy}


def floor_params(folder: Path) -> dict[str, Any]:
    """The image files of a folder and the rows, columns and intercept the floor needs (read untimed)."""
    import pydicom

    files, intercepts, shapes = [], set(), set()
    for path in sorted(folder.iterdir()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM
            continue
        if "Rows" not in ds or "PixelRepresentation" not in ds:
            continue  # DIRFILE and the like
        files.append(str(path))
        intercepts.add(float(ds.get("RescaleIntercept", 0)))
        shapes.add((int(ds.Rows), int(ds.Columns)))
    if len(shapes) != 1 or len(intercepts) != 1:
        raise SystemExit(f"{folder}: the floor needs one image size and one intercept, got {shapes} {intercepts}")
    (rows, cols), intercept = shapes.pop(), intercepts.pop()
    return {"files": files, "rows": rows, "cols": cols, "intercept": int(intercept)}


def warm_cache(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        if path.is_file():
            total += len(path.read_bytes())
    return total


# ------------------------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------------------------
def _fmt(v: float | None, spec: str, empty: str = "") -> str:
    return empty if v is None else format(v, spec)


def _out_str(o: dict[str, Any]) -> str:
    if not o:
        return ""
    shape = "x".join(str(s) for s in o["shape"])
    mean = (
        f" mean {o['mean']:.1f}"
        if "mean" in o and abs(o["mean"]) >= 10
        else (f" mean {o['mean']:.4f}" if "mean" in o else "")
    )
    return f"{shape} {o['dtype']}{mean}"


def print_table(rows: list[Row], refs: dict[str, str]) -> None:
    header = f"{'case':<22} {'method':<34} {'best s':>8} {'median s':>9} {'ratio':>7} {'ratio2':>7} {'peak MB':>8}  output / note"
    print("\n" + "=" * len(header))
    last_section = None
    for r in rows:
        if r.section != last_section:
            last_section = r.section
            print("=" * len(header))
            print(f"{r.section}   [ratio: vs {refs[r.section]}]")
            print(header)
            print("-" * len(header))
        if r.error:
            print(f"{r.case:<22} {r.label:<34} {'ERROR':>8}  {r.error[:120]}")
            continue
        peak = _fmt(r.peak_mb, ".0f")
        if r.child_peak_mb:
            peak += f" +{r.child_peak_mb:.0f}"
        extra = "; ".join(x for x in (_out_str(r.output), r.note) if x)
        print(
            f"{r.case:<22} {r.label:<34} {_fmt(r.best_s, '8.3f'):>8} {_fmt(r.median_s, '9.3f'):>9} "
            f"{_fmt(r.ratio, '6.2f') + ('x' if r.ratio is not None else ''):>7} "
            f"{_fmt(r.ratio2, '6.2f') + ('x' if r.ratio2 is not None else ''):>7} {peak:>8}  {extra}"
        )
    print("=" * len(header))
    print(
        "peak MB: resident-set growth during one call (max over repeats); '+N' = the external dcm2niix process's peak."
    )


def _ratio(a: Row, b: Row | None) -> float | None:
    if b is None or a.best_s is None or b.best_s is None or b.best_s <= 0:
        return None
    return a.best_s / b.best_s


def goals(rows: list[Row]) -> list[str]:
    lines = []
    for r in rows:
        if not r.method.endswith("_ctseg") or r.ratio is None:
            continue
        goal = GOAL_READ if r.section.startswith("1") else GOAL_PREPROCESS
        ok = "PASS" if r.ratio <= goal else "FAIL"
        why = ""
        if r.section.startswith("1") and not r.case.startswith("synthetic"):
            ok, why = "info", " [the goal is set on the synthetic series; shown for reference]"
        elif r.method == "window_ctseg":
            why = " [reference excludes the int16->float32 conversion that ctseg's call includes]"
        lines.append(f"{ok:<4}  {r.section.split(':')[0]} {r.case}: {r.label} = {r.ratio:.2f}x (goal <= {goal}x){why}")
    return lines


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
    }
    try:
        with open("/proc/cpuinfo") as fp:
            env["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fp if ln.startswith("model name")), "?")
    except OSError:
        pass
    for mod in ("torch", "pydicom", "SimpleITK", "nibabel", "monai"):
        try:
            m = __import__(mod)
            env[mod] = getattr(m, "__version__", None) or getattr(m, "Version_VersionString", lambda: "?")()
        except Exception as exc:  # noqa: BLE001
            env[mod] = f"unavailable ({type(exc).__name__})"
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        pass
    exe = shutil.which("dcm2niix") or shutil.which("dcm2niix", path=str(Path(sys.executable).parent))
    if exe:
        res = subprocess.run([exe, "-v"], capture_output=True, text=True)
        env["dcm2niix"] = (res.stdout.strip().splitlines() or ["?"])[-1]
    return env


def profile_read(folder: Path, top: int) -> None:
    import cProfile
    import pstats

    sys.path.insert(0, str(REPO))
    from ctseg.io.dicom import CheckedSeries, read_dicom
    from ctseg.io.dicom.discover import discover
    from ctseg.io.dicom.series import plan_series
    from ctseg.io.dicom.stack import assemble_volume

    read_dicom(folder)  # warm imports and caches
    best = [float("inf")] * 3
    for _ in range(3):
        t0 = time.perf_counter()
        found = discover(folder)
        t1 = time.perf_counter()
        plans = [plan_series(g) for g in found.groups]
        t2 = time.perf_counter()
        if not isinstance(plans[0], CheckedSeries):
            raise SystemExit(f"cannot profile {folder.name}: {plans[0].error}")
        assemble_volume(plans[0])
        t3 = time.perf_counter()
        best = [min(b, x) for b, x in zip(best, (t1 - t0, t2 - t1, t3 - t2))]
    print(
        f"\nctseg read stages on {folder.name} (best of 3, no profiler): discover (header parse) {best[0]:.3f} s, "
        f"plan_series (checks) {best[1]:.3f} s, assemble_volume (pixels + HU) {best[2]:.3f} s"
    )
    profiles = []
    for _ in range(3):  # keep the least disturbed of three profiles
        prof = cProfile.Profile()
        prof.enable()
        read_dicom(folder)
        prof.disable()
        profiles.append(prof)
    stats = min((pstats.Stats(p) for p in profiles), key=lambda st: st.total_tt)  # type: ignore[attr-defined]
    print(f"\ncProfile of ctseg read_dicom({folder.name}) (best of 3), top {top} by cumulative time:")
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    print(f"top {top // 2} by own (tottime) time:")
    stats.sort_stats("tottime").print_stats(top // 2)
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"real CT data folder (default {DEFAULT_DATA})")
    ap.add_argument(
        "--slices",
        type=int,
        default=None,
        help="slices of the synthetic series and volumes (default 300; 48 with --quick)",
    )
    ap.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per method, best kept (default 3; 1 with --quick)"
    )
    ap.add_argument(
        "--processes",
        type=int,
        default=None,
        help="fresh processes per method, --repeats calls in each (default 2; 1 with --quick)",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer repeats, smaller synthetic series")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON to this file")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the synthetic inputs here and reuse them (default: a temp dir, removed)",
    )
    ap.add_argument(
        "--only",
        choices=("read", "resample", "window", "startup"),
        action="append",
        help="run only these sections (repeatable)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also print a cProfile of ctseg read_dicom on the synthetic series",
    )
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per method before it is reported as failed")
    args = ap.parse_args(argv)
    slices = args.slices or (48 if args.quick else 300)
    repeats = args.repeats or (1 if args.quick else 3)
    procs = args.processes or (1 if args.quick else 2)
    sections = set(args.only or ("read", "resample", "window", "startup"))

    t_start = time.perf_counter()
    env = environment()
    os.environ["_BENCH_TORCH_THREADS"] = str(env.get("torch_threads", 0))  # torch's default here, for the workers
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"repeats={repeats} x processes={procs} per method (best kept), synthetic slices={slices}, data={args.data}")

    tmp_ctx = None
    if args.workdir is None:
        tmp_ctx = tempfile.TemporaryDirectory(prefix="ctseg-bench-")
        workdir = Path(tmp_ctx.name)
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    rows: list[Row] = []
    refs: dict[str, str] = {}
    try:
        inputs = prepare_inputs(workdir, slices)
        synth = Path(inputs["series"])

        if "read" in sections:
            sec = "1: DICOM read"
            refs[sec] = "floor (raw bytes -> frombuffer -> stack -> + intercept)"
            cases: list[tuple[str, Path, str]] = []
            for name, rel, note in (
                ("Philips 5mm (28)", PHILIPS, ""),
                ("GE tilted (28)", GE, "18.5 deg tilt, uneven steps"),
            ):
                folder = args.data / rel
                if folder.is_dir():
                    cases.append((name, folder, note))
                else:
                    print(f"skipping {name}: {folder} not found (pass --data)", file=sys.stderr)
            cases.append((f"synthetic ({slices})", synth, ""))
            print(f"\n{sec}")
            for case, folder, case_note in cases:
                nbytes = warm_cache(folder)
                fp = floor_params(folder)
                case_rows = []
                for method, label, note in (
                    ("read_floor", "floor", "no sort, no checks"),
                    ("read_ctseg", "ctseg read_dicom", case_note and "tilt-corrected + uniform grid (float32)"),
                    ("read_sitk", "SimpleITK ImageSeriesReader", case_note and "raw stack, no tilt correction"),
                    ("read_pydicom", "pydicom sequential", case_note and "raw stack"),
                    ("read_dcm2niix", "dcm2niix + nibabel", "-z n; loads the most corrected .nii"),
                ):
                    params = {"folder": str(folder)} if method != "read_floor" else fp
                    case_rows.append(
                        measure(ctx, Row(sec, case, method, label, note), params, repeats, procs, args.timeout)
                    )
                floor = case_rows[0]
                for r in case_rows:
                    r.ratio = _ratio(r, floor)
                floor.note += f"; {len(fp['files'])} files, {nbytes / 2**20:.0f} MB"
                rows.extend(case_rows)

        vol_params = {
            "float_npy": str(inputs["float_npy"]),
            "hu_npy": str(inputs["hu_npy"]),
            "spacing": [SLICE_MM, PIXEL_MM, PIXEL_MM],
        }
        shape_str = f"{slices}x{ROWS}x{COLS}"
        if "resample" in sections:
            sec = "2: resample"
            refs[sec] = "torch F.interpolate (trilinear) in the same direction"
            print(f"\n{sec}")
            case = f"{shape_str} -> 1.5mm"
            fwd = [
                measure(ctx, Row(sec, case, m, label, note), vol_params, repeats, procs, args.timeout)
                for m, label, note in (
                    ("resample_torch", "F.interpolate trilinear", ""),
                    ("resample_ctseg", "ctseg resample_to_spacing", ""),
                    ("resample_sitk", "SimpleITK Resample linear", "input sitk.Image built before timing"),
                    ("resample_monai", "MONAI Spacing(pixdim=1.5)", "MetaTensor with affine"),
                )
            ]
            for r in fwd:
                r.ratio = _ratio(r, fwd[0])
            case = "1.5mm -> source grid"
            back = [
                measure(ctx, Row(sec, case, m, label), vol_params, repeats, procs, args.timeout)
                for m, label in (
                    ("back_torch", "F.interpolate back to source size"),
                    ("back_ctseg", "ctseg resample_to(source geometry)"),
                )
            ]
            for r in back:
                r.ratio = _ratio(r, back[0])
            rows.extend(fwd + back)

        if "window" in sections:
            sec = "3: window 40/400"
            refs[sec] = "numpy in-place on a float32 copy made before timing; ratio2: vs numpy incl. astype"
            print(f"\n{sec}")
            case = f"{shape_str} int16"
            win = [
                measure(ctx, Row(sec, case, m, label, note), vol_params, repeats, procs, args.timeout)
                for m, label, note in (
                    ("window_numpy_inplace", "numpy in-place (float32 given)", "excludes int16->float32"),
                    ("window_numpy_astype", "numpy astype + in-place", "includes int16->float32"),
                    ("window_ctseg", "ctseg apply_window", "includes int16->float32"),
                    ("window_monai", "MONAI ScaleIntensityRange", "int16 numpy in, includes conversion"),
                )
            ]
            for r in win:
                r.ratio = _ratio(r, win[0])
                r.ratio2 = _ratio(r, win[1])
            rows.extend(win)

        print_table(rows, refs)
        goal_lines = goals(rows)
        for line in goal_lines:
            print(line)
        # The window goal compares like with like: ctseg converts int16 -> float32 inside its call.
        for r in rows:
            if r.method == "window_ctseg" and r.ratio2 is not None:
                ok = "PASS" if r.ratio2 <= GOAL_PREPROCESS else "FAIL"
                line = f"{ok:<4}  3 {r.case}: ctseg apply_window vs numpy incl. astype = {r.ratio2:.2f}x (goal <= {GOAL_PREPROCESS}x)"
                goal_lines.append(line)
                print(line)
        if "startup" in sections:
            # Whole process, as a user runs it: `ctseg convert` vs dcm2niix on a 140-slice series (benchmarks/startup.py).
            from startup import compare

            print("\nstartup: whole-process `ctseg convert` vs dcm2niix (140 slices of 512x512, .nii out)")
            ratio = compare(140, 3 if args.quick else 10)
            line = f"{'PASS' if ratio <= GOAL_STARTUP else 'FAIL':<4}  whole-process convert vs dcm2niix = {ratio:.2f}x"
            line += f" (goal <= {GOAL_STARTUP}x)"
            goal_lines.append(line)
            print(line)
        if args.profile and "read" in sections:
            # In a fresh process, like the timings (no state left over from writing the series).
            proc = ctx.Process(target=profile_read, args=(synth, 30))
            proc.start()
            proc.join(timeout=args.timeout)
        total = time.perf_counter() - t_start
        print(f"\ntotal benchmark time {total:.0f} s")
        if args.out is not None:
            payload = {
                "environment": env,
                "args": {
                    "data": str(args.data),
                    "slices": slices,
                    "repeats": repeats,
                    "processes": procs,
                    "quick": args.quick,
                },
                "references": refs,
                "rows": [asdict(r) for r in rows],
                "goals": goal_lines,
                "total_s": total,
            }
            args.out.write_text(json.dumps(payload, indent=2))
            print(f"wrote {args.out}")
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
