"""Upload validation: only DICOM and NIfTI, stored under SOPInstanceUIDs; archives that escape are refused."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctseg.errors import UploadError
from ctseg.io.images import write_image
from ctseg.serve.uploads import save_upload
from tests.synthetic import make_volume, write_dicom_series

LIMIT = 10_000_000


def _zip(entries: dict[str, bytes], *, link: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _dicom_bytes(tmp_path: Path) -> bytes:
    return write_dicom_series(tmp_path / "one", make_volume(shape=(1, 8, 8)))[0].read_bytes()


@pytest.fixture
def dicom_files(tmp_path: Path) -> list[Path]:
    return write_dicom_series(tmp_path / "series", make_volume(shape=(3, 8, 8)))


def test_dicom_files_are_named_by_sop_instance_uid(tmp_path: Path, dicom_files: list[Path]) -> None:
    uploads = [(f"Doe^John_{k}.dcm", io.BytesIO(p.read_bytes())) for k, p in enumerate(dicom_files)]
    folder = save_upload(uploads, tmp_path / "up", limit_bytes=LIMIT)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"{pydicom.dcmread(p).SOPInstanceUID}.dcm" for p in dicom_files)


def test_nifti_is_one_file(tmp_path: Path) -> None:
    path = tmp_path / "ct.nii.gz"
    write_image(make_volume(shape=(3, 8, 8)).with_array(np.zeros((3, 8, 8), np.float32)), path)
    assert save_upload([("x.nii.gz", io.BytesIO(path.read_bytes()))], tmp_path / "a", limit_bytes=LIMIT).name == (
        "image.nii.gz"
    )
    with pytest.raises(UploadError, match="a NIfTI upload is one file; got 2 files"):
        save_upload(
            [("x.nii.gz", io.BytesIO(path.read_bytes())), ("y.dcm", io.BytesIO(_dicom_bytes(tmp_path)))],
            tmp_path / "b",
            limit_bytes=LIMIT,
        )


@pytest.mark.parametrize(
    ("entries", "link", "match"),
    [
        ({"../../evil.dcm": b"x"}, "", "points outside the upload folder"),
        ({"/etc/evil.dcm": b"x"}, "", "points outside the upload folder"),
        ({"C:/evil.dcm": b"x"}, "", "points outside the upload folder"),
        ({}, "study/link.dcm", "is a symbolic link"),
        ({"notes.txt": b"hello"}, "", "neither DICOM"),
    ],
)
def test_bad_archives_are_refused(tmp_path: Path, entries: dict[str, bytes], link: str, match: str) -> None:
    with pytest.raises(UploadError, match=match):
        save_upload([("a.zip", io.BytesIO(_zip(entries, link=link)))], tmp_path / "up", limit_bytes=LIMIT)
    assert not list(tmp_path.rglob("evil.dcm"))


def test_other_refusals(tmp_path: Path, dicom_files: list[Path]) -> None:
    with pytest.raises(UploadError, match="expands beyond the upload limit of 100 bytes"):
        save_upload([("a.zip", io.BytesIO(_zip({"a.dcm": bytes(1000)})))], tmp_path / "a", limit_bytes=100)
    with pytest.raises(UploadError, match="damaged zip"):
        save_upload([("a.zip", io.BytesIO(b"PK\x03\x04garbage"))], tmp_path / "b", limit_bytes=LIMIT)
    with pytest.raises(UploadError, match="no file uploaded"):
        save_upload([], tmp_path / "c", limit_bytes=LIMIT)
    ds = pydicom.dcmread(dicom_files[0])
    ds.SOPInstanceUID = "../../etc"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    for data in (buffer.getvalue(), bytes(128) + b"DICM" + b"\x02\x00\x10\x00garbage"):
        with pytest.raises(UploadError, match="without a readable, valid SOPInstanceUID"):
            save_upload([("a.dcm", io.BytesIO(data))], tmp_path / "d", limit_bytes=LIMIT)
