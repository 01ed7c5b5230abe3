"""``ctseg export``: the network of a model folder for OpenVINO or ONNX Runtime (optionally int8), gated on Dice.

Registered on the group in :mod:`ctseg.cli.main`; this module imports nothing from it (no import cycle) and
imports the library lazily, inside the command, so ``ctseg --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--runtime",
    type=click.Choice(["openvino", "onnxruntime"]),
    required=True,
    help="The CPU runtime to export for (needs `pip install 'ctseg[cpu-fast]'`).",
)
@click.option("--int8", is_flag=True, help="Also write an int8 variant (post-training static quantisation).")
@click.option(
    "--calibration",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="A training-run folder (its cached cases calibrate, its validation cases evaluate) or a folder of CTs "
    "(DICOM folders or NIfTI/NRRD/MHA files). Needed for --int8.",
)
@click.option(
    "--calibration-windows",
    type=click.IntRange(1, 10_000),
    default=32,
    show_default=True,
    help="Windows of the calibration pass.",
)
def export(model_dir: Path, runtime: str, int8: bool, calibration: Path | None, calibration_windows: int) -> None:
    """Export the network of MODEL_DIR for a faster CPU runtime, next to model.pt.

    Every variant written is evaluated against the torch fp32 model (per-class Dice on the run's validation cases,
    or on the calibration CTs with the fp32 prediction as reference; on a phantom without --calibration). A variant
    under 0.99x the fp32 Dice for any class is recorded as not recommended and never chosen by
    `ctseg predict --runtime auto`. torch's own time per window is recorded too: `auto` keeps torch unless an
    export is clearly faster (on some CPUs torch's bf16 is as fast as the exports). The files are listed with
    their sha256 in model.json and verified on loading.

    \b
    Examples:
      ctseg export models/abdomen --runtime openvino
      ctseg export models/abdomen --runtime openvino --int8 --calibration runs/abdomen
      ctseg export models/abdomen --runtime onnxruntime --int8 --calibration /data/calibration_cts
      ctseg predict /data/study1 --model models/abdomen --out results --runtime auto
    """
    from ctseg.errors import CtsegError
    from ctseg.export import export_model

    try:
        records = export_model(
            model_dir, runtime=runtime, int8=int8, calibration=calibration, max_windows=calibration_windows
        )
    except CtsegError as exc:
        # Bad input the user can fix: one line, exit 1, no traceback (as ctseg.cli.main._user_errors does).
        raise click.ClickException(str(exc)) from None
    except ImportError as exc:
        raise click.ClickException(str(exc)) from None
    for r in records:
        dice = ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} -" for k, v in r.gate["dice"].items())
        verdict = "recommended" if r.recommended else "NOT recommended (under 0.99x fp32 Dice)"
        seconds = f"{r.window_seconds:.3f} s/window" if r.window_seconds is not None else ""
        fraction = r.speed_vs_torch()
        if fraction is not None:
            seconds += f" ({fraction:.2f}x torch's time, timed alternately)"
        click.echo(f"{r.variant}: {verdict}; Dice {dice}; {seconds}")
    import json

    from ctseg.runtime import choose_variant
    from ctseg.runtime.variants import torch_window_seconds

    meta = json.loads((model_dir / "model.json").read_text())
    torch_seconds = torch_window_seconds(meta)
    if torch_seconds is not None:
        click.echo(f"torch (this CPU, the model's precision): {torch_seconds:.3f} s/window")
    click.echo(
        f"recorded in {model_dir / 'model.json'}; `--runtime auto` on a CPU will use: "
        f"{choose_variant(meta, runtime='auto', device='cpu')}"
    )
