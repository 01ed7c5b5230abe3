"""Synthetic volumes and DICOM series written with pydicom, so that core tests need no outside data.

The *world-space oracle*: HU is a steep linear function of the LPS position, ``HU = GRADIENT . p + OFFSET``. Any
volume ctseg reads from such a series can be checked voxel by voxel in world space, whatever its axis order or
orientation, and linear resampling (tilt, spacing correction) keeps the function exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from ctseg.volume import AXIAL, Geometry, Volume

#: HU per mm along LPS x, y, z.
GRADIENT = np.array([6.0, -4.0, 9.0])
OFFSET_HU = 40.0
#: A patient name/ID that must never show up in logs, errors or CLI output.
PHI_NAME = "Doe^Jane^Secret"
PHI_ID = "PHI-ID-9876"


def _rotation(axis: Sequence[float], angle_deg: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(angle_deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


#: An oblique direction (z, y, x columns), rotated about two axes; right-handed in DICOM's sense.
_R = _rotation((1, 1, 0), 20) @ _rotation((0, 0, 1), 15)
OBLIQUE: tuple[tuple[float, ...], ...] = tuple(map(tuple, np.stack([_R[:, 2], _R[:, 1], _R[:, 0]], axis=1)))
#: Sagittal, as scanners write it (IOP 0,1,0 / 0,0,-1): rows run down (I), columns run posterior (P).
SAGITTAL: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))


def oracle_hu(points_lps: np.ndarray) -> np.ndarray:
    """HU of the oracle at ``(..., 3)`` LPS points (mm)."""
    return np.asarray(points_lps, float) @ GRADIENT + OFFSET_HU


def make_volume(
    shape: tuple[int, int, int] = (8, 16, 16),
    spacing: tuple[float, float, float] = (2.5, 0.7, 0.7),
    direction: Sequence[Sequence[float]] = AXIAL,
    origin: tuple[float, float, float] = (-5.0, -6.0, -3.0),
    *,
    oracle: bool = True,
) -> Volume:
    """A float32 volume on the given grid; with ``oracle`` its values are :func:`oracle_hu` of each voxel centre."""
    g = Geometry(shape, spacing, origin, tuple(map(tuple, direction)))  # type: ignore[arg-type]
    if not oracle:
        return Volume(np.zeros(shape, np.float32), g)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    values = oracle_hu(g.index_to_world(idx)).reshape(shape).astype(np.float32)
    return Volume(values, g)


def make_spheres(shape: tuple[int, int, int] = (24, 32, 32), seed: int = 0) -> np.ndarray:
    """A uint8 label map with two spheres (labels 1 and 2) at seeded random centres."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    out = np.zeros(shape, np.uint8)
    for label in (1, 2):
        c = [rng.uniform(s * 0.3, s * 0.7) for s in shape]
        r = min(shape) * 0.2
        out[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r] = label
    return out


def _dataset(path: Path, sop_class: str, modality: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = PHI_NAME
    ds.PatientID = PHI_ID
    ds.PatientBirthDate = "19700101"
    return ds


def write_slices(
    folder: Path,
    ipps: Sequence[Sequence[float]],
    pixels_hu: Sequence[np.ndarray],
    *,
    row_cos: Sequence[float],
    col_cos: Sequence[float],
    pixel_spacing: tuple[float, float],
    slope: float = 1.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    series_uid: str | None = None,
    blank_uids: bool = False,
    instance_numbers: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    series_number: int = 3,
    description: str = "SYNTH AXIAL",
    extra: dict[str, Any] | None = None,
) -> list[Path]:
    """Write one DICOM file per slice (int16 stored = round((HU - intercept) / slope)); return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    paths = []
    for k, (ipp, hu) in enumerate(zip(ipps, pixels_hu)):
        name = names[k] if names else f"slice{k:04d}"
        path = folder / name
        ds = _dataset(path, sop_class, modality)
        ds.StudyInstanceUID = "" if blank_uids else study_uid
        ds.SeriesInstanceUID = "" if blank_uids else series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.InstanceNumber = int(instance_numbers[k]) if instance_numbers is not None else k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_cos, *col_cos)]
        ds.PixelSpacing = [f"{pixel_spacing[0]:.6f}", f"{pixel_spacing[1]:.6f}"]
        ds.SliceThickness = "1.0"
        stored = np.round((np.asarray(hu, np.float64) - intercept) / slope)
        if stored.min() < -32768 or stored.max() > 32767:
            raise ValueError("synthetic HU out of int16 range for this slope/intercept")
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleType = "HU"
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        ds.PixelData = stored.astype("<i2").tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_dicom_series(
    folder: Path,
    volume: Volume,
    *,
    descending: bool = False,
    shuffle_instances: bool = False,
    **kwargs: Any,
) -> list[Path]:
    """Write ``volume`` as an axial-like DICOM series, one file per array slice along axis 0.

    IOP comes from the direction's columns 2 (row cosine) and 1 (column cosine); IPP of file k is the world
    position of voxel ``(k, 0, 0)``. With ``descending`` files are numbered from the last slice; with
    ``shuffle_instances`` InstanceNumbers are a seeded permutation that does not follow position.
    """
    g = volume.geometry
    d = g.direction_matrix
    n = g.shape[0]
    order = list(range(n))[::-1] if descending else list(range(n))
    ipps = [g.index_to_world([[k, 0, 0]])[0] for k in order]
    pixels = [volume.array[k] for k in order]
    instances = list(np.random.default_rng(7).permutation(n) + 1) if shuffle_instances else None
    return write_slices(
        folder,
        ipps,
        pixels,
        row_cos=d[:, 2],
        col_cos=d[:, 1],
        pixel_spacing=(g.spacing_mm[1], g.spacing_mm[2]),
        instance_numbers=instances,
        **kwargs,
    )


def write_oracle_series(
    folder: Path,
    ipps: Sequence[Sequence[float]],
    *,
    rows: int = 16,
    cols: int = 16,
    row_cos: Sequence[float] = (1.0, 0.0, 0.0),
    col_cos: Sequence[float] = (0.0, 1.0, 0.0),
    pixel_spacing: tuple[float, float] = (0.7, 0.7),
    **kwargs: Any,
) -> list[Path]:
    """Write slices at arbitrary positions (tilted, irregular, gapped), each filled from the oracle."""
    r, c = np.asarray(row_cos, float), np.asarray(col_cos, float)
    jj, ii = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    pixels = []
    for ipp in ipps:
        pts = np.asarray(ipp, float) + jj[..., None] * pixel_spacing[0] * c + ii[..., None] * pixel_spacing[1] * r
        pixels.append(oracle_hu(pts))
    return write_slices(folder, ipps, pixels, row_cos=row_cos, col_cos=col_cos, pixel_spacing=pixel_spacing, **kwargs)


def assert_matches_oracle(volume: Volume, *, atol_hu: float = 0.51, interior: int = 0) -> None:
    """Assert every voxel (optionally excluding ``interior`` voxels at each in-plane border) equals the oracle."""
    shape = volume.shape
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    expected = oracle_hu(volume.geometry.index_to_world(idx.reshape(-1, 3))).reshape(shape)
    sl = (slice(None), slice(interior, shape[1] - interior or None), slice(interior, shape[2] - interior or None))
    diff = np.abs(np.asarray(volume.array, float)[sl] - expected[sl])
    assert diff.max() <= atol_hu, (
        f"max |HU - oracle| = {diff.max():.3f} at {np.unravel_index(diff.argmax(), diff.shape)}"
    )
