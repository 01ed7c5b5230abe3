"""``ctseg evaluate``: score predicted label maps against references (Dice, HD95, NSD, volumes).

Registered on the group in :mod:`ctseg.cli.main`; this module imports nothing from it (no import cycle) and
imports the library lazily, inside the command, so ``ctseg --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("evaluate")
@click.argument("pred", type=click.Path(exists=True, path_type=Path))
@click.argument("ref", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write per case and class rows to this CSV, and the per-class summary beside it (<stem>_summary.csv).",
)
@click.option(
    "--nsd-tolerance",
    "nsd_tolerance_mm",
    type=click.FloatRange(min=0.0),
    default=2.0,
    show_default=True,
    help="Tolerance of the normalised surface Dice, mm.",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Class names and the classes to score, from a dataset.json or model.json (or a folder holding one). "
    "Default: every non-zero value found, named class_N.",
)
def evaluate(pred: Path, ref: Path, out: Path | None, nsd_tolerance_mm: float, labels: Path | None) -> None:
    """Score predicted label maps PRED against reference label maps REF.

    PRED and REF are each a label file (.nii.gz, .nii, .nrrd, .mha), a folder of them, or a folder of
    `ctseg predict` outputs (PRED/<case>/mask.nii.gz). Cases match by file name without the suffix and a
    trailing _0000 or _mask. Each class is scored in world space: a prediction on another grid is resampled onto
    the reference grid (nearest neighbour). Prints mean and 95% CI (seeded bootstrap percentile) per class of
    Dice, HD95 (mm, finite values) and normalised surface Dice; a reference without prediction counts as a
    failure (Dice 0).

    \b
    Examples:
      ctseg evaluate preds/ Dataset001/labelsTr --out metrics.csv
      ctseg evaluate preds/ refs/ --labels models/liver/model.json --nsd-tolerance 1.0
      ctseg evaluate case1_pred.nii.gz case1_ref.nrrd
    """
    from ctseg.errors import CtsegError
    from ctseg.evaluate import evaluate_folders, format_summary, read_label_names

    try:
        names = read_label_names(labels) if labels is not None else None
        report = evaluate_folders(pred, ref, out=out, labels=names, nsd_tolerance_mm=nsd_tolerance_mm)
    except CtsegError as exc:
        # Bad input the user can fix: one line, exit 1, no traceback (as ctseg.cli.main._user_errors does).
        raise click.ClickException(str(exc)) from None
    except MemoryError:
        raise click.ClickException("out of memory; try a machine with more RAM or fewer classes at once") from None
    click.echo(format_summary(report))
    if report.out is not None:
        click.echo(f"wrote {report.out} and {report.summary_out}")
