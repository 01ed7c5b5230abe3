"""NIfTI, NRRD and MHA <-> :class:`~ctseg.volume.Volume`.

The two foreign conventions are converted here and nowhere else, one named function each way:

* NIfTI (nibabel): data indexed ``(i, j, k)`` = ``(x, y, z)``, affine to **RAS**.
  :func:`nifti_affine_from_geometry` / :func:`geometry_from_nifti_affine`.
* ITK (SimpleITK; NRRD, MHA): array from ``GetArrayFromImage`` is ``(z, y, x)`` but spacing and the direction's
  columns are in ``(x, y, z)`` order, world is LPS. :func:`volume_to_sitk` / :func:`sitk_to_volume`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ctseg.errors import GeometryError, ImageFormatError
from ctseg.io.atomic import atomic_path, full_suffix
from ctseg.volume import Geometry, Volume

if TYPE_CHECKING:
    import SimpleITK as sitk

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES

#: LPS <-> RAS: negate x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Index permutation (z, y, x) <-> (i, j, k) = (x, y, z); its own inverse.
_ZYX_TO_IJK = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def image_format(path: Path) -> str:
    """``"nifti"`` or ``"itk"`` for a path by its suffix.

    Raises
    ------
    ImageFormatError
        If the suffix is not one of ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``.
    """
    suffix = full_suffix(Path(path))
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix in ITK_SUFFIXES:
        return "itk"
    raise ImageFormatError(
        f"unknown image format {suffix or '(no suffix)'!r} for {Path(path).name}; "
        f"expected one of {', '.join(IMAGE_SUFFIXES)}"
    )


# -- NIfTI ---------------------------------------------------------------------------------------------------
def nifti_affine_from_geometry(geometry: Geometry) -> npt.NDArray[np.float64]:
    """The NIfTI affine (``(i, j, k)`` -> RAS mm) of an array stored as ``array.transpose(2, 1, 0)``."""
    return _LPS_TO_RAS @ geometry.affine @ _ZYX_TO_IJK


def geometry_from_nifti_affine(shape_ijk: tuple[int, int, int], affine_ras: npt.ArrayLike) -> Geometry:
    """The :class:`Geometry` of a NIfTI array of shape ``(i, j, k)`` with the given RAS affine.

    Raises
    ------
    GeometryError
        If the affine is sheared (non-orthogonal columns).
    """
    a = _LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64) @ _ZYX_TO_IJK
    return Geometry.from_affine((shape_ijk[2], shape_ijk[1], shape_ijk[0]), a)


def _squeeze_to_3d(data: np.ndarray, path: Path) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise ImageFormatError(
            f"{path.name} has shape {data.shape}; expected a single 3D volume. Split 4D series into 3D files first"
        )
    return data


def _native_dtype(data: np.ndarray) -> np.ndarray:
    """float64 -> float32 (what nibabel returns after scaling); keep integer types as stored."""
    if data.dtype == np.float64:
        return data.astype(np.float32)
    if data.dtype.byteorder not in ("=", "|"):
        return data.astype(data.dtype.newbyteorder("="))
    return data


def read_nifti(path: Path) -> Volume:
    """Read a ``.nii``/``.nii.gz`` file into a :class:`Volume` (array ``(Z, Y, X)``, LPS geometry).

    Raises
    ------
    ImageFormatError
        If nibabel cannot read the file or it is not a single 3D volume.
    GeometryError
        If its affine is sheared.
    """
    import nibabel as nib

    path = Path(path)
    try:
        img: Any = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises several unrelated types for damaged files
        raise ImageFormatError(f"cannot read NIfTI file {path.name}: {exc}") from exc
    data = _native_dtype(_squeeze_to_3d(np.asarray(data), path))
    try:
        geometry = geometry_from_nifti_affine(data.shape, img.affine)  # type: ignore[arg-type]
    except GeometryError as exc:
        raise GeometryError(f"{path.name}: {exc}") from exc
    return Volume(np.ascontiguousarray(data.transpose(2, 1, 0)), geometry)


def write_nifti(volume: Volume, path: Path) -> None:
    """Write ``volume`` to ``path`` (``.nii`` or ``.nii.gz``) atomically, qform and sform both set (code 1).

    Written by :mod:`ctseg.io.nifti_write` (no nibabel import on the write path; label maps deflated with RLE).
    """
    from ctseg.io.nifti_write import write_nifti_zyx

    with atomic_path(Path(path)) as tmp:
        write_nifti_zyx(np.asarray(volume.array), nifti_affine_from_geometry(volume.geometry), tmp)


# -- ITK (NRRD, MHA) -----------------------------------------------------------------------------------------
def volume_to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image with the same voxels and LPS geometry (ITK orders spacing/direction x, y, z)."""
    import SimpleITK as sitk

    g = volume.geometry
    img = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    img.SetSpacing(tuple(reversed(g.spacing_mm)))
    img.SetOrigin(g.origin_mm)
    img.SetDirection(tuple(g.direction_matrix[:, ::-1].reshape(-1).tolist()))
    return img


def sitk_to_volume(image: sitk.Image) -> Volume:
    """The :class:`Volume` of a 3D SimpleITK image.

    Raises
    ------
    ImageFormatError
        If the image is not 3D or has several components per voxel.
    """
    import SimpleITK as sitk

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageFormatError(
            f"expected a 3D scalar image, got dimension {image.GetDimension()} with "
            f"{image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    d_xyz = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    geometry = Geometry(
        tuple(reversed(image.GetSize())),  # type: ignore[arg-type]
        tuple(reversed(image.GetSpacing())),  # type: ignore[arg-type]
        tuple(image.GetOrigin()),  # type: ignore[arg-type]
        tuple(map(tuple, d_xyz[:, ::-1].tolist())),
    )
    return Volume(_native_dtype(sitk.GetArrayFromImage(image)), geometry)


def read_itk(path: Path) -> Volume:
    """Read an NRRD/MHA/MHD file into a :class:`Volume`.

    Raises
    ------
    ImageFormatError
        If SimpleITK cannot read it or it is not a 3D scalar image.
    """
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ImageFormatError(f"cannot read {Path(path).name}: {str(exc).strip().splitlines()[-1]}") from exc
    if image.GetDimension() == 2:
        image = sitk.JoinSeries([image])
    return sitk_to_volume(image)


def write_itk(volume: Volume, path: Path) -> None:
    """Write ``volume`` to an NRRD/MHA file atomically (compressed)."""
    import SimpleITK as sitk

    with atomic_path(Path(path)) as tmp:
        sitk.WriteImage(volume_to_sitk(volume), str(tmp), useCompression=True)


# -- dispatch ------------------------------------------------------------------------------------------------
def read_image(path: Path) -> Volume:
    """Read a NIfTI, NRRD or MHA file (chosen by suffix) into a :class:`Volume`.

    Raises
    ------
    ImageFormatError
        For an unknown suffix or an unreadable file.
    """
    path = Path(path)
    return read_nifti(path) if image_format(path) == "nifti" else read_itk(path)


def write_image(volume: Volume, path: Path) -> None:
    """Write ``volume`` as NIfTI, NRRD or MHA, chosen by the suffix of ``path``, atomically.

    Raises
    ------
    ImageFormatError
        For an unknown suffix.
    """
    path = Path(path)
    if image_format(path) == "nifti":
        write_nifti(volume, path)
    else:
        write_itk(volume, path)
    log.info("wrote %s %s", path.name, volume.shape)
