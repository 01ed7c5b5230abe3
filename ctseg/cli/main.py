"""The ``ctseg`` command: one click group; each command parses options and calls one library function.

A :class:`~ctseg.errors.CtsegError` (bad input the user can fix) becomes a one-line message and exit code 1, never a
traceback; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ctseg._version import __version__

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(func: F) -> F:
    """Turn ctseg's input errors into click errors (one line, exit 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ctseg.errors import CtsegError

        try:
            return func(*args, **kwargs)
        except CtsegError as exc:
            raise click.ClickException(str(exc)) from None
        except MemoryError:
            raise click.ClickException("out of memory; try a machine with more RAM or a smaller input") from None

    return wrapper  # type: ignore[return-value]


def _read_options(allow_gaps: bool, no_tilt_correction: bool, allow_non_ct: bool, keep_padding: bool) -> Any:
    from ctseg.io.dicom import ReadOptions

    return ReadOptions(
        correct_tilt=not no_tilt_correction,
        allow_gaps=allow_gaps,
        allow_non_ct=allow_non_ct,
        padding_hu=None if keep_padding else ReadOptions().padding_hu,
    )


def _dicom_options(func: F) -> F:
    for decorator in reversed(
        [
            click.option(
                "--series",
                "series_uid",
                metavar="UID",
                help="Read this SeriesInstanceUID instead of the one the selection rule picks (see `ctseg inspect`).",
            ),
            click.option("--allow-gaps", is_flag=True, help="Resample across missing slices instead of refusing."),
            click.option(
                "--no-tilt-correction",
                is_flag=True,
                help="Refuse gantry-tilted series instead of resampling them onto an orthogonal grid.",
            ),
            click.option("--allow-non-ct", is_flag=True, help="Read series whose Modality is not CT."),
            click.option(
                "--keep-padding",
                is_flag=True,
                help="Keep PixelPaddingValue voxels as stored (e.g. -3024) instead of setting them to air (-1024 HU).",
            ),
        ]
    ):
        func = decorator(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ctseg")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """ctseg: CT segmentation from DICOM to a reviewed mask.

    \b
    Examples:
      ctseg inspect /data/study1            # what series are there, which would be used
      ctseg convert /data/study1 ct.nii.gz  # DICOM folder -> HU volume
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # pydicom logs recoverable header oddities of every file; they drown the user's own messages.
    logging.getLogger("pydicom").setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)


def _plan_dict(plan: Any, chosen: bool) -> dict[str, Any]:
    return {
        "series_uid": plan.series_uid,
        "label": plan.label,
        "modality": plan.modality,
        "description": plan.description,
        "files": plan.n_files,
        "slices": len(plan.slices),
        "shape_zyx": list(plan.shape) if plan.shape else None,
        "spacing_zyx_mm": [round(v, 4) for v in plan.spacing_mm] if plan.spacing_mm else None,
        "orientation": "axial" if plan.usable and plan.is_axial else ("other" if plan.usable else None),
        "usable": plan.usable,
        "chosen": chosen,
        "warnings": [f"{r.value}: {m}" for r, m in plan.warnings],
        "skipped": plan.skipped,
        "error": str(plan.error) if plan.error else None,
        "error_reason": plan.error.reason.value if plan.error else None,
    }


