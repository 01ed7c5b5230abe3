"""int8 accuracy on a trained model, the user's way: export, predict held-out cases with every variant, evaluate.

For a trained model folder (copied, never written), its training-run folder (calibration windows) and held-out cases
with reference label maps:

1. ``ctseg export``'s code writes the OpenVINO (default precision and int8, NNCF) and ONNX Runtime (fp32 and int8,
   static QDQ) variants, int8 calibrated on the run's cached training cases; the accuracy gate's verdict is printed;
2. every held-out case is segmented by ``ctseg predict``'s per-case function with each variant and with torch fp32
   (autocast off) and torch bf16 autocast;
3. ``ctseg evaluate``'s code scores each variant against the references: per-class Dice and the ratio to torch fp32
   (MLPerf's rule for a quantised 3D U-Net: >= 0.99).

The CPU model and ISA flags are printed first.

Usage::

    python -m ctseg demo --out demo_out
    python benchmarks/int8_accuracy.py --model demo_out/model --run demo_out/run \\
        --cases demo_out/data/dicom --reference demo_out/data/reference
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_runtimes import cpu_description, runtime_name  # noqa: E402

from ctseg.evaluate.report import evaluate_folders  # noqa: E402
from ctseg.export import export_variants, gather_data  # noqa: E402
from ctseg.infer import load_model  # noqa: E402
from ctseg.infer.batch import PredictOptions, predict_case  # noqa: E402

VARIANTS = ("torch-fp32", "torch-bf16", "openvino", "openvino-int8", "onnxruntime", "onnxruntime-int8")


def case_inputs(folder: Path) -> dict[str, Path]:
    """Case name -> input: sub-folders (DICOM series) or image files (``_0000`` suffix dropped)."""
    out = {}
    for p in sorted(folder.iterdir()):
        name = p.name.split(".")[0].removesuffix("_0000")
        out[name] = p
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="Trained model folder (copied).")
    parser.add_argument("--run", type=Path, required=True, help="Its training-run folder (calibration).")
    parser.add_argument("--cases", type=Path, required=True, help="Folder of held-out cases (DICOM folders or images).")
    parser.add_argument("--reference", type=Path, required=True, help="Folder of their reference label maps.")
    args = parser.parse_args()
    cpu = cpu_description()
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu["flags"].items())
    print(f"CPU: {cpu['model']}, {cpu['logical_cores']} threads; {flags}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = Path(shutil.copytree(args.model, work / "model"))
        model = load_model(model_dir)
        data = gather_data(model, args.run)
        for runtime in ("openvino", "onnxruntime"):
            t = time.perf_counter()
            for record in export_variants(model, model_dir, runtime, data, int8=True):
                verdict = "recommended" if record.recommended else "NOT recommended"
                print(f"gate {record.variant:17s} min Dice ratio {record.gate['min_ratio']}: {verdict}", flush=True)
            print(f"  exported {runtime} (+int8) in {time.perf_counter() - t:.1f} s", flush=True)
        model = load_model(model_dir)
        labels = {k: v for k, v in model.labels.items() if k != 0}
        cases = case_inputs(args.cases)
        dice: dict[str, dict[str, float]] = {}
        for variant in VARIANTS:
            model.infer = replace(model.infer, amp=variant != "torch-fp32")
            out = work / "pred" / variant
            options = PredictOptions(
                formats=("nifti",), device="cpu", runtime=runtime_name(variant), overwrite=True, progress=False
            )
            t = time.perf_counter()
            for name, path in cases.items():
                result = predict_case(name, path, model, out, options)
                if result.status != "ok":
                    raise SystemExit(f"{variant} {name}: {result.error}")
            report = evaluate_folders(out, args.reference, labels=labels)
            dice[variant] = {s.label: float(s.dice_mean) for s in report.summary}
            print(f"{variant:17s} {len(cases)} cases in {time.perf_counter() - t:.1f} s", flush=True)
    names = list(labels.values())
    print(f"\nheld-out Dice ({len(cases)} cases) and ratio to torch-fp32 per class")
    print(f"{'variant':17s} " + " ".join(f"{n[:12]:>12s}" for n in names) + f" {'min ratio':>10s}")
    for variant, row in dice.items():
        ratios = [row[n] / dice["torch-fp32"][n] if dice["torch-fp32"][n] > 0 else float("nan") for n in names]
        print(f"{variant:17s} " + " ".join(f"{row[n]:12.4f}" for n in names) + f" {min(ratios):10.4f}")


if __name__ == "__main__":
    main()
