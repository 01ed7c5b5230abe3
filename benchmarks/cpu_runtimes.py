"""CPU runtimes: torch fp32 / bf16 autocast vs exported OpenVINO (default precision, int8) and ONNX Runtime (fp32,
int8), pure forward and end to end, all in one run on this machine's CPU (model and ISA flags printed first).

For each network (the cpu-budget U-Net 16..128, or a trained model folder with ``--model``, and the gpu-budget
DynUNet 32..320 unless ``--quick``):

- every variant is exported with ``ctseg export``'s code (int8 calibrated on phantom CTs, or on ``--calibration``),
  and the accuracy gate's per-class Dice against torch fp32 is printed;
- pure forward: the predictor alone over every window ctseg runs on the CT (no stitching, no I/O);
- end to end: one case through ``ctseg predict``'s per-case function with the model loaded once (read NIfTI, QA,
  preprocess, sliding window, back to the input grid, mask, stats, preview).

Ratios: each variant's end to end against today's path (torch with bf16 autocast where the CPU has bf16, as
``ctseg predict`` ran before ``--runtime``), and end to end against the same runtime's pure forward (goal <= 1.15x).
Random weights measure speed only; int8 accuracy needs a trained model (``--model demo_out/model --calibration
demo_out/run``; the folder is copied, never written).

Usage: ``python benchmarks/cpu_runtimes.py [--quick] [--model DIR --calibration DATA] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctseg.config import InferConfig, ModelConfig, PreprocessConfig, to_dict
from ctseg.export import ExportData, export_variants, gather_data
from ctseg.infer import LoadedModel, load_model
from ctseg.infer.batch import PredictOptions, predict_case
from ctseg.infer.pipeline import make_predictor, window_predictor
from ctseg.infer.sliding_window import window_starts
from ctseg.io.images import read_image, write_image
from ctseg.io.model_files import save_model_files
from ctseg.model import build_model
from ctseg.phantom import make_phantom
from ctseg.preprocess import resample_to
from ctseg.preprocess.pipeline import preprocess_image
from ctseg.volume import Geometry, Volume

LABELS = {0: "background", 1: "liver", 2: "spleen", 3: "kidneys", 4: "lungs", 5: "aorta", 6: "spine"}
VARIANTS = ("torch-fp32", "torch-bf16", "openvino", "openvino-int8", "onnxruntime", "onnxruntime-int8")
ISA_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")


def cpu_description() -> dict[str, Any]:
    """CPU model, logical cores, and the ISA flags that decide bf16/int8 speed."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "")
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    return {
        "model": model or platform.processor(),
        "logical_cores": torch.get_num_threads(),
        "flags": {f: f in flags for f in ISA_FLAGS},
    }