@cli.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_dicom_options
@_user_errors
def inspect(
    path: Path,
    as_json: bool,
    series_uid: str | None,
    allow_gaps: bool,
    no_tilt_correction: bool,
    allow_non_ct: bool,
    keep_padding: bool,
) -> None:
    """List every DICOM series under PATH and say which one would be read, and why.

    For each series: modality, description, file count, shape and spacing (z, y, x), whether it is usable, and its
    warnings and errors. Selection rule: the usable axial CT series with the most slices, then the thinnest.

    \b
    Examples:
      ctseg inspect /data/study1
      ctseg inspect /data/study1 --json > series.json
    """
    from ctseg.io.dicom import inspect_dicom

    options = _read_options(allow_gaps, no_tilt_correction, allow_non_ct, keep_padding)
    found = inspect_dicom(path, options=options, series_uid=series_uid)
    report: dict[str, Any] = {
        "path": str(path),
        "series": [_plan_dict(p, p is found.chosen) for p in found.plans],
        "chosen": found.chosen.series_uid if found.chosen else None,
        "reason": found.reason,
        "ignored": [{"file": str(i.path), "reason": i.reason} for i in found.ignored],
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{path}: {len(found.plans)} series, {len(found.ignored)} file(s) ignored")
    for s in report["series"]:
        mark = "*" if s["chosen"] else " "
        status = "usable" if s["usable"] else "NOT usable"
        geo = ""
        if s["shape_zyx"]:
            geo = f"  shape {'x'.join(map(str, s['shape_zyx']))}  spacing {'x'.join(f'{v:g}' for v in s['spacing_zyx_mm'])} mm"
        click.echo(f"[{mark}] {s['label']}  {s['modality'] or '?'}  {s['files']} files{geo}  {status}")
        click.echo(f"      uid {s['series_uid']}")
        for w in s["warnings"]:
            click.echo(f"      warning {w}")
        if s["skipped"]:
            click.echo(
                f"      skipped {len(s['skipped'])} file(s): {s['skipped'][0]}"
                + (" ..." if len(s["skipped"]) > 1 else "")
            )
        if s["error"]:
            click.echo(f"      error {s['error']}")
    reasons: dict[str, int] = {}
    for item in found.ignored:
        reasons[item.reason] = reasons.get(item.reason, 0) + 1
    for reason, count in sorted(reasons.items()):
        click.echo(f"ignored {count} file(s): {reason}")
    if found.chosen:
        click.echo(f"chosen: {found.chosen.label} ({found.reason})")
    else:
        click.echo("chosen: none (no usable series)")


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@_dicom_options
@_user_errors
def convert(
    input_path: Path,
    output: Path,
    overwrite: bool,
    series_uid: str | None,
    allow_gaps: bool,
    no_tilt_correction: bool,
    allow_non_ct: bool,
    keep_padding: bool,
) -> None:
    """Convert a DICOM folder (or NIfTI/NRRD/MHA file) INPUT to a HU volume OUTPUT.

    The output format follows OUTPUT's extension: .nii.gz/.nii, .nrrd or .mha. The file is written atomically.

    \b
    Examples:
      ctseg convert /data/study1 ct.nii.gz
      ctseg convert /data/study1 ct.nrrd --series 1.2.840.113619.2.55.3
      ctseg convert ct.nii.gz ct.mha
    """
    from ctseg.errors import ImageFormatError
    from ctseg.io import convert_to_file
    from ctseg.io.images import image_format

    image_format(output)  # fail on an unknown suffix before reading anything
    if output.exists() and not overwrite:
        raise ImageFormatError(f"{output} exists; pass --overwrite to replace it")
    if output.resolve() == input_path.resolve():
        raise ImageFormatError(f"OUTPUT is the INPUT file {input_path}; inputs are never modified")
    options = _read_options(allow_gaps, no_tilt_correction, allow_non_ct, keep_padding)
    volume = convert_to_file(input_path, output, series_uid=series_uid, options=options)
    g = volume.geometry
    click.echo(
        f"wrote {output}: shape (z,y,x) {'x'.join(map(str, g.shape))}, spacing "
        f"{'x'.join(f'{v:.4g}' for v in g.spacing_mm)} mm, {volume.array.dtype} HU "
        f"{volume.array.min():.0f}..{volume.array.max():.0f}"
    )


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("demo_out"),
    show_default=True,
    help="Folder for the phantom data, the run, the model and the predictions.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the phantoms.")
@_user_errors
def demo(out_dir: Path, seed: int) -> None:
    """Run ctseg's whole main job on phantoms it generates itself (no download).

    Writes phantom CTs (training cases as NIfTI, held-out cases as DICOM series with varied spacing, orientation
    and patient position), trains a model with `ctseg train`'s defaults and a 2.5-minute time budget, predicts the
    held-out DICOM folders with `ctseg predict` (NIfTI, DICOM SEG, stats, previews), scores them with `ctseg
    evaluate`, and prints Dice per structure. About 3 minutes on a 2-core CPU.

    \b
    Examples:
      ctseg demo
      ctseg demo --out /tmp/ctseg_demo --seed 3
    """
    from ctseg.demo import run_demo

    report = run_demo(out_dir, seed=seed)
    for line in report.lines:
        click.echo(line)


