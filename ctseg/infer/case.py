"""One case from input to committed outputs: read, check identity, segment, write, commit as a whole.

:func:`run_case` is the one implementation used by ``ctseg predict`` (:mod:`ctseg.infer.batch`) and by any server;
it is :func:`prepare_case` (read, segment) then the returned ``finish`` (write, commit), which ``ctseg predict`` runs
on a second thread while it prepares the next case.
A case's outputs (``mask.nii.gz``, ``seg.dcm``, ``stats.json``, ``preview.png`` and last ``case.json``) are written
into a hidden sibling folder ``OUT/.<case>.partial-<pid>`` and swapped in by rename: the old folder is renamed
aside, the new one renamed in, then the old one removed. A process killed at any point leaves the case wholly old
or wholly new; :func:`recover_case` (run before each case) puts an interrupted swap back and removes leftovers.

``case.json`` records the input's identity (resolved path, series UID, a fingerprint of the instances or the file)
and the model's sha256; a case counts as complete only when these match the current input and model. Any exception
inside a case is that case's failure: its type and first line go to the result, the traceback to the debug log.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ctseg._version import __version__
from ctseg.errors import CaseConflictError, CtsegError
from ctseg.infer.model import LoadedModel
from ctseg.infer.pipeline import segment
from ctseg.infer.preview import write_preview
from ctseg.infer.qa import check_ct_input, check_work_size
from ctseg.infer.stats import structure_stats
from ctseg.io import is_image_file, read_input
from ctseg.io.atomic import write_text_atomic
from ctseg.io.dicom import DicomImage, ReadOptions, inspect_dicom
from ctseg.io.images import write_image
from ctseg.io.paths import path_inside, printable
from ctseg.volume import Volume

log = logging.getLogger(__name__)

FORMATS = ("nifti", "dicom-seg")
#: The ``case.json`` keys that must match for a finished case to count as this input's result.
IDENTITY_KEYS = ("input", "series_uid", "fingerprint", "model_sha256")
#: Longest error message kept in the manifest (the full text and traceback go to the debug log).
MAX_ERROR_CHARS = 400


@dataclass(frozen=True)
class PredictOptions:
    """Switches of ``ctseg predict``.

    ``series_uid`` and ``read`` apply to DICOM input as in ``ctseg convert``: the series to read (a case without
    it fails with ``SERIES_NOT_FOUND``) and the read options (gaps, tilt correction, non-CT, padding).
    ``all_series`` makes one case per usable CT series instead of one per study. ``runtime`` picks the torch
    network or an exported variant (see :func:`ctseg.runtime.select.choose_variant`).
    """

    series_uid: str | None = None
    read: ReadOptions = ReadOptions()
    formats: tuple[str, ...] = FORMATS
    device: str = "auto"
    runtime: str = "auto"
    overwrite: bool = False
    qa: bool = True
    shard: tuple[int, int] = (0, 1)
    subfolders_as_cases: bool = False
    all_series: bool = False
    tta: bool | None = None
    overlap: float | None = None
    progress: bool = True


@dataclass(frozen=True)
class CaseSpec:
    """One case to run: its (safe, unique) name, its input, and the DICOM series to read (``None``: the rule's).

    ``reason`` says why ``series_uid`` was chosen when the batch chose it (e.g. by the series rule inside a study).
    """

    name: str
    path: Path
    series_uid: str | None = None
    reason: str = ""


@dataclass
class CaseResult:
    """One manifest row: ``status`` is ``ok``, ``skipped`` (already complete), ``failed`` or ``interrupted``."""

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


def series_record(image: DicomImage) -> dict[str, str]:
    """The chosen series as recorded in ``case.json``: UID, number, description, modality, kernel class, and why."""
    return {
        "uid": image.series_uid,
        "number": image.series_number,
        "description": image.description,
        "modality": image.modality,
        "kernel_class": image.kernel_class,
        "reason": image.reason,
    }


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, cut to :data:`MAX_ERROR_CHARS` (for the manifest)."""
    message = printable(exc).strip()
    text = message.splitlines()[0] if message else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _digest(items: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(items)).encode("utf-8", "surrogateescape")).hexdigest()


def input_identity(spec: CaseSpec, options: PredictOptions, model: LoadedModel) -> dict[str, str]:
    """What makes a finished case this input's result: resolved path, series UID, fingerprint, model sha256.

    The fingerprint of a DICOM series hashes its sorted SOP Instance UIDs (file size and time for an instance
    without one); of an image file, its size and modification time. DICOM headers are scanned, no pixels read.

    Raises
    ------
    DicomSeriesError
        When the input has no readable series (the case's failure).
    """
    path = Path(spec.path)
    identity = {"input": str(path.resolve()), "model_sha256": str(model.meta.get("sha256", ""))}
    if is_image_file(path):
        stat = path.stat()
        return {**identity, "series_uid": "", "fingerprint": _digest([f"{stat.st_size}:{stat.st_mtime_ns}"])}
    found = inspect_dicom(path, options=options.read, series_uid=spec.series_uid or options.series_uid)
    plan = found.require_chosen()
    items = []
    for s in plan.slices:
        if s.file.sop_instance_uid.strip():
            items.append(f"{s.file.sop_instance_uid}:{s.frame}")
        else:
            stat = s.file.path.stat()
            items.append(f"{s.file.path.name}:{s.frame}:{stat.st_size}:{stat.st_mtime_ns}")
    return {**identity, "series_uid": plan.series_uid, "fingerprint": _digest(items)}