def make_model(folder: Path, architecture: str, channels: tuple[int, ...], patch: int) -> Path:
    """A random-weight network artefact with 7 outputs (6 classes + background), at 1.5 mm."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        architecture=architecture, channels=channels, strides=((2, 2, 2),) * (len(channels) - 1), num_res_units=1
    )
    net = build_model(cfg, 1, len(LABELS))
    pre = PreprocessConfig(
        target_spacing_mm=(1.5, 1.5, 1.5), normalization="window", window_level_hu=40.0, window_width_hu=400.0
    )
    meta = {
        "config": {"model": to_dict(cfg), "preprocess": to_dict(pre), "infer": to_dict(InferConfig())},
        "labels": {str(k): v for k, v in LABELS.items()},
        "colors": {str(k): [200, 40 * k, 50] for k in LABELS if k},
        "patch_size": [patch] * 3,
        "in_channels": 1,
    }
    return save_model_files(folder, net.state_dict(), meta)


def make_ct(path: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int = 1) -> Path:
    """A phantom CT of ``shape``: built at 1/4 resolution, then linearly upsampled (cheap for large CTs)."""
    small_shape = tuple(max(8, s // 4) for s in shape)
    small_spacing = tuple(sp * s / ss for sp, s, ss in zip(spacing, shape, small_shape, strict=True))
    ct, _ = make_phantom(Geometry(small_shape, small_spacing, (0.0, 0.0, 0.0)), seed=seed)  # type: ignore[arg-type]
    origin = tuple(-(ss - s) / 2 for s, ss in zip(spacing, small_spacing, strict=True))
    target = Geometry(shape, spacing, origin)  # type: ignore[arg-type]
    big = resample_to(ct, target, fill_value=-1024.0)
    write_image(Volume(np.round(big.array).astype(np.int16), target), path)
    return path


def runtime_name(variant: str) -> str:
    """The ``--runtime`` value that runs exactly ``variant`` (``openvino`` alone would mean OpenVINO's fastest
    gate-passing export, which may be the int8 one; a benchmark of the default precision must not measure int8)."""
    if variant.startswith("torch"):
        return "torch"
    return {"openvino": "openvino-default", "onnxruntime": "onnxruntime-fp32"}.get(variant, variant)


def predictor_for(model: LoadedModel, variant: str) -> Any:
    cpu = torch.device("cpu")
    if variant.startswith("torch"):
        return make_predictor(model.network, cpu, amp=variant == "torch-bf16")
    return window_predictor(model, cpu, runtime=runtime_name(variant))


def pure_forward(model: LoadedModel, predictor: Any, image: torch.Tensor, repeats: int) -> float:
    """Median seconds of the predictor over every window of ``image`` (1, 1, Z, Y, X), nothing else."""
    p = model.patch_size
    pads = [max(0, w - n) for w, n in zip(p, image.shape[2:], strict=True)]
    if any(pads):  # a grid smaller than the window is padded, as the sliding window does
        image = torch.nn.functional.pad(image, (0, pads[2], 0, pads[1], 0, pads[0]))
    z, y, x = image.shape[2:]
    starts = [
        (a, b, c)
        for a in window_starts(max(z, p[0]), p[0], model.infer.overlap)
        for b in window_starts(max(y, p[1]), p[1], model.infer.overlap)
        for c in window_starts(max(x, p[2]), p[2], model.infer.overlap)
    ]
    predictor(torch.zeros(1, 1, *p))  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for a, b, c in starts:
            # contiguous, as the sliding window's stacked batch is (torch runs strided views slower)
            predictor(image[:, :, a : a + p[0], b : b + p[1], c : c + p[2]].contiguous())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def end_to_end(model: LoadedModel, variant: str, ct_path: Path, out: Path, repeats: int) -> float:
    """Median seconds of one case through ``ctseg predict``'s per-case path, the model loaded once."""
    model.infer = replace(model.infer, amp=variant != "torch-fp32")
    options = PredictOptions(
        formats=("nifti",), device="cpu", runtime=runtime_name(variant), overwrite=True, progress=False
    )
    times = []
    for _ in range(repeats):
        result = predict_case("case", ct_path, model, out, options)
        if result.status != "ok":
            raise RuntimeError(result.error)
        times.append(result.seconds["total"])
    return statistics.median(times)


