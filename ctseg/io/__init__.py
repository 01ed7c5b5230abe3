"""File formats: the only code in ctseg that knows DICOM tags, NIfTI's RAS or ITK's axis order."""

from __future__ import annotations

from pathlib import Path

from ctseg.io.images import IMAGE_SUFFIXES, read_image, write_image
from ctseg.io.atomic import full_suffix
from ctseg.volume import Volume

__all__ = ["read_volume", "read_image", "write_image", "is_image_file"]


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a file with a NIfTI/NRRD/MHA suffix."""
    return Path(path).is_file() and full_suffix(Path(path)) in IMAGE_SUFFIXES


def read_volume(path: Path, *, series_uid: str | None = None) -> Volume:
    """Read a CT from an image file (NIfTI/NRRD/MHA) or a DICOM folder tree/file into a :class:`Volume`.

    Raises
    ------
    DicomSeriesError, ImageFormatError, UnsupportedTransferSyntaxError
        For input that cannot be read; the message says why and how to fix it.
    """
    from ctseg.io.dicom import read_dicom_series

    path = Path(path)
    if is_image_file(path):
        return read_image(path)
    return read_dicom_series(path, series_uid=series_uid)