def read_record(case_dir: Path) -> dict[str, Any] | None:
    """The ``case.json`` of a case folder, or ``None`` when it is missing or not a JSON object."""
    try:
        record = json.loads((case_dir / "case.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def case_state(case_dir: Path, identity: dict[str, str]) -> str:
    """``absent``, ``complete`` (ok, every listed file present, same identity), ``incomplete`` or ``conflict``.

    ``conflict``: the folder holds another input's or model's results, or files ctseg did not write.
    """
    if not case_dir.exists():
        return "absent"
    record = read_record(case_dir)
    if record is None:
        return "incomplete" if not any(case_dir.iterdir()) else "conflict"
    if any(str(record.get(k, "")) != identity[k] for k in IDENTITY_KEYS):
        return "conflict"
    outputs = record.get("outputs", [])
    done = record.get("status") == "ok" and all((case_dir / str(n)).is_file() for n in outputs)
    return "complete" if done else "incomplete"


def _conflict_message(case_dir: Path, identity: dict[str, str]) -> str:
    record = read_record(case_dir)
    if record is None:
        return f"{case_dir} exists and was not written by ctseg predict (no case.json); pass another --out"
    differ = [k for k in IDENTITY_KEYS if str(record.get(k, "")) != identity[k]]
    return (
        f"{case_dir} holds the results of a different {' and '.join(k.replace('_', ' ') for k in differ)} "
        f"(recorded input {record.get('input', '?')}); pass --overwrite to replace them, or another --out"
    )


def recover_case(out_dir: Path, name: str) -> None:
    """Undo an interrupted swap of case ``name`` (the old folder back) and remove its leftover partial folders."""
    case_dir = path_inside(out_dir, name)
    stem = glob.escape(f".{name}")
    olds = sorted(Path(out_dir).glob(f"{stem}.old-*"))
    if olds and not case_dir.exists():
        os.rename(olds.pop(), case_dir)
        log.info("case %s: restored the outputs of an interrupted replacement", name)
    for leftover in [*olds, *Path(out_dir).glob(f"{stem}.partial-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def commit_case(partial: Path, case_dir: Path) -> None:
    """Swap the complete folder ``partial`` in as ``case_dir`` by rename; remove the old outputs only after."""
    old = case_dir.with_name(f".{case_dir.name}.old-{os.getpid()}")
    if case_dir.exists():
        os.rename(case_dir, old)
    os.rename(partial, case_dir)
    if old.exists():
        shutil.rmtree(old)


def run_case(spec: CaseSpec, model: LoadedModel, out_dir: Path, options: PredictOptions) -> CaseResult:
    """Run one case into ``out_dir/spec.name``; every failure is recorded in the result, never raised.

    A finished case of the same input and model is ``skipped`` (unless ``options.overwrite``); a folder holding
    another input's results is refused (``CaseConflictError``) unless ``options.overwrite``.
    """
    prepared = prepare_case(spec, model, out_dir, options)
    if prepared.finish is not None:
        prepared.finish()
    return prepared.result


@dataclass
class PreparedCase:
    """A case read and segmented: ``finish()`` writes and commits its outputs (never raises; failures go to
    ``result``). ``finish`` is None when the case needs no writing (skipped, or already failed)."""

    result: CaseResult
    finish: Callable[[], None] | None


def prepare_case(spec: CaseSpec, model: LoadedModel, out_dir: Path, options: PredictOptions) -> PreparedCase:
    """The first half of :func:`run_case`: recover, check identity and state, read and segment.

    ``ctseg predict`` runs the returned ``finish`` (the writing) on a second thread while it prepares the next case.
    """
    result = CaseResult(spec.name, printable(spec.path))
    t0 = time.perf_counter()
    try:
        case_dir = path_inside(out_dir, spec.name)
        recover_case(out_dir, spec.name)
        identity = input_identity(spec, options, model)
        result.series_uid = identity["series_uid"]
        state = case_state(case_dir, identity)
        if state == "complete" and not options.overwrite:
            record = read_record(case_dir) or {}
            result.status, result.outputs = "skipped", [str(n) for n in record.get("outputs", [])]
            return PreparedCase(result, None)
        if state == "conflict" and not options.overwrite:
            raise CaseConflictError(_conflict_message(case_dir, identity))
        done = _read_and_segment(spec, model, options, result, identity)
    except Exception as exc:  # noqa: BLE001 -- any failure of one case is that case's, and the batch goes on
        _failed(result, exc, t0)
        return PreparedCase(result, None)

    def finish() -> None:
        try:
            _write_and_commit(spec, model, out_dir, options, result, identity, done)
            result.seconds["total"] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 -- as above
            _failed(result, exc, t0)

    return PreparedCase(result, finish)


def _failed(result: CaseResult, exc: Exception, t0: float) -> None:
    result.status, result.error, result.outputs = "failed", one_line(exc), []
    result.seconds = {"total": time.perf_counter() - t0}
    log.warning("case %s failed: %s", result.case, result.error)
    log.debug("case %s traceback", result.case, exc_info=exc)


def _read_and_segment(
    spec: CaseSpec, model: LoadedModel, options: PredictOptions, result: CaseResult, identity: dict[str, str]
) -> _Segmented:
    t0 = time.perf_counter()
    volume, image = read_input(spec.path, series_uid=spec.series_uid or options.series_uid, options=options.read)
    if image is not None and image.series_uid != identity["series_uid"]:
        raise CtsegError(f"the series of {spec.path} changed while it was read; run the case again")
    if image is not None and spec.reason:
        image = replace(image, reason=spec.reason)
    if image is not None:
        result.warnings.extend(f"{r.value}: {m}" for r, m in image.warnings)
    if options.qa:
        result.warnings.extend(check_ct_input(volume))
    check_work_size(volume, model.preprocess.target_spacing_mm)
    t1 = time.perf_counter()
    cfg = model.infer
    if options.tta is not None or options.overlap is not None:
        tta = cfg.tta if options.tta is None else options.tta
        cfg = replace(cfg, tta=tta, overlap=cfg.overlap if options.overlap is None else options.overlap)
    labels = segment(volume, model, config=cfg, device=options.device, runtime=options.runtime)
    result.seconds.update({"read": t1 - t0, "infer": time.perf_counter() - t1})
    return _Segmented(volume, labels, image)


def _write_and_commit(
    spec: CaseSpec,
    model: LoadedModel,
    out_dir: Path,
    options: PredictOptions,
    result: CaseResult,
    identity: dict[str, str],
    done: _Segmented,
) -> None:
    t2 = time.perf_counter()
    partial = path_inside(out_dir, f".{spec.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        seg = _write_outputs(partial, done, model, options.formats, result)
        result.seconds["write"] = time.perf_counter() - t2
        record = {
            "status": "ok",
            "case": spec.name,
            **identity,
            "series": series_record(done.image) if done.image is not None else None,
            "seg": seg,
            "outputs": result.outputs,
            "warnings": result.warnings,
            "seconds": result.seconds,
            "ctseg_version": __version__,
        }
        write_text_atomic(partial / "case.json", json.dumps(record, indent=2))
        commit_case(partial, path_inside(out_dir, spec.name))
    finally:
        shutil.rmtree(partial, ignore_errors=True)


@dataclass(frozen=True)
class _Segmented:
    """A read input and its label map: the HU volume, the labels on its grid, the DICOM source (if any)."""

    volume: Volume
    labels: Volume
    image: DicomImage | None


def _write_outputs(
    folder: Path, done: _Segmented, model: LoadedModel, formats: tuple[str, ...], result: CaseResult
) -> dict[str, Any] | None:
    """Write the case's files into ``folder``; return the DICOM SEG record (written, or skipped and why)."""
    # The mask's deflate (zlib releases the GIL) runs on a second thread beside the SEG, statistics and preview:
    # on a full-size CT it is the longest single write, and the rest of this phase keeps one core busy.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctseg-mask") as pool:
        mask = pool.submit(write_image, done.labels, folder / "mask.nii.gz") if "nifti" in formats else None
        seg = _write_others(folder, done, model, formats, result)
        if mask is not None:
            mask.result()  # re-raises the writer's error
            result.outputs.insert(0, "mask.nii.gz")
    return seg


def _write_others(
    folder: Path, done: _Segmented, model: LoadedModel, formats: tuple[str, ...], result: CaseResult
) -> dict[str, Any] | None:
    """DICOM SEG (when asked for and the source is DICOM), ``stats.json`` and ``preview.png``."""
    volume, labels, image = done.volume, done.labels, done.image
    seg: dict[str, Any] | None = None
    if "dicom-seg" in formats and image is not None:
        from ctseg.io.dicom_seg import write_dicom_seg

        try:
            write_dicom_seg(labels, image, folder / "seg.dcm", names=model.labels, colors=model.colors)
            result.outputs.append("seg.dcm")
            seg = {"written": True, "reason": ""}
        except CtsegError as exc:  # e.g. blank source UIDs, or a tilt-corrected grid with no source slices
            result.warnings.append(f"no DICOM SEG: {exc}")
            seg = {"written": False, "reason": str(exc)}
    stats = structure_stats(labels, volume, {k: v for k, v in model.labels.items() if k})
    stats["kernel_class"] = image.kernel_class if image is not None else None
    write_text_atomic(folder / "stats.json", json.dumps(stats, indent=2))
    write_preview(volume, labels, model.colors, folder / "preview.png", title=result.case)
    result.outputs += ["stats.json", "preview.png"]
    return seg
