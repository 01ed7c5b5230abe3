"""Find DICOM files in a folder tree by content and group them into series candidates.

A file is DICOM when it carries the ``DICM`` magic at byte 128 (Part 10), or, failing that, when pydicom can read a
SOP Class UID from it (old files without a preamble). File names and extensions are never used: PACS exports are
often ``I10``, ``IM000001`` or hashes. DICOMDIR files, non-image objects (SEG, RTSTRUCT, SR, presentation states,
...) and unreadable files are ignored and reported in :attr:`Discovery.ignored`.

Images are grouped by SeriesInstanceUID; when a UID is missing or blank, by frame of reference, orientation, pixel
spacing and matrix size, so such data still loads. Splitting a group into a stack happens in
:mod:`ctseg.io.dicom.series`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:  # pydicom is imported only where a file needs it: the fast header parser reads plain files
    from pydicom.dataset import Dataset

from ctseg.errors import DicomSeriesError, SeriesReason
from ctseg.io.dicom.fast_header import FastHeader, parse_header
from ctseg.io.dicom.quiet import PydicomNotes, ignored_warnings

log = logging.getLogger(__name__)

PREAMBLE_BYTES = 128
MAGIC = b"DICM"

DICOMDIR_SOP = "1.2.840.10008.1.3.10"
#: SOP classes that carry images but are never CT input; the name says what was ignored.
NON_IMAGE_SOP_NAMES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "DICOM SEG",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.481.2": "RTDOSE",
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.11.1": "presentation state",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.66": "raw data",
    "1.2.840.10008.5.1.4.1.1.66.1": "spatial registration",
}
SR_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
CT_SOP = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_SOP = "1.2.840.10008.5.1.4.1.1.2.1"
SECONDARY_CAPTURE_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.7"

#: Start of the reason of an ignored file or folder that could not be read at all (permissions, I/O).
UNREADABLE_PREFIX = "unreadable:"

#: Rounding for the fallback grouping key (orientation cosines, pixel spacing in mm).
_KEY_DECIMALS = 4


@dataclass(frozen=True)
class DicomFile:
    """One DICOM image file: its path, its header (pixel data not loaded) and where its pixel data starts."""

    path: Path
    header: Dataset
    pixel_offset: int | None

    @property
    def sop_class(self) -> str:
        """SOP Class UID, ``""`` when absent."""
        return str(self.header.get("SOPClassUID", "") or "")

    @property
    def sop_instance_uid(self) -> str:
        """SOP Instance UID, ``""`` when absent."""
        return str(self.header.get("SOPInstanceUID", "") or "")


@dataclass(frozen=True)
class IgnoredFile:
    """A file found but not used, with why."""

    path: Path
    reason: str


@dataclass
class SeriesGroup:
    """The image files that belong to one series (before any geometry check)."""

    key: str
    files: list[DicomFile] = field(default_factory=list)
    uid_missing: bool = False

    @property
    def series_uid(self) -> str:
        """The SeriesInstanceUID, or the fallback key when the files had none."""
        return self.key

    @property
    def first(self) -> Dataset:
        """The header of the first file (for series-level tags)."""
        return self.files[0].header


@dataclass
class Discovery:
    """What a folder scan found: series groups and ignored files."""

    root: Path
    groups: list[SeriesGroup]
    ignored: list[IgnoredFile]


def _has_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fp:
            head = fp.read(PREAMBLE_BYTES + len(MAGIC))
    except OSError:
        return False
    return head[PREAMBLE_BYTES:] == MAGIC


def read_header(path: Path) -> tuple[Dataset, int | None]:
    """Read a DICOM header without pixel data; also return the file offset of the PixelData element, if any.

    Part-10 files in implicit or explicit VR little endian are parsed by
    :func:`~ctseg.io.dicom.fast_header.parse_header` (one ``open``, only the tags ctseg reads converted); the
    header is then a :class:`~ctseg.io.dicom.fast_header.FastHeader`, which answers ``get``, ``in``, attribute
    access and ``file_meta`` as the pydicom ``Dataset`` would. Everything else is read with pydicom.

    Raises
    ------
    pydicom.errors.InvalidDicomError
        If the file is not DICOM.
    """
    fast = parse_header(path)
    if fast is not None:
        # Duck-typed: FastHeader stands in for the Dataset wherever ctseg reads a header (see its docstring).
        return cast("Dataset", fast), fast.pixel_offset
    import pydicom

    force = not _has_magic(path)
    with open(path, "rb") as fp, ignored_warnings():
        # pydicom warns about recoverable header oddities (VR mismatches, bad UIDs); they are not ours to print.
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=force)
        # pydicom stops with the file positioned at the tag of the first pixel element.
        offset = fp.tell()
        tag = fp.read(4)
    pixel_offset = offset if tag in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10") else None
    return ds, pixel_offset


def _non_image_reason(ds: Dataset) -> str | None:
    sop = str(ds.get("SOPClassUID", "") or "")
    meta = getattr(ds, "file_meta", None)
    media_sop = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    if DICOMDIR_SOP in (sop, media_sop) or "DirectoryRecordSequence" in ds:
        return "DICOMDIR (a directory index, not an image)"
    if sop in NON_IMAGE_SOP_NAMES:
        return f"{NON_IMAGE_SOP_NAMES[sop]} object (not an image series)"
    if sop.startswith(SR_SOP_PREFIX):
        return "structured report (not an image series)"
    if "Rows" not in ds or "Columns" not in ds:
        return f"no image in this object (SOP class {sop or 'missing'}, modality {ds.get('Modality', '?')})"
    return None


def _key_numbers(ds: Dataset, keyword: str) -> tuple[float, ...] | str:
    """A multi-valued DS tag rounded for the grouping key; its text when it is not numbers (checked later)."""
    try:
        value = ds.get(keyword)
        return tuple(np.round(np.asarray(value, float), _KEY_DECIMALS).tolist()) if value else ()
    except (TypeError, ValueError, OverflowError):  # pydicom converts on access; the series check names the value
        return "unparsable"


def _group_key(ds: Dataset) -> tuple[str, bool]:
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    if uid:
        return uid, False
    # No UID: same frame of reference, orientation, pixel spacing and matrix size form one series.
    parts = [
        str(ds.get("FrameOfReferenceUID", "") or ""),
        str(_key_numbers(ds, "ImageOrientationPatient")),
        str(_key_numbers(ds, "PixelSpacing")),
        f"{ds.get('Rows', '?')}x{ds.get('Columns', '?')}",
    ]
    return "nouid:" + "|".join(parts), True


def iter_files(root: Path, unreadable: list[IgnoredFile] | None = None) -> list[Path]:
    """Every regular file under ``root`` (or ``root`` itself), sorted for a reproducible order.

    A folder that cannot be listed (permission denied, vanished) is appended to ``unreadable`` with the OS error.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    out: list[Path] = []

    def note(exc: OSError) -> None:
        if unreadable is not None:
            where = Path(exc.filename) if exc.filename else root
            unreadable.append(IgnoredFile(where, f"{UNREADABLE_PREFIX} folder cannot be listed ({_os_error(exc)})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=note):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        out.extend(folder / f for f in sorted(filenames) if not f.startswith("."))
    return out


def _os_error(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def unreadable_note(ignored: list[IgnoredFile]) -> str:
    """For an error message: how many files/folders could not be read for lack of permission or an OS error."""
    bad = [i for i in ignored if i.reason.startswith(UNREADABLE_PREFIX)]
    if not bad:
        return ""
    return (
        f"; {len(bad)} file(s)/folder(s) could not be read, e.g. {bad[0].path.name}: "
        f"{bad[0].reason[len(UNREADABLE_PREFIX) :].strip()}; check their permissions"
    )


def discover(root: Path, *, notes: PydicomNotes | None = None) -> Discovery:
    """Scan ``root`` (a folder tree or one file) for DICOM image files and group them into series.

    Parameters
    ----------
    root
        A folder (searched recursively; hidden entries skipped) or a single file.
    notes
        Where pydicom's messages go inside :func:`~ctseg.io.dicom.quiet.quiet_pydicom`; what it said about a file
        that is then ignored (a text file read by force) is dropped.

    Returns
    -------
    Discovery
        Groups in order of first appearance, and every file that was ignored with its reason.

    Raises
    ------
    DicomSeriesError
        ``NO_DICOM`` if ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise DicomSeriesError(SeriesReason.NO_DICOM, f"{root} does not exist; pass a DICOM folder or file")
    with paused_gc():
        return _scan(root, notes)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside (nested uses are fine); the collector's previous state after.

    The headers and slices of a scan are many small acyclic objects that all live on: the collector's passes over
    them during a scan find nothing and cost about a fifth of it (``benchmarks/inspect_speed.py``). Files read by
    pydicom may leave cycles behind, so :func:`discover` collects every :data:`PYDICOM_READS_PER_COLLECTION` of them.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


#: During a scan, a garbage collection after this many headers read by pydicom (see :func:`discover`).
PYDICOM_READS_PER_COLLECTION = 1000


def _scan(root: Path, notes: PydicomNotes | None) -> Discovery:
    groups: dict[str, SeriesGroup] = {}
    ignored: list[IgnoredFile] = []
    slow_reads = 0
    for path in iter_files(root, ignored):
        mark = notes.mark() if notes is not None else (0, 0)
        try:
            ds, pixel_offset = read_header(path)
            if type(ds) is not FastHeader:
                slow_reads += 1
                if slow_reads % PYDICOM_READS_PER_COLLECTION == 0:
                    gc.collect()
        except OSError as exc:  # permission denied, vanished, I/O error: say which
            ignored.append(IgnoredFile(path, f"{UNREADABLE_PREFIX} file cannot be opened ({_os_error(exc)})"))
            continue
        except Exception as exc:  # pydicom raises many types for non-DICOM or damaged bytes
            ignored.append(IgnoredFile(path, f"not a readable DICOM file ({type(exc).__name__})"))
            if notes is not None:
                notes.drop_since(mark)
            continue
        has_meta = getattr(ds, "file_meta", None) is not None and len(ds.file_meta) > 0
        if not has_meta and "SOPClassUID" not in ds and "Modality" not in ds:
            reason: str | None = "not a DICOM file (no DICOM header found)"
        else:
            reason = _non_image_reason(ds)
        if reason:
            ignored.append(IgnoredFile(path, reason))
            if notes is not None:
                notes.drop_since(mark)
            continue
        key, missing = _group_key(ds)
        group = groups.setdefault(key, SeriesGroup(key=key, uid_missing=missing))
        group.files.append(DicomFile(path, ds, pixel_offset))
    for item in ignored:
        log.info("ignored %s: %s", item.path.name, item.reason)
    return Discovery(root=root, groups=list(groups.values()), ignored=ignored)
