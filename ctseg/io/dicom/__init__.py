"""DICOM CT ingestion: folder tree -> series -> checked stack -> :class:`~ctseg.volume.Volume` in HU.

The public entry points are :func:`read_dicom` (read one series: its volume and the frozen plan it came from, as a
:class:`DicomImage`) and :func:`inspect_dicom` (what is in a folder, which series would be read and why). Modules:
``discover`` (files -> series groups), ``series`` (checks with reason codes, slice order -> :class:`CheckedSeries`
or :class:`RejectedSeries`), ``stack`` and ``pixels`` (decoding, HU, resampling onto an orthogonal grid), ``read``.
"""

from __future__ import annotations

from ctseg.io.dicom.plan import CheckedSeries, ReadOptions, RejectedSeries, SeriesCheck
from ctseg.io.dicom.read import (
    DicomImage,
    DicomInspection,
    SourceInstance,
    inspect_dicom,
    read_dicom,
    read_dicom_series,
    select_series,
)

__all__ = [
    "CheckedSeries",
    "DicomImage",
    "DicomInspection",
    "ReadOptions",
    "RejectedSeries",
    "SeriesCheck",
    "SourceInstance",
    "inspect_dicom",
    "read_dicom",
    "read_dicom_series",
    "select_series",
]
