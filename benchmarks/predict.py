"""Inference benchmark: ctseg predict end to end vs MONAI sliding window vs the pure forward time, and memory.

All in one run, on inputs this script makes (phantom CTs, random-weight networks of realistic size):

1. Speed, on a 300x512x512 CT at (1.0, 0.7, 0.7) mm (200x238x238 at the model's 1.5 mm):
   - pure forward: the network alone over the same windows ctseg runs (bf16 autocast on CPU), no stitching;
   - MONAI ``sliding_window_inference`` (Gaussian, overlap 0.5) on the already-preprocessed tensor, same weights;
   - ctseg ``predict_batch`` end to end in-process (read NIfTI, QA, resample, normalise, sliding window, return to
     the source grid, write mask.nii.gz, stats.json, preview.png), model already loaded;
   - the ``ctseg predict`` command as a process (adds Python/torch start-up and model loading).
   Goal: ctseg end to end <= 1.15x the pure forward time.
2. Memory: ``ctseg predict`` on a 1000x512x512 CT with a 6-class model, peak RSS of the process (goal < 4 GiB), with
   each runtime: torch, and the OpenVINO and ONNX Runtime exports (default precision and int8).
3. Seconds per case with the model loaded once (one ``ctseg predict`` over 3 cases) vs reloaded per case.

Usage: ``python benchmarks/predict.py [--quick] [--workdir DIR] [--out results.json]``. Printing is this script's
job; the library logs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctseg.infer import load_model
from ctseg.infer.batch import PredictOptions, predict_batch
from ctseg.infer.pipeline import make_predictor
from ctseg.infer.sliding_window import window_starts
from ctseg.preprocess.pipeline import preprocess_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_runtimes  # noqa: E402  (the model and CT makers, shared with the runtime benchmark)


def make_model(folder: Path, channels: tuple[int, ...], patch: int) -> Path:
    """A random-weight MONAI UNet artefact with 7 outputs (6 classes + background): cpu_runtimes' maker."""
    return cpu_runtimes.make_model(folder, "unet", channels, patch)


make_ct = cpu_runtimes.make_ct


def timed(fn: Any, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def speed(work: Path, quick: bool) -> dict[str, float]:
    shape = (100, 256, 256) if quick else (300, 512, 512)
    spacing = (3.0, 1.4, 1.4) if quick else (1.0, 0.7, 0.7)
    ct_path = make_ct(work / "ct.nii", shape, spacing)
    model_dir = make_model(work / "model_big", (32, 64, 128, 256, 320), 96)
    model = load_model(model_dir)
    from ctseg.io import read_image

    pre = preprocess_image(read_image(ct_path), model.preprocess)
    image = torch.from_numpy(np.ascontiguousarray(pre.array))[None, None]
    patch = model.patch_size
    z, y, x = pre.shape
    starts = [
        (a, b, c)
        for a in window_starts(max(z, patch[0]), patch[0], 0.5)
        for b in window_starts(max(y, patch[1]), patch[1], 0.5)
        for c in window_starts(max(x, patch[2]), patch[2], 0.5)
    ]
    predictor = make_predictor(model.network, torch.device("cpu"), amp=True)
    window = torch.zeros(1, 1, *patch)
    predictor(window)  # warm-up (oneDNN kernels)

    def pure() -> None:
        for a, b, c in starts:
            predictor(image[:, :, a : a + patch[0], b : b + patch[1], c : c + patch[2]])

    from monai.inferers import sliding_window_inference

    def monai_sw() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            sliding_window_inference(image, patch, 1, model.network, overlap=0.5, mode="gaussian")

    def ctseg_e2e() -> None:
        predict_batch(
            [ct_path],
            model_dir,
            work / "out_e2e",
            PredictOptions(formats=("nifti",), device="cpu", overwrite=True, progress=False),
        )

    def ctseg_cli() -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ctseg",
                "predict",
                str(ct_path),
                "--model",
                str(model_dir),
                "--out",
                str(work / "out_cli"),
                "--format",
                "nifti",
                "--device",
                "cpu",
                "--overwrite",
            ],
            check=True,
            capture_output=True,
        )

    # Best of two for each in-process method, so warm-up and machine noise favour none of them.
    results = {
        "windows": float(len(starts)),
        "pure_forward_s": timed(pure, 2),
        "monai_sliding_window_s": timed(monai_sw, 2),
        "ctseg_end_to_end_s": timed(ctseg_e2e, 2),
        "ctseg_cli_s": timed(ctseg_cli),
    }
    return results


#: ``--runtime`` values whose peak memory is measured (the exported ones after ``ctseg export``'s code ran).
MEMORY_RUNTIMES = ("torch", "openvino-default", "openvino-int8", "onnxruntime-fp32", "onnxruntime-int8")


def _export_all(model_dir: Path, work: Path) -> None:
    """OpenVINO and ONNX Runtime variants (int8 calibrated on phantom CTs) of the memory test's model."""
    from cpu_runtimes import calibration_data

    from ctseg.export import export_variants
    from ctseg.infer import load_model

    model = load_model(model_dir)
    data = calibration_data(model, work, None, True)
    for runtime in ("openvino", "onnxruntime"):
        export_variants(model, model_dir, runtime, data, int8=True)


