"""``ctseg predict`` over many cases: the model loaded once, failures isolated, finished cases skipped on rerun.

Cases: a ``.txt`` lists inputs (one case per line); a folder of image files gives one case per file; a DICOM folder
gives one case per study found in it (:mod:`ctseg.io.dicom.studies`), or one per usable CT series with
``all_series``. Case names come from the resolved paths, made safe and unique (:mod:`ctseg.io.paths`).

Each case runs through :func:`ctseg.infer.case.run_case`, which commits ``OUT/<case>/`` as a whole.
``OUT/manifest.csv`` has one row per case (input, series UID, status, error, seconds per phase, outputs) and is
rewritten after every case. SIGINT/SIGTERM finish the current case, write the manifest and stop
(:class:`BatchInterrupted`); a second signal stops at once. Under torchrun (or ``--shard i/n``) each process takes
every n-th case and the manifest is merged from per-shard parts.
"""

from __future__ import annotations

import csv
import io
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType

from ctseg.device import resolve_device
from ctseg.distributed import DistInfo, barrier, dist_info_from_env, init_distributed, shutdown
from ctseg.errors import OutputPathError
from ctseg.infer.case import FORMATS, CaseResult, CaseSpec, PredictOptions, prepare_case, recover_case, run_case
from ctseg.infer.model import LoadedModel, load_model
from ctseg.io import is_image_file
from ctseg.io.atomic import full_suffix, write_text_atomic
from ctseg.io.images import IMAGE_SUFFIXES
from ctseg.io.paths import printable, refuse_output_over_inputs, safe_case_name, unique_names

log = logging.getLogger(__name__)

__all__ = [
    "FORMATS",
    "BatchInterrupted",
    "CaseResult",
    "CaseSpec",
    "PredictOptions",
    "expand_inputs",
    "predict_batch",
    "predict_case",
]

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
#: Statuses that say nothing new about a case: they never replace the row of the run that made it.
_NO_NEWS = ("skipped", "not_run")


class BatchInterrupted(BaseException):
    """A batch stopped by SIGINT/SIGTERM after writing its manifest; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, results: list[CaseResult]) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum
        self.results = results

    @property
    def exit_code(self) -> int:
        """The shell's convention: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


def _case_name(path: Path) -> str:
    suffix = full_suffix(path) if path.is_file() and full_suffix(path) in IMAGE_SUFFIXES else ""
    name = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return safe_case_name(name.removesuffix("_0000"))


def _listed(listing: Path) -> list[Path]:
    """The paths of a ``.txt`` listing (one per line, ``#`` comments, relative to the listing's folder)."""
    out = []
    for line in listing.read_text(errors="surrogateescape").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            q = Path(line)
            out.append((q if q.is_absolute() else listing.parent / q).resolve())
    return out


def _expand_folder(path: Path, options: PredictOptions) -> list[CaseSpec]:
    """A folder (or DICOM file) given on the command line: its image files, subfolders or DICOM studies."""
    from ctseg.io.dicom.studies import find_dicom_cases

    if path.is_dir() and options.subfolders_as_cases:
        folders = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
        return [CaseSpec(_case_name(d), d) for d in folders]
    if path.is_dir() and any(is_image_file(f) for f in path.iterdir()):
        return [CaseSpec(_case_name(f), f) for f in sorted(path.iterdir()) if is_image_file(f)]
    if options.series_uid is not None:
        return [CaseSpec(_case_name(path), path)]
    found = find_dicom_cases(path, options=options.read, all_series=options.all_series)
    if len(found) == 1 and not options.all_series:
        return [CaseSpec(_case_name(path), path)]
    return [CaseSpec(safe_case_name(c.label.replace("/", "_")), c.folder, c.series_uid, c.reason) for c in found]


def expand_inputs(inputs: Sequence[Path], options: PredictOptions = PredictOptions()) -> list[CaseSpec]:
    """The cases of ``inputs``, with safe names unique within the batch (``_2``, ``_3`` suffixes).

    A ``.txt`` lists inputs, one case each; a folder of image files gives one case per file; with
    ``subfolders_as_cases`` each subfolder is one case; any other folder (or DICOM file) gives one case per study,
    or one per usable CT series with ``all_series``. Names come from the resolved paths (or the study's folder
    relative to the input), never from header values.
    """
    specs: list[CaseSpec] = []
    for raw in inputs:
        path = Path(raw).resolve()
        if path.is_file() and path.suffix.lower() == ".txt":
            specs.extend(CaseSpec(_case_name(p), p) for p in _listed(path))
        elif path.is_file() and is_image_file(path):
            specs.append(CaseSpec(_case_name(path), path))
        else:
            specs.extend(_expand_folder(path, options))
    names = unique_names([s.name for s in specs])
    return [replace(s, name=n) for s, n in zip(specs, names, strict=True)]


def predict_case(name: str, path: Path, model: LoadedModel, out_dir: Path, options: PredictOptions) -> CaseResult:
    """Segment one input as case ``name`` (see :func:`~ctseg.infer.case.run_case`); failures are recorded."""
    return run_case(CaseSpec(safe_case_name(name), Path(path)), model, out_dir, options)


