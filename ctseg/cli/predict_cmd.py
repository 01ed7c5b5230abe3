"""``ctseg predict``: segment a batch of cases with one model; DICOM input takes ``convert``'s read options.

Registered on the group in :mod:`ctseg.cli.main`; this module imports nothing from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ctseg.cli.options import ReadFlags, dicom_options, user_errors

if TYPE_CHECKING:
    from ctseg.infer.case import CaseResult, CaseSpec


def _parse_formats(formats: str) -> tuple[str, ...]:
    from ctseg.errors import ConfigError
    from ctseg.infer.batch import FORMATS

    fmt = tuple(f.strip() for f in formats.split(",") if f.strip())
    bad = [f for f in fmt if f not in FORMATS]
    if bad or not fmt:
        raise ConfigError(f"--format {formats!r}: expected a comma-separated subset of {', '.join(FORMATS)}")
    return fmt


def _shard(shard: str | None) -> tuple[int, int]:
    """``--shard`` when given, else the scheduler's array index (only the CLI reads the environment)."""
    if shard is not None:
        return _parse_shard(shard)
    from ctseg.cli.shard import shard_from_env

    return shard_from_env(os.environ) or (0, 1)


def _parse_shard(shard: str) -> tuple[int, int]:
    from ctseg.errors import ConfigError

    try:
        index, count = (int(v) for v in shard.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise ConfigError(f"--shard {shard!r}: expected I/N with 0 <= I < N, e.g. 0/2") from None
    return index, count


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--model",
    "model_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Model folder (model.pt + model.json).",
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option(
    "--format",
    "formats",
    default="nifti,dicom-seg",
    show_default=True,
    help="Comma-separated outputs: nifti, dicom-seg (DICOM SEG only for DICOM input).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--runtime",
    type=click.Choice(
        [
            "auto",
            "torch",
            "openvino",
            "onnxruntime",
            "openvino-int8",
            "onnxruntime-int8",
            "openvino-default",
            "onnxruntime-fp32",
        ]
    ),
    default="auto",
    show_default=True,
    help="auto: the fastest `ctseg export` variant that passed its accuracy gate (CPU only), else torch. "
    "openvino / onnxruntime: that runtime's fastest export; openvino-int8, openvino-default, onnxruntime-int8, "
    "onnxruntime-fp32: exactly that export.",
)
@click.option("--tta/--no-tta", default=None, help="Mirroring test-time augmentation (default: the model's).")
@click.option("--overlap", type=click.FloatRange(0.0, 0.95), default=None, help="Sliding-window overlap (0-0.95).")
@click.option("--overwrite", is_flag=True, help="Redo cases that are already complete.")
@click.option("--no-qa", is_flag=True, help="Skip the raw-HU input check.")
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="Process every N-th case from I (default: from JOB_COMPLETION_INDEX/JOB_COMPLETIONS of a Kubernetes "
    "Indexed Job or SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT of a Slurm array, else 0/1).",
)
@click.option("--subfolders", is_flag=True, help="Treat each subfolder of an INPUT folder as one case.")
@click.option(
    "--all-series",
    is_flag=True,
    help="One case per usable CT series of each study, instead of the one series the selection rule picks.",
)
@dicom_options
@user_errors
def predict(
    inputs: tuple[Path, ...],
    model_dir: Path,
    out_dir: Path,
    formats: str,
    device: str,
    runtime: str,
    tta: bool | None,
    overlap: float | None,
    overwrite: bool,
    no_qa: bool,
    shard: str | None,
    subfolders: bool,
    all_series: bool,
    series_uid: str | None,
    read_flags: ReadFlags,
) -> None:
    """Segment every case in INPUTS with one model and write masks, DICOM SEG, statistics and previews.

    INPUTS: DICOM folders, image files, folders of image files, or .txt files listing inputs (one case per line).
    A DICOM folder gives one case per study found in it (StudyInstanceUID; the folder when UIDs are blank), the
    series chosen by `ctseg inspect`'s rule (preferring the kernel class the model declares, else soft tissue);
    --all-series makes one case per usable CT series. Case names come from file and folder names (or a short hash
    of the UID), made safe and unique; the list is printed first.

    Per case OUT/<case>/ gets mask.nii.gz, seg.dcm, stats.json, preview.png and case.json, committed together (an
    interrupted run leaves each case wholly old or wholly new). OUT/manifest.csv records every case and is updated
    after each. A failing case is recorded and the batch goes on (exit code 1 if any failed); Ctrl-C or SIGTERM
    finishes the current case, writes the manifest and exits 130/143. A rerun skips a case only when case.json
    records the same input (path, series, instances) and model; a different one is refused unless --overwrite.
    --out must not be or lie inside an input. DICOM input is read as `ctseg convert` reads it, with the same
    options (--series, --allow-gaps, --no-tilt-correction, ...).

    \b
    Examples:
      ctseg predict /data/study1 /data/study2 --model models/abdomen --out results
      ctseg predict cases.txt --model models/abdomen --out results --format nifti
      ctseg predict /data/study1 --model models/abdomen --out results --runtime openvino --device cpu
      ctseg predict /data/cohort --model models/abdomen --out results --all-series
      ctseg predict /data/cohort --subfolders --model models/abdomen --out results --shard 0/2
      ctseg predict /data/study1 --model models/abdomen --out results --series 1.2.840.113619.2.55.3 --allow-gaps
      ctseg predict /data/study1 --model models/abdomen --out results --series "*venous*" --thickness-band 0.5-3
      torchrun --nproc_per_node=4 -m ctseg predict /data/cohort --subfolders --model models/abdomen --out results
    """
    from ctseg.infer.batch import BatchInterrupted, PredictOptions, predict_batch
    from ctseg.io.model_files import read_model_card

    # By default, the kernel class the model was trained on, when its model.json declares one.
    read = read_flags.options(default_kernel=read_model_card(model_dir).kernel_class or None)
    options = PredictOptions(
        series_uid=series_uid,
        read=read,
        formats=_parse_formats(formats),
        device=device,
        runtime=runtime,
        overwrite=overwrite,
        qa=not no_qa,
        shard=_shard(shard),
        subfolders_as_cases=subfolders,
        all_series=all_series,
        tta=tta,
        overlap=overlap,
    )
    try:
        results = predict_batch(list(inputs), model_dir, out_dir, options, on_cases=_print_cases)
    except BatchInterrupted as stop:
        _summary(stop.results, out_dir, prefix=f"stopped by signal {stop.signum}: ")
        raise SystemExit(stop.exit_code) from None
    if _summary(results, out_dir):
        raise SystemExit(1)


#: Cases listed one per line before the work starts; beyond this only the count and the first ones.
MAX_LISTED = 50


def _print_cases(cases: list[CaseSpec]) -> None:
    from ctseg.io.paths import printable

    click.echo(f"{len(cases)} case(s):")
    for spec in cases[:MAX_LISTED]:
        series = f"  [series {spec.series_uid}]" if spec.series_uid else ""
        click.echo(f"  {spec.name} <- {printable(spec.path)}{series}")
    if len(cases) > MAX_LISTED:
        click.echo(f"  ... and {len(cases) - MAX_LISTED} more")


def _summary(results: list[CaseResult], out_dir: Path, *, prefix: str = "") -> int:
    """Print the failures and the counts; return the number of failed cases."""
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    for r in results:
        if r.status == "failed":
            click.echo(f"FAILED {r.case}: {r.error}", err=True)
    click.echo(
        f"{prefix}{counts['ok']} done, {counts['skipped']} already complete, {counts['failed']} failed; "
        f"manifest: {out_dir / 'manifest.csv'}"
    )
    return counts["failed"]