def calibration_data(model: LoadedModel, work: Path, calibration: Path | None, quick: bool) -> ExportData:
    if calibration is not None:
        return gather_data(model, calibration, max_windows=16 if quick else 32)
    folder = work / "calibration"
    folder.mkdir(exist_ok=True)
    edge = 3 * max(model.patch_size) // 2 if quick else 2 * max(model.patch_size)
    cases = 1 if quick else 2
    for seed in range(cases):  # at the model's 1.5 mm: edge^3 voxels
        make_ct(folder / f"cal{seed}.nii", (edge // 2, edge, edge), (3.0, 1.5, 1.5), seed=10 + seed)
    return gather_data(model, folder, max_windows=16 if quick else 32, max_cases=cases)


def bench_network(
    name: str, model_dir: Path, ct_path: Path, work: Path, args: argparse.Namespace, variants: list[str]
) -> dict[str, Any]:
    model = load_model(model_dir)
    data = calibration_data(model, work, args.calibration, args.quick)
    gates: dict[str, Any] = {}
    for runtime in ("openvino", "onnxruntime"):
        t = time.perf_counter()
        for record in export_variants(model, model_dir, runtime, data, int8=True):
            gates[record.variant] = {
                "recommended": record.recommended,
                "min_ratio": record.gate["min_ratio"],
                "dice": record.gate["dice"],
            }
        print(f"  exported {runtime} (+int8) in {time.perf_counter() - t:.1f} s", flush=True)
    model = load_model(model_dir)  # now with the exports recorded
    pre = preprocess_image(read_image(ct_path), model.preprocess)
    image = torch.from_numpy(np.ascontiguousarray(pre.array))[None, None]
    rows: dict[str, dict[str, float]] = {}
    for variant in variants:
        forward = pure_forward(model, predictor_for(model, variant), image, args.repeats)
        e2e = end_to_end(model, variant, ct_path, work / f"out_{name}", args.repeats)
        rows[variant] = {"pure_forward_s": forward, "end_to_end_s": e2e}
        print(f"  {variant:17s} pure forward {forward:7.2f} s   end to end {e2e:7.2f} s", flush=True)
    from ctseg.runtime.select import choose_variant

    auto = choose_variant(model.meta, runtime="auto", device="cpu")
    return {
        "grid_zyx": list(pre.shape),
        "patch": list(model.patch_size),
        "variants": rows,
        "gates": gates,
        "auto": auto,
    }


def report(name: str, result: dict[str, Any], today: str) -> None:
    rows = result["variants"]
    base = rows[today]["end_to_end_s"]
    print(f"\n{name}: grid {result['grid_zyx']} at the model's spacing, window {result['patch']}")
    print(f"  {'variant':17s} {'forward s':>10s} {'e2e s':>8s} {'e2e/forward':>12s} {'speed-up vs ' + today:>24s}")
    for variant, r in rows.items():
        print(
            f"  {variant:17s} {r['pure_forward_s']:10.2f} {r['end_to_end_s']:8.2f} "
            f"{r['end_to_end_s'] / r['pure_forward_s']:12.2f} {base / r['end_to_end_s']:23.2f}x"
        )
    auto = result["auto"]
    auto_row = rows.get(auto) or rows.get("torch-bf16" if auto == "torch" else "")
    if auto_row is not None:
        print(f"  --runtime auto picks {auto}: end to end {base / auto_row['end_to_end_s']:.2f}x faster than {today}")
    else:
        print(f"  --runtime auto picks {auto} (not measured here)")
    for variant, g in result["gates"].items():
        dice = ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in g["dice"].items())
        verdict = "recommended" if g["recommended"] else "NOT recommended"
        print(f"  gate {variant:17s} min Dice ratio {g['min_ratio']}: {verdict} ({dice})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="A small CT and the cpu-budget network only.")
    parser.add_argument("--model", type=Path, help="A trained model folder to measure (copied, never written).")
    parser.add_argument("--calibration", type=Path, help="Its training-run folder or a folder of CTs.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed repeats per measurement (median).")
    parser.add_argument("--workdir", type=Path, help="Keep inputs here (default: a temporary folder).")
    parser.add_argument("--out", type=Path, help="Write the results as JSON.")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="Comma-separated subset of the variants (default all); today's path is always measured.",
    )
    parser.add_argument(
        "--gpu-net-variants",
        default=None,
        help="Variants for the gpu-budget network (default: --variants); 'none' skips that network.",
    )
    args = parser.parse_args()
    cpu = cpu_description()
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu["flags"].items())
    print(f"CPU: {cpu['model']}, {cpu['logical_cores']} threads; {flags}")
    today = "torch-bf16" if cpu["flags"]["avx512_bf16"] or cpu["flags"]["amx_bf16"] else "torch-fp32"
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        shape, spacing = ((40, 128, 128), (3.0, 1.5, 1.5)) if args.quick else ((300, 512, 512), (1.0, 0.7, 0.7))
        ct_path = make_ct(work / "ct.nii", shape, spacing)
        print(f"CT {shape[0]}x{shape[1]}x{shape[2]} at {spacing} mm", flush=True)
        patch = 64 if args.quick else 96
        networks: dict[str, Path] = {}
        if args.model is not None:
            networks[f"model {args.model}"] = Path(shutil.copytree(args.model, work / "trained"))
        else:
            networks["cpu-budget UNet 16..128"] = make_model(work / "cpu_net", "unet", (16, 32, 64, 128), patch)
        def chosen(text: str) -> list[str]:
            names = [v for v in text.split(",") if v]
            unknown = sorted(set(names) - set(VARIANTS))
            if unknown:
                parser.error(f"unknown variants {unknown}; expected some of {', '.join(VARIANTS)}")
            return [v for v in VARIANTS if v in names or v == today]

        wanted = {"cpu": chosen(args.variants)}
        gpu_variants = args.gpu_net_variants or args.variants
        if not args.quick and gpu_variants != "none":
            wanted["gpu"] = chosen(gpu_variants)
            networks["gpu-budget DynUNet 32..320"] = make_model(
                work / "gpu_net", "dynunet", (32, 64, 128, 256, 320), patch
            )
        results: dict[str, Any] = {"cpu": cpu, "ct_shape": shape, "today": today, "networks": {}}
        for name, folder in networks.items():
            print(f"{name}:", flush=True)
            variants = wanted["gpu"] if name.startswith("gpu") else wanted["cpu"]
            results["networks"][name] = bench_network(name.split()[0], folder, ct_path, work, args, variants)
        for name, result in results["networks"].items():
            report(name, result, today)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
