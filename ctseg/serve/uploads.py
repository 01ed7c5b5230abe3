"""Validation of HTTP uploads: DICOM files, zips of a study, or one NIfTI image; nothing else gets in.

DICOM files are stored as ``<SOPInstanceUID>.dcm`` (never under the uploaded name, which may hold patient data);
a zip entry that would land outside the upload folder (absolute, ``..``, or a link) refuses the whole upload.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ctseg.errors import UploadError
from ctseg.serve.dicom_node import is_uid

DICOM_MAGIC_OFFSET = 128
NIFTI_HEADER_SIZES = (348, 540)  # NIfTI-1, NIfTI-2
ZIP_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b"


def _nifti_kind(name: str, data: bytes) -> str:
    """``".nii"`` / ``".nii.gz"`` if ``data`` is a NIfTI image, else ``""``."""
    head = data[:4]
    if data[:2] == GZIP_MAGIC:
        try:
            head = gzip.GzipFile(fileobj=io.BytesIO(data)).read(4)
        except (OSError, EOFError):
            return ""
        suffix = ".nii.gz"
    else:
        suffix = ".nii"
    if len(head) == 4 and any(struct.unpack(fmt, head)[0] in NIFTI_HEADER_SIZES for fmt in ("<i", ">i")):
        return suffix if name.lower().endswith((".nii", ".nii.gz")) else ""
    return ""


def _dicom_name(data: bytes, where: str) -> str:
    """``<SOPInstanceUID>.dcm`` for a DICOM file, after checking the UID."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        uid = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).get("SOPInstanceUID")
    except (InvalidDicomError, OSError, ValueError, EOFError):
        uid = None  # pydicom is lenient: a damaged file usually reads, without the UID
    if not is_uid(uid):
        raise UploadError(f"{where}: DICOM file without a readable, valid SOPInstanceUID; it cannot be stored")
    return f"{uid}.dcm"


def _zip_members(data: bytes, where: str, limit_bytes: int) -> Iterable[tuple[str, bytes]]:
    """The files of a zip, after refusing entries that escape the folder, links, and more than ``limit_bytes``."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise UploadError(f"{where}: damaged zip ({exc})") from None
    infos = archive.infolist()
    for info in infos:
        name = PurePosixPath(info.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
            raise UploadError(
                f"{where}: zip entry {info.filename!r} points outside the upload folder; refusing the archive"
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadError(f"{where}: zip entry {info.filename!r} is a symbolic link; refusing the archive")
    if sum(i.file_size for i in infos) > limit_bytes:
        raise UploadError(f"{where}: the zip expands beyond the upload limit of {limit_bytes} bytes")
    for info in infos:
        if not info.is_dir():
            yield f"{where}:{info.filename}", archive.read(info)


def save_upload(files: Iterable[tuple[str, BinaryIO]], folder: Path, *, limit_bytes: int) -> Path:
    """Validate and store uploaded files in ``folder``; return the case input (the folder, or the NIfTI file).

    Raises
    ------
    UploadError
        For a file that is neither DICOM nor NIfTI, a zip entry outside the folder, a NIfTI mixed with other
        files, or nothing uploaded.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stored: list[Path] = []
    pending: list[tuple[str, bytes]] = []
    for index, (name, fp) in enumerate(files):
        where = f"file {index + 1}"
        data = fp.read()
        pending.extend(_zip_members(data, where, limit_bytes) if data[:4] == ZIP_MAGIC else [(name, data)])
    for name, data in pending:
        nifti = _nifti_kind(name, data)
        if nifti:
            target = folder / f"image{nifti}"
        elif data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM":
            target = folder / _dicom_name(data, name.split(":")[0])
        else:
            raise UploadError(f"{name.split(':')[0]}: neither DICOM (no 'DICM' at byte 128) nor NIfTI (.nii, .nii.gz)")
        tmp = target.with_name(f".{target.name}.partial")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        stored.append(target)
    niftis = [p for p in stored if p.name.startswith("image.nii")]
    if not stored:
        raise UploadError("no file uploaded; send DICOM files, a zip of a study, or one NIfTI image as 'files'")
    if niftis and len(stored) > 1:
        raise UploadError(f"a NIfTI upload is one file; got {len(stored)} files")
    return niftis[0] if niftis else folder
