"""Label :class:`~ctseg.volume.Volume` <-> DICOM Segmentation (SEG).

Modules: ``codes`` (SNOMED CT codes for structure names), ``grid`` (where a frame lies on a grid), ``write``
(:func:`write_dicom_seg`, highdicom) and ``read`` (:func:`read_dicom_seg`, pydicom).
"""

from __future__ import annotations

from ctseg.errors import DicomSegError
from ctseg.io.dicom_seg.codes import segment_codes
from ctseg.io.dicom_seg.read import SEG_SOP_CLASSES, read_dicom_seg
from ctseg.io.dicom_seg.write import write_dicom_seg

__all__ = ["SEG_SOP_CLASSES", "DicomSegError", "read_dicom_seg", "segment_codes", "write_dicom_seg"]