def _peak(ct_path: Path, model_dir: Path, out: Path, runtime: str) -> tuple[float, float]:
    """Peak RSS (GiB) and seconds of ``ctseg predict --runtime RUNTIME`` in a fresh process."""
    code = (
        "import resource, sys\n"
        "from ctseg.cli.main import cli\n"
        "try:\n"
        f"    cli(['predict', {str(ct_path)!r}, '--model', {str(model_dir)!r}, '--out', {str(out)!r},"
        f" '--format', 'nifti', '--device', 'cpu', '--overwrite', '--runtime', {runtime!r}], standalone_mode=False)\n"
        "finally:\n"
        # VmHWM is this process's own peak; ru_maxrss would include the parent's RSS inherited through fork/exec.
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "    print('PEAK_KB', hwm, file=sys.stderr)\n"
    )
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    peak_kb = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_KB")]
    if proc.returncode != 0 or not peak_kb:
        raise RuntimeError(proc.stderr[-3000:])
    return peak_kb[0] / 2**20, seconds


def memory(work: Path, quick: bool, runtimes: tuple[str, ...] = MEMORY_RUNTIMES) -> dict[str, Any]:
    """Peak RSS of ``ctseg predict`` on a 1000x512x512 CT with each runtime (a fresh process each)."""
    shape = (250, 256, 256) if quick else (1000, 512, 512)
    spacing = (2.0, 1.4, 1.4) if quick else (1.0, 0.7, 0.7)
    ct_path = make_ct(work / "long_ct.nii", shape, spacing)
    model_dir = make_model(work / "model_small", (16, 32, 64, 128), 64)
    if any(r != "torch" for r in runtimes):
        _export_all(model_dir, work)
    peaks = {}
    for runtime in runtimes:
        gib, seconds = _peak(ct_path, model_dir, work / "out_mem", runtime)
        peaks[runtime] = {"peak_rss_gib": gib, "seconds": seconds}
        print(f"   --runtime {runtime:17s} peak RSS {gib:.2f} GiB in {seconds:.0f} s", flush=True)
    return {
        "shape_z": float(shape[0]),
        "peak_rss_gib": max(v["peak_rss_gib"] for v in peaks.values()),
        "runtimes": peaks,
        "input_gib": float(np.prod(shape)) * 2 / 2**30,
    }


def per_case(work: Path, quick: bool) -> dict[str, float]:
    model_dir = make_model(work / "model_small", (16, 32, 64, 128), 64)
    cases = [make_ct(work / f"case{k}.nii", (60, 128, 128), (3.0, 2.0, 2.0)) for k in range(3)]
    base = [
        sys.executable,
        "-m",
        "ctseg",
        "predict",
        "--model",
        str(model_dir),
        "--format",
        "nifti",
        "--device",
        "cpu",
        "--overwrite",
    ]
    once = timed(
        lambda: subprocess.run(
            [*base[:4], *map(str, cases), *base[4:], "--out", str(work / "o1")], check=True, capture_output=True
        )
    )
    each = timed(
        lambda: [
            subprocess.run([*base[:4], str(c), *base[4:], "--out", str(work / "o2")], check=True, capture_output=True)
            for c in cases
        ]
    )
    return {"loaded_once_s_per_case": once / len(cases), "reloaded_s_per_case": each / len(cases)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs (a smoke run)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--only", choices=["speed", "memory", "per_case"], default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ctseg-bench-predict-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"threads": torch.get_num_threads(), "quick": args.quick}
    if args.only in (None, "speed"):
        s = speed(work, args.quick)
        results["speed"] = s
        print(f"1: speed ({int(s['windows'])} windows of 96^3, MONAI UNet 32..320, bf16, overlap 0.5)")
        for key in ("pure_forward_s", "monai_sliding_window_s", "ctseg_end_to_end_s", "ctseg_cli_s"):
            print(f"   {key:28s} {s[key]:8.2f} s  {s[key] / s['pure_forward_s']:5.2f}x pure forward")
        ok = s["ctseg_end_to_end_s"] / s["pure_forward_s"] <= 1.15
        print(f"   {'PASS' if ok else 'FAIL'} ctseg end to end / pure forward <= 1.15")
    if args.only in (None, "memory"):
        m = memory(work, args.quick)
        results["memory"] = m
        print(
            f"2: memory: ctseg predict on a {int(m['shape_z'])}x512x512 CT ({m['input_gib']:.2f} GiB int16), 6 classes:"
            f" largest peak RSS over {len(m['runtimes'])} runtimes {m['peak_rss_gib']:.2f} GiB"
            f"  {'PASS' if m['peak_rss_gib'] < 4 else 'FAIL'} (< 4 GiB)"
        )
    if args.only in (None, "per_case"):
        p = per_case(work, args.quick)
        results["per_case"] = p
        print(
            f"3: seconds per case: model loaded once {p['loaded_once_s_per_case']:.2f} s, reloaded per case "
            f"{p['reloaded_s_per_case']:.2f} s ({p['reloaded_s_per_case'] / p['loaded_once_s_per_case']:.2f}x)"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(f"peak RSS of this script: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