class _Manifest:
    """``manifest.csv`` (or a shard's part): earlier rows kept, rewritten atomically on every update."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, str]] = {}
        if path.is_file():
            with open(path, newline="") as fp:
                self.rows = {r["case"]: r for r in csv.DictReader(fp) if r.get("case")}

    def update(self, rows: Sequence[dict[str, str]]) -> None:
        for r in rows:
            if r["status"] not in _NO_NEWS or r["case"] not in self.rows:
                self.rows[r["case"]] = r
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        for case in sorted(self.rows):
            writer.writerow({k: printable(self.rows[case].get(k, "")) for k in MANIFEST_FIELDS})
        write_text_atomic(self.path, buffer.getvalue())


@contextmanager
def _stop_on_signal() -> Iterator[list[int]]:
    """Yield a list that receives the number of the first SIGINT/SIGTERM; a second one raises at once."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        print("ctseg: stopping after the current case (signal again to stop now)", file=sys.stderr)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def check_out_dir(out_dir: Path, inputs: Sequence[Path]) -> None:
    """Refuse an ``--out`` that is an existing file, is or lies inside an input, or contains an input.

    Raises
    ------
    OutputPathError
        With the offending path.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputPathError(f"--out {out_dir} is an existing file; --out names a folder (new or existing)")
    refuse_output_over_inputs(out_dir, inputs)


def _cleanup_leftovers(out_dir: Path, cases: Sequence[CaseSpec]) -> None:
    for spec in cases:
        try:
            recover_case(out_dir, spec.name)
        except OutputPathError:
            continue  # a case name that leads out of --out: that case fails when it runs
    for leftover in out_dir.glob(".manifest*.partial-*"):
        leftover.unlink(missing_ok=True)


def predict_batch(
    inputs: list[Path],
    model_dir: Path,
    out_dir: Path,
    options: PredictOptions,
    *,
    on_cases: Callable[[list[CaseSpec]], None] | None = None,
) -> list[CaseResult]:
    """Run every case of ``inputs`` (this process's shard) and keep ``OUT/manifest.csv`` up to date.

    ``on_cases`` is called with the case list before any work starts (the CLI prints it).

    Returns
    -------
    list[CaseResult]
        One per case of this shard, ``status`` ``ok``, ``skipped`` (already complete) or ``failed``.

    Raises
    ------
    OutputPathError
        When ``out_dir`` is a file or overlaps an input.
    BatchInterrupted
        After SIGINT/SIGTERM: the current case finished, the manifest written (remaining cases ``not_run``).
    """
    from tqdm.auto import tqdm

    info = dist_info_from_env()
    rank, world = (info.rank, info.world_size) if info.enabled else options.shard
    check_out_dir(out_dir, inputs)
    all_cases = expand_inputs(inputs, options)
    refuse_output_over_inputs(out_dir, [c.path for c in all_cases])
    cases = all_cases[rank::world]
    if on_cases is not None:
        on_cases(cases)
    device = resolve_device(options.device, local_rank=info.local_rank if info.enabled else None)
    opts = replace(options, device=str(device))
    out_dir.mkdir(parents=True, exist_ok=True)
    if world == 1:
        _cleanup_leftovers(out_dir, cases)
    model = load_model(model_dir)
    part = out_dir / ("manifest.csv" if world == 1 else f"manifest.part{rank}of{world}.csv")
    manifest, results = _Manifest(part), []
    # A case's outputs are written on a second thread while the next case is read and segmented (one case in
    # writing at a time, so memory holds at most two cases); results reach the manifest in case order.
    with _stop_on_signal() as stop, ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctseg-write") as writer:
        writing: list[tuple[Future[None], CaseResult]] = []

        def settle() -> None:
            for future, result in writing:
                future.result()  # finish() records its failures in the result; it does not raise
                results.append(result)
                manifest.update([result.row()])
            writing.clear()

        try:
            for spec in tqdm(cases, desc="predicting", unit="case", disable=not options.progress):
                prepared = prepare_case(spec, model, out_dir, opts)
                settle()
                if prepared.finish is None:
                    results.append(prepared.result)
                    manifest.update([prepared.result.row()])
                else:
                    writing.append((writer.submit(prepared.finish), prepared.result))
                if stop:
                    break
        finally:
            settle()
            done = {r.case for r in results}
            manifest.update(
                [CaseResult(s.name, printable(s.path), "not_run").row() for s in cases if s.name not in done]
            )
    if stop:
        raise BatchInterrupted(stop[0], results)
    if world > 1:
        _merge_shards(out_dir, world, info)
    return results


def _merge_shards(out_dir: Path, world: int, info: DistInfo) -> None:
    """Build ``manifest.csv`` from the shards' parts.

    Under torchrun rank 0 builds it after a barrier; with --shard (separate processes) every shard rebuilds it when
    it ends, so the last shard to finish leaves the complete manifest.
    """
    if info.enabled:
        _barrier(info)
    if info.rank == 0 or not info.enabled:
        parts: list[dict[str, str]] = []
        for part in sorted(out_dir.glob(f"manifest.part*of{world}.csv")):
            with open(part, newline="") as fp:
                parts.extend(csv.DictReader(fp))
        _Manifest(out_dir / "manifest.csv").update(parts)
    if info.enabled:
        _barrier(info, last=True)


def _barrier(info: DistInfo, *, last: bool = False) -> None:
    """A gloo barrier across torchrun's processes (CPU or GPU ranks alike); ``last`` leaves the group."""
    import torch

    init_distributed(info, torch.device("cpu"))
    barrier(info)
    if last:
        shutdown(info)
