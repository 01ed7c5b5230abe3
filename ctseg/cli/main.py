"""The ``ctseg`` command: one click group; each command parses options and calls one library function.

``convert``, ``demo`` and ``train`` live here; ``inspect``, ``predict`` and ``evaluate`` in their own modules
(``inspect_cmd``, ``predict_cmd``, ``evaluate_cmd``), with the shared options in :mod:`ctseg.cli.options` and the
torchrun relaunch in :mod:`ctseg.cli.torchrun`.

A :class:`~ctseg.errors.CtsegError` (bad input the user can fix) becomes a one-line message and exit code 1, never a
traceback; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from ctseg._version import __version__
from ctseg.cli.options import ReadFlags, dicom_options, user_errors


def _not_pydicom_below_error(record: logging.LogRecord) -> bool:
    return not (record.name.split(".")[0] == "pydicom" and record.levelno < logging.ERROR)


#: One filter object, so that repeated set-ups (the group callback runs per invocation) add it once per handler.
_PYDICOM_BELOW_ERROR = _not_pydicom_below_error


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
    if verbose >= 2:
        # Importing pydicom sets its logger's level, so import it before asking for its debug records.
        import pydicom  # noqa: F401

        logging.getLogger("pydicom").setLevel(logging.DEBUG)
        return
    # pydicom logs recoverable header oddities of every file; they drown the user's own messages (ctseg reports
    # them once, as HEADER_REPAIRED). Filtered at the terminal's handler rather than by the pydicom logger's level,
    # which pydicom's import resets: importing it here would cost every command 0.2 s (benchmarks/startup.py).
    for handler in logging.getLogger().handlers:
        handler.addFilter(_PYDICOM_BELOW_ERROR)


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@dicom_options
@user_errors
def convert(
    input_path: Path,
    output: Path,
    overwrite: bool,
    series_uid: str | None,
    read_flags: ReadFlags,
) -> None:
    """Convert a DICOM folder (or NIfTI/NRRD/MHA file) INPUT to a HU volume OUTPUT.

    The output format follows OUTPUT's extension: .nii.gz/.nii, .nrrd or .mha. The file is written atomically.

    \b
    Examples:
      ctseg convert /data/study1 ct.nii.gz
      ctseg convert /data/study1 ct.nrrd --series 1.2.840.113619.2.55.3
      ctseg convert /data/study1 ct.nii.gz --series "*venous*"
      ctseg convert /data/study1 ct.nii.gz --prefer-kernel bone --thickness-band 0.5-2
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
    options = read_flags.options()
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
@user_errors
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
    "--export",
    "export_runtime",
    type=click.Choice(["openvino", "onnxruntime"]),
    default=None,
    help="After training, export the model for this CPU runtime (default precision and int8 calibrated on the "
    "run's cache, both gated on the validation Dice), as `ctseg export` does.",
)
@click.option(
    "--nproc",
    type=int,
    default=1,
    show_default=True,
    help="Processes (GPUs) on this machine; >1 relaunches under torchrun (DDP).",
)
@user_errors
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
    export_runtime: str | None,
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
      ctseg train /data/Dataset001 --out runs/liver --export openvino
      torchrun --nproc_per_node=4 -m ctseg train /data/Dataset001 --out runs/big --budget gpu
    """
    from ctseg.train.dataset import parse_label_subset

    subset = parse_label_subset(label_subset) if label_subset else None
    if check:
        _check_dataset_only(dataset, subset)
        return
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        from ctseg.cli.torchrun import relaunch

        raise SystemExit(relaunch(nproc, sys.argv[1:]))
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
    if export_runtime is not None and os.environ.get("RANK", "0") == "0":  # once, not per rank
        from ctseg.cli.export_cmd import export

        click.get_current_context().invoke(
            export, model_dir=result.model_dir, runtime=export_runtime, int8=True, calibration=result.run_dir
        )


def _check_dataset_only(dataset: Path, subset: dict[str, int] | None) -> None:
    """``ctseg train --check``: list the dataset's problems (exit 1 if any) and train nothing."""
    from ctseg.train.dataset import check_dataset, load_dataset

    ds = load_dataset(dataset, label_subset=subset)
    problems = check_dataset(ds)
    for p in problems:
        click.echo(p)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in {len(ds.cases)} cases")
    click.echo(f"{dataset}: {len(ds.cases)} cases, classes {ds.labels}: ready to train")


def _register() -> None:
    """Commands defined in their own modules (they import nothing from here)."""
    from ctseg.cli.evaluate_cmd import evaluate
    from ctseg.cli.export_cmd import export
    from ctseg.cli.inspect_cmd import inspect
    from ctseg.cli.predict_cmd import predict
    from ctseg.cli.serve_cmd import serve

    for command in (inspect, evaluate, predict, export, serve):
        cli.add_command(command)


_register()


def main() -> None:
    """Entry point for ``python -m ctseg``."""
    cli(prog_name="ctseg")
