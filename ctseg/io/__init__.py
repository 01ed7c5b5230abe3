"""File formats: the only code in ctseg that knows DICOM tags, NIfTI's RAS or ITK's axis order."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ctseg.io.atomic import full_suffix
from ctseg.io.images import IMAGE_SUFFIXES, read_image, write_image
from ctseg.volume import Volume

if TYPE_CHECKING:
    from ctseg.io.dicom import DicomImage, ReadOptions

__all__ = ["convert_to_file", "is_image_file", "read_image", "read_input", "read_volume", "write_image"]


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a file with a NIfTI/NRRD/MHA suffix."""
    return Path(path).is_file() and full_suffix(Path(path)) in IMAGE_SUFFIXES


def read_input(
    path: Path, *, series_uid: str | None = None, options: ReadOptions | None = None
) -> tuple[Volume, DicomImage | None]:
    """Read a CT from an image file (NIfTI/NRRD/MHA) or a DICOM folder tree/file.

    Returns
    -------
    tuple[Volume, DicomImage | None]
        The HU volume and, for DICOM input, the :class:`~ctseg.io.dicom.DicomImage` it is part of (the series
        plan that DICOM SEG output references); ``series_uid`` and ``options`` apply to DICOM input only.

    Raises
    ------
    DicomSeriesError, ImageFormatError, UnsupportedTransferSyntaxError
        For input that cannot be read; the message says why and how to fix it.
    """
    from ctseg.io.dicom import ReadOptions, read_dicom

    path = Path(path)
    if is_image_file(path):
        return read_image(path), None
    image = read_dicom(path, series_uid=series_uid, options=options or ReadOptions())
    return image.volume, image


def read_volume(path: Path, *, series_uid: str | None = None, options: ReadOptions | None = None) -> Volume:
    """The volume of :func:`read_input` (same parameters and errors)."""
    return read_input(path, series_uid=series_uid, options=options)[0]


def convert_to_file(
    input_path: Path, output: Path, *, series_uid: str | None = None, options: ReadOptions | None = None
) -> Volume:
    """Read ``input_path`` (DICOM folder or image file) and write its HU volume to ``output`` (format by suffix).

    Returns the volume that was written.
    """
    volume = read_volume(input_path, series_uid=series_uid, options=options)
    write_image(volume, output)
    return volume