def _parse_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("train.epochs=5", "model.channels=[8,16]")`` -> nested dict (values parsed as YAML)."""
    import yaml

    from ctseg.errors import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set {pair!r} is not SECTION.KEY=VALUE (e.g. train.epochs=5)")
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = yaml.safe_load(value)
    return out


def _train_overrides(
    sets: tuple[str, ...], epochs: int | None, time_budget: str | None, deterministic: bool
) -> dict[str, Any]:
    """``--set`` values plus the options that are config keys (``--epochs``, ``--time-budget``, ``--deterministic``)."""
    from ctseg.errors import ConfigError
    from ctseg.train.budget import parse_duration

    overrides = _parse_overrides(sets)
    if epochs is not None and time_budget is not None:
        raise ConfigError("--epochs and --time-budget both set the schedule; give one of them")
    train = overrides.setdefault("train", {})
    if epochs is not None:
        train["epochs"] = epochs
    if time_budget is not None:
        train["time_budget_minutes"] = parse_duration(time_budget)
    if deterministic:
        train["deterministic"] = True
    return overrides


@cli.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "run_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Run folder: plan, checkpoints, metrics, progress.png.",
)
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the trained model goes (default: models/<run folder name>).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML with keys overriding the plan (sections model, preprocess, train, infer).",
)
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Override one config value.")
@click.option(
    "--labels",
    "label_subset",
    metavar="NAME=VALUE,...",
    help="Train on some classes of a larger label map, e.g. liver=5,spleen=1.",
)
@click.option(
    "--epochs", type=int, help="Train exactly this many epochs instead of a time budget (also extends a resumed run)."
)
@click.option(
    "--time-budget",
    metavar="DURATION",
    help="Fit the schedule to finish in this time, e.g. 90s, 20m, 2h, 1d (the cpu plan's default is 15m).",
)
@click.option(
    "--budget",
    type=click.Choice(["cpu", "gpu"]),
    default="cpu",
    show_default=True,
    help="Plan a network and patch for this compute budget.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--deterministic", is_flag=True, help="Bit-for-bit repeatable on CPU (slower).")
@click.option("--check", is_flag=True, help="Only validate the dataset and exit.")
@click.option(
    "--nproc",
    type=int,
    default=1,
    show_default=True,
    help="Processes (GPUs) on this machine; >1 relaunches under torchrun (DDP).",
)
@_user_errors
def train(
    dataset: Path,
    run_dir: Path,
    model_dir: Path | None,
    config_path: Path | None,
    sets: tuple[str, ...],
    label_subset: str | None,
    epochs: int | None,
    time_budget: str | None,
    budget: str,
    device: str,
    resume: bool,
    deterministic: bool,
    check: bool,
    nproc: int,
) -> None:
    """Train a 3D U-Net on DATASET (nnU-Net v2 raw layout) and write a model folder.

    Plans the target spacing, normalisation, network and patch from the data (see plan.yaml in the run folder,
    whose comments say why), caches the preprocessed cases once, trains with Dice + cross-entropy and mixed
    precision, validates with sliding-window inference, checkpoints every epoch and on Ctrl-C/SIGTERM, and keeps
    the best model. The cpu plan trains for a time budget (15 minutes unless --time-budget or --epochs says
    otherwise): it measures its step time and fits epochs, validation cadence and learning-rate horizon to it.

    \b
    Examples:
      ctseg train /data/Dataset001 --out runs/liver --labels liver=5,spleen=1
      ctseg train /data/Dataset001 --out runs/quick --time-budget 5m
      ctseg train /data/Dataset001 --out runs/liver --resume --epochs 80
      ctseg train /data/Dataset001 --out runs/big --budget gpu --nproc 4
      torchrun --nproc_per_node=4 -m ctseg train /data/Dataset001 --out runs/big --budget gpu
    """
    from ctseg.train.dataset import check_dataset, load_dataset, parse_label_subset

    subset = parse_label_subset(label_subset) if label_subset else None
    if check:
        ds = load_dataset(dataset, label_subset=subset)
        problems = check_dataset(ds)
        for p in problems:
            click.echo(p)
        if problems:
            raise click.ClickException(f"{len(problems)} problem(s) in {len(ds.cases)} cases")
        click.echo(f"{dataset}: {len(ds.cases)} cases, classes {ds.labels}: ready to train")
        return
    if nproc > 1 and "LOCAL_RANK" not in __import__("os").environ:
        import subprocess

        args = [a for a in sys.argv[1:] if not a.startswith("--nproc")]
        if "--nproc" in sys.argv:
            i = sys.argv.index("--nproc")
            args = sys.argv[1:i] + sys.argv[i + 2 :]
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "ctseg", *args]
        raise SystemExit(subprocess.call(cmd))
    from ctseg.train.runner import TrainOptions
    from ctseg.train.runner import train as run_training

    overrides = _train_overrides(sets, epochs, time_budget, deterministic)
    if not resume and (run_dir / "checkpoint.pt").exists():
        from ctseg.errors import ConfigError

        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    result = run_training(
        TrainOptions(
            dataset=dataset,
            run_dir=run_dir,
            model_dir=model_dir,
            config_path=config_path,
            overrides=overrides,
            label_subset=subset,
            budget=budget,
            device=device,
            resume=resume,
        )
    )
    if result.interrupted:
        click.echo(f"interrupted at step {result.steps}; continue with: ctseg train {dataset} --out {run_dir} --resume")
        raise SystemExit(130)
    dice = ", ".join(f"{d:.3f}" for d in result.best_dice)
    click.echo(
        f"trained {result.epochs} epochs ({result.steps} steps) in {result.seconds / 60:.1f} min; "
        f"best validation Dice per class: {dice}"
    )
    click.echo(f"model: {result.model_dir}  run: {result.run_dir}")


@cli.command()
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
@click.option("--tta/--no-tta", default=None, help="Mirroring test-time augmentation (default: the model's).")
@click.option("--overlap", type=click.FloatRange(0.0, 0.95), default=None, help="Sliding-window overlap (0-0.95).")
@click.option("--overwrite", is_flag=True, help="Redo cases that are already complete.")
@click.option("--no-qa", is_flag=True, help="Skip the raw-HU input check.")
@click.option("--shard", default="0/1", show_default=True, metavar="I/N", help="Process every N-th case from I.")
@click.option("--subfolders", is_flag=True, help="Treat each subfolder of an INPUT folder as one case.")
@_user_errors
def predict(
    inputs: tuple[Path, ...],
    model_dir: Path,
    out_dir: Path,
    formats: str,
    device: str,
    tta: bool | None,
    overlap: float | None,
    overwrite: bool,
    no_qa: bool,
    shard: str,
    subfolders: bool,
) -> None:
    """Segment every case in INPUTS with one model and write masks, DICOM SEG, statistics and previews.

    INPUTS: DICOM folders (one case each, the series chosen by `ctseg inspect`'s rule), image files, folders of
    image files, or .txt files listing them. Per case OUT/<case>/ gets mask.nii.gz, seg.dcm, stats.json and
    preview.png; OUT/manifest.csv records every case. A failing case is recorded and the batch goes on (exit code
    1 if any failed); a rerun skips finished cases, so an interrupted batch resumes.

    \b
    Examples:
      ctseg predict /data/study1 /data/study2 --model models/abdomen --out results
      ctseg predict cases.txt --model models/abdomen --out results --format nifti
      ctseg predict /data/cohort --subfolders --model models/abdomen --out results --shard 0/2
      torchrun --nproc_per_node=4 -m ctseg predict /data/cohort --subfolders --model models/abdomen --out results
    """
    from ctseg.errors import ConfigError
    from ctseg.infer.batch import FORMATS, PredictOptions, predict_batch

    fmt = tuple(f.strip() for f in formats.split(",") if f.strip())
    bad = [f for f in fmt if f not in FORMATS]
    if bad or not fmt:
        raise ConfigError(f"--format {formats!r}: expected a comma-separated subset of {', '.join(FORMATS)}")
    try:
        index, count = (int(v) for v in shard.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise ConfigError(f"--shard {shard!r}: expected I/N with 0 <= I < N, e.g. 0/2") from None
    options = PredictOptions(
        formats=fmt,
        device=device,
        overwrite=overwrite,
        qa=not no_qa,
        shard=(index, count),
        subfolders_as_cases=subfolders,
        tta=tta,
        overlap=overlap,
    )
    results = predict_batch(list(inputs), model_dir, out_dir, options)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    for r in results:
        if r.status == "failed":
            click.echo(f"FAILED {r.case}: {r.error}", err=True)
    click.echo(
        f"{counts['ok']} done, {counts['skipped']} already complete, {counts['failed']} failed; "
        f"manifest: {out_dir / 'manifest.csv'}"
    )
    if counts["failed"]:
        raise SystemExit(1)


def _register() -> None:
    """Commands defined in their own modules (they import nothing from here)."""
    from ctseg.cli.evaluate_cmd import evaluate

    cli.add_command(evaluate)


_register()


def main() -> None:
    """Entry point for ``python -m ctseg``."""
    cli(prog_name="ctseg")
