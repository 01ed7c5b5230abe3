"""Write a HU :class:`~ctseg.volume.Volume` as a DICOM CT series (one file per axis-0 slice), with pydicom.

Used by ``ctseg demo`` to make input that exercises the real ingestion path, and by users who need DICOM from a
NIfTI volume. The series carries no patient data: PatientName and PatientID are set to a placeholder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ctseg.errors import GeometryError
from ctseg.io.atomic import atomic_path
from ctseg.volume import Volume

#: Stored = HU - intercept; int16 holds -1024..31743 HU.
RESCALE_INTERCEPT = -1024


def write_ct_series(volume: Volume, folder: Path, *, description: str = "CTSEG", series_number: int = 1) -> list[Path]:
    """Write ``volume`` as CT Image Storage files ``folder/IM00001.dcm``... and return their paths.

    The slice normal (row x column cosine) must point along array axis 0, as DICOM stacks do.

    Raises
    ------
    GeometryError
        If the volume's direction is left-handed (axis 0 against the slice normal).
    """
    g = volume.geometry
    d = g.direction_matrix
    if np.dot(np.cross(d[:, 2], d[:, 1]), d[:, 0]) < 0:
        raise GeometryError("axis 0 points against the slice normal; flip axis 0 before writing DICOM")
    stored = np.round(np.asarray(volume.array, np.float64)) - RESCALE_INTERCEPT
    stored = np.clip(stored, -32768, 32767).astype("<i2")
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(g.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{k + 1:05d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "PHANTOM", "PHANTOM"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = series_number, description, k + 1
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in g.index_to_world([[k, 0, 0]])[0]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*d[:, 2], *d[:, 1])]
        ds.PixelSpacing = [f"{g.spacing_mm[1]:.6f}", f"{g.spacing_mm[2]:.6f}"]
        ds.SliceThickness = f"{g.spacing_mm[0]:.6f}"
        ds.Rows, ds.Columns = g.shape[1], g.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(RESCALE_INTERCEPT), "1", "HU"
        ds.PixelData = stored[k].tobytes()
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths
