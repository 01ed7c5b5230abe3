"""``ctseg predict`` over many cases: the model loaded once, failures isolated, finished cases skipped on rerun.

Per case, ``OUT/<case>/`` receives ``mask.nii.gz``, ``seg.dcm`` (DICOM input), ``stats.json`` and ``preview.png``,
each written atomically, and last ``case.json`` listing them: a case is finished when ``case.json`` says ``ok`` and
every file it lists exists. ``OUT/manifest.csv`` has one row per case (input, series UID, status, error, seconds
per phase, outputs). Under torchrun (or ``--shard i/n``) each process takes every n-th case and rank 0 merges the
per-shard manifests into ``manifest.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctseg.errors import CtsegError
from ctseg.infer.model import LoadedModel, load_model
from ctseg.infer.pipeline import resolve_device, segment
from ctseg.infer.preview import write_preview
from ctseg.infer.qa import check_ct_input
from ctseg.infer.stats import structure_stats
from ctseg.io import is_image_file
from ctseg.io.atomic import full_suffix, write_text_atomic
from ctseg.io.images import IMAGE_SUFFIXES, write_image
from ctseg.volume import Volume

log = logging.getLogger(__name__)

FORMATS = ("nifti", "dicom-seg")
MANIFEST_FIELDS = [
    "case",
    "input",
    "series_uid",
    "status",
    "error",
    "warnings",
    "read_s",
    "infer_s",
    "write_s",
    "total_s",
    "outputs",
]


@dataclass(frozen=True)
class PredictOptions:
    """Switches of ``ctseg predict``."""

    formats: tuple[str, ...] = FORMATS
    device: str = "auto"
    runtime: str = "auto"
    overwrite: bool = False
    qa: bool = True
    shard: tuple[int, int] = (0, 1)
    subfolders_as_cases: bool = False
    tta: bool | None = None
    overlap: float | None = None
    progress: bool = True


@dataclass
class CaseResult:
    """One manifest row."""

    case: str
    input: str
    status: str = "ok"
    series_uid: str = ""
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    def row(self) -> dict[str, str]:
        """The CSV row."""
        return {
            "case": self.case,
            "input": self.input,
            "series_uid": self.series_uid,
            "status": self.status,
            "error": self.error,
            "warnings": " | ".join(self.warnings),
            **{f"{k}_s": f"{self.seconds.get(k, 0.0):.2f}" for k in ("read", "infer", "write", "total")},
            "outputs": ";".join(self.outputs),
        }


def expand_inputs(inputs: list[Path], *, subfolders_as_cases: bool = False) -> list[tuple[str, Path]]:
    """``(case name, path)`` pairs: a ``.txt`` lists paths (one per line, ``#`` comments); a folder of image files
    gives one case per file; any other folder is one DICOM case (or one per subfolder with ``subfolders_as_cases``).
    Names are the file/folder names without extension, made unique with a numeric suffix."""
    paths: list[Path] = []
    for p in inputs:
        p = Path(p)
        if p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line)
                    paths.append(q if q.is_absolute() else (p.parent / q))
        elif p.is_dir() and subfolders_as_cases:
            paths.extend(sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")))
        elif p.is_dir() and any(is_image_file(f) for f in p.iterdir()):
            paths.extend(sorted(f for f in p.iterdir() if is_image_file(f)))
        else:
            paths.append(p)
    out: list[tuple[str, Path]] = []
    seen: dict[str, int] = {}
    for p in paths:
        suffix = full_suffix(p) if p.is_file() and full_suffix(p) in IMAGE_SUFFIXES else ""
        name = p.name[: len(p.name) - len(suffix)] if suffix else p.name
        name = name.removesuffix("_0000") or "case"
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}_{seen[name]}", p))
    return out


def is_complete(case_dir: Path) -> bool:
    """Whether a case finished: ``case.json`` says ok and lists only existing files."""
    marker = case_dir / "case.json"
    if not marker.is_file():
        return False
    try:
        record = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    return record.get("status") == "ok" and all((case_dir / name).is_file() for name in record.get("outputs", []))


def _read_input(path: Path) -> tuple[Volume, Any]:
    """The HU volume and, for DICOM input, the series plan (for DICOM SEG references)."""
    from ctseg.io.dicom import inspect_dicom
    from ctseg.io.dicom.stack import assemble_volume

    if is_image_file(path):
        from ctseg.io import read_image

        return read_image(path), None
    if not path.exists():
        raise CtsegError(f"input {path} does not exist")
    found = inspect_dicom(path)
    if found.chosen is None:
        from ctseg.io.dicom import read_dicom_series

        return read_dicom_series(path), None  # raises the specific reason
    return assemble_volume(found.chosen), found.chosen


def predict_case(name: str, path: Path, model: LoadedModel, out_dir: Path, options: PredictOptions) -> CaseResult:
    """Segment one case and write its outputs; a user-level failure is recorded, never raised."""
    result = CaseResult(name, str(path))
    case_dir = out_dir / name
    t0 = time.perf_counter()
    try:
        volume, plan = _read_input(path)
        result.series_uid = plan.series_uid if plan is not None else ""
        if plan is not None:
            result.warnings.extend(f"{r.value}: {m}" for r, m in plan.warnings)
        if options.qa:
            result.warnings.extend(check_ct_input(volume))
        t1 = time.perf_counter()
        cfg = model.infer
        if options.tta is not None or options.overlap is not None:
            from dataclasses import replace

            cfg = replace(
                cfg,
                tta=cfg.tta if options.tta is None else options.tta,
                overlap=cfg.overlap if options.overlap is None else options.overlap,
            )
        labels = segment(volume, model, config=cfg, device=options.device, runtime=options.runtime)
        t2 = time.perf_counter()
        case_dir.mkdir(parents=True, exist_ok=True)
        if "nifti" in options.formats:
            write_image(labels, case_dir / "mask.nii.gz")
            result.outputs.append("mask.nii.gz")
        if "dicom-seg" in options.formats and plan is not None:
            from ctseg.io.dicom_seg import write_dicom_seg

            try:
                write_dicom_seg(labels, plan, case_dir / "seg.dcm", names=model.labels, colors=model.colors)
                result.outputs.append("seg.dcm")
            except CtsegError as exc:  # e.g. a tilt-corrected grid has no source slices to reference
                result.warnings.append(f"no DICOM SEG: {exc}")
        stats = structure_stats(labels, volume, {k: v for k, v in model.labels.items() if k})
        write_text_atomic(case_dir / "stats.json", json.dumps(stats, indent=2))
        write_preview(volume, labels, model.colors, case_dir / "preview.png", title=name)
        result.outputs += ["stats.json", "preview.png"]
        t3 = time.perf_counter()
        result.seconds = {"read": t1 - t0, "infer": t2 - t1, "write": t3 - t2, "total": t3 - t0}
        record = {
            "status": "ok",
            "input": str(path),
            "series_uid": result.series_uid,
            "outputs": result.outputs,
            "warnings": result.warnings,
            "seconds": result.seconds,
            "model": model.meta.get("sha256"),
        }
        write_text_atomic(case_dir / "case.json", json.dumps(record, indent=2))
    except (CtsegError, OSError, MemoryError) as exc:
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        result.seconds = {"total": time.perf_counter() - t0}
        log.warning("case %s failed: %s", name, result.error)
    return result


def _merge_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    """Update the manifest with ``rows``; a ``skipped`` row never replaces the row of the run that made the case."""
    previous: dict[str, dict[str, str]] = {}
    if path.is_file():
        with open(path, newline="") as fp:
            previous = {r["case"]: r for r in csv.DictReader(fp)}
    for r in rows:
        if r["status"] != "skipped" or r["case"] not in previous:
            previous[r["case"]] = r
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS)
    writer.writeheader()
    for case in sorted(previous):
        writer.writerow({k: previous[case].get(k, "") for k in MANIFEST_FIELDS})
    write_text_atomic(path, buffer.getvalue())


def _rank_and_world(options: PredictOptions) -> tuple[int, int]:
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return int(os.environ.get("RANK", 0)), int(os.environ["WORLD_SIZE"])
    return options.shard


def predict_batch(inputs: list[Path], model_dir: Path, out_dir: Path, options: PredictOptions) -> list[CaseResult]:
    """Run :func:`predict_case` over every case of ``inputs`` (this process's shard); write the manifest.

    Returns
    -------
    list[CaseResult]
        One per case of this shard, ``status`` ``ok``, ``skipped`` (already complete) or ``failed``.
    """
    from tqdm.auto import tqdm

    rank, world = _rank_and_world(options)
    device = options.device
    if device == "auto" and world > 1 and "LOCAL_RANK" in os.environ:
        import torch

        device = f"cuda:{os.environ['LOCAL_RANK']}" if torch.cuda.is_available() else "cpu"
    opts = PredictOptions(**{**options.__dict__, "device": str(resolve_device(device))})
    cases = expand_inputs(inputs, subfolders_as_cases=options.subfolders_as_cases)[rank::world]
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(model_dir)
    results = []
    for name, path in tqdm(cases, desc="predicting", unit="case", disable=not options.progress):
        if not options.overwrite and is_complete(out_dir / name):
            record = json.loads((out_dir / name / "case.json").read_text())
            results.append(
                CaseResult(name, str(path), "skipped", record.get("series_uid", ""), outputs=record.get("outputs", []))
            )
            continue
        results.append(predict_case(name, path, model, out_dir, opts))
    rows = [r.row() for r in results]
    if world == 1:
        _merge_manifest(out_dir / "manifest.csv", rows)
        return results
    # Each shard keeps its own part; manifest.csv is the union of the parts present. Under torchrun rank 0 builds
    # it after a barrier; with --shard (separate processes) every shard rebuilds it when it ends, so the last
    # shard to finish leaves the complete manifest.
    _merge_manifest(out_dir / f"manifest.part{rank}of{world}.csv", rows)
    if "WORLD_SIZE" in os.environ:
        _barrier()
    if rank == 0 or "WORLD_SIZE" not in os.environ:
        parts: list[dict[str, str]] = []
        for part in sorted(out_dir.glob(f"manifest.part*of{world}.csv")):
            with open(part, newline="") as fp:
                parts.extend(csv.DictReader(fp))
        _merge_manifest(out_dir / "manifest.csv", parts)
    if "WORLD_SIZE" in os.environ:
        _barrier(last=True)
    return results


def _barrier(*, last: bool = False) -> None:
    """A gloo barrier across torchrun's processes (CPU or GPU ranks alike); ``last`` leaves the group."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()
    if last:
        dist.destroy_process_group()
