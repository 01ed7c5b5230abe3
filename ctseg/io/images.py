"""NIfTI, NRRD and MHA <-> :class:`~ctseg.volume.Volume`.

The two foreign conventions are converted here and nowhere else, one named function each way:

* NIfTI (nibabel): data indexed ``(i, j, k)`` = ``(x, y, z)``, affine to **RAS**.
  :func:`nifti_affine_from_geometry` / :func:`geometry_from_nifti_affine`.
* ITK (SimpleITK; NRRD, MHA): array from ``GetArrayFromImage`` is ``(z, y, x)`` but spacing and the direction's
  columns are in ``(x, y, z)`` order, world is LPS. :func:`volume_to_sitk` / :func:`sitk_to_volume`.
"""

from __future__ import annotations

import logging
import os
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

#: Voxel spacing accepted when an image file is read (mm, each axis): CT from fine micro-CT to thick slabs. Outside
#: it the header's units are wrong (metres, micrometres) or the file is damaged; the fix is in the file.
VOXEL_SPACING_RANGE_MM = (0.02, 100.0)

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
        If the affine is sheared (non-orthogonal columns) or holds NaN/Inf.
    """
    affine = np.asarray(affine_ras, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise GeometryError(
            f"affine (index -> RAS mm) holds NaN/Inf: {np.round(affine, 4).tolist()}; expected finite numbers. "
            "The header's sform/qform is damaged: fix or re-export the file"
        )
    a = _LPS_TO_RAS @ affine @ _ZYX_TO_IJK
    return Geometry.from_affine((shape_ijk[2], shape_ijk[1], shape_ijk[0]), a)


def _shape_3d(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """The 3D shape of an image file's array: trailing length-1 axes dropped, a 2D image one slice thick.

    Raises
    ------
    ImageFormatError
        If it is not a single 3D volume, or an axis is empty.
    """
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) == 2:
        dims.append(1)
    if len(dims) != 3:
        raise ImageFormatError(
            f"{path.name} has shape {tuple(shape)}; expected a single 3D volume. Split 4D series into 3D files first"
        )
    if min(dims) < 1:
        raise ImageFormatError(f"{path.name} has shape {tuple(shape)}; expected at least one voxel on every axis")
    return dims[0], dims[1], dims[2]


def _physical_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_data_size(path: Path, shape: tuple[int, ...], itemsize: int, *, stored_bytes: int | None = None) -> None:
    """Refuse, before allocating, an image whose header claims more data than the file holds or than memory.

    Parameters
    ----------
    path
        The file, for the message.
    shape, itemsize
        The voxel array the header describes (any axis order) and its bytes per voxel.
    stored_bytes
        Bytes of voxel data the file holds, when known (uncompressed files); ``None`` to skip that comparison.

    Raises
    ------
    ImageFormatError
        If the data would be larger than ``stored_bytes`` or than the machine's physical memory.
    """
    needed = int(np.prod(np.asarray(shape, dtype=np.float64))) * itemsize
    described = f"its header describes {'x'.join(map(str, shape))} voxels x {itemsize} bytes = {needed / 2**30:.3g} GiB"
    if stored_bytes is not None and needed > stored_bytes:
        raise ImageFormatError(
            f"cannot read {path.name}: {described}, the file holds {stored_bytes:,} bytes of voxel data; the header "
            "or the file is damaged (truncated?). Re-export the image"
        )
    memory = _physical_memory_bytes()
    if memory is not None and needed > memory:
        raise ImageFormatError(
            f"cannot read {path.name}: {described}, more than this machine's {memory / 2**30:.3g} GiB of memory; "
            "check the header's dimensions, or crop/resample the image on a larger machine"
        )


def check_spacing(geometry: Geometry, path: Path) -> None:
    """Refuse a voxel spacing outside :data:`VOXEL_SPACING_RANGE_MM` (a unit or header error, not CT).

    Raises
    ------
    ImageFormatError
        Naming the spacing found and the accepted range.
    """
    lo, hi = VOXEL_SPACING_RANGE_MM
    spacing = np.asarray(geometry.spacing_mm)
    if not np.all((spacing >= lo) & (spacing <= hi)):
        raise ImageFormatError(
            f"{path.name} has voxel spacing (z, y, x) {np.round(spacing, 6).tolist()} mm; expected {lo:g}..{hi:g} mm "
            "on every axis. The header's units or affine are wrong (metres or micrometres instead of mm?): fix the "
            "file's pixdim/affine"
        )


def _native_dtype(data: np.ndarray) -> np.ndarray:
    """float64 -> float32 (what nibabel returns after scaling); keep integer types as stored."""
    if data.dtype == np.float64:
        return data.astype(np.float32)
    if data.dtype.byteorder not in ("=", "|"):
        return data.astype(data.dtype.newbyteorder("="))
    return data


def _nifti_stored_bytes(img: Any, path: Path) -> int | None:
    """Voxel bytes an uncompressed ``.nii`` holds after its header's vox_offset; None for ``.nii.gz``."""
    if full_suffix(path) != ".nii":
        return None
    offset = int(getattr(img.dataobj, "offset", 0) or 0)
    return max(0, path.stat().st_size - offset)


def read_nifti(path: Path) -> Volume:
    """Read a ``.nii``/``.nii.gz`` file into a :class:`Volume` (array ``(Z, Y, X)``, LPS geometry).

    The header is checked before the voxel data is read: its dimensions against the file size (uncompressed) and
    the machine's memory, its voxel spacing against :data:`VOXEL_SPACING_RANGE_MM`.

    Raises
    ------
    ImageFormatError
        If nibabel cannot read the file, it is not a single 3D volume, its header claims more data than the file
        or memory holds, or its spacing is out of range.
    GeometryError
        If its affine is sheared.
    """
    import nibabel as nib

    path = Path(path)
    try:
        img: Any = nib.load(str(path))  # header only: the data is read below
        shape = _shape_3d(tuple(int(n) for n in img.shape), path)
        itemsize = np.dtype(img.get_data_dtype()).itemsize
        slope, inter = img.header.get_slope_inter()
        scaled = slope is not None and (slope, inter) != (1.0, 0.0)
    except ImageFormatError:
        raise
    except Exception as exc:  # nibabel raises several unrelated types for damaged files
        raise ImageFormatError(f"cannot read NIfTI file {path.name}: {_reason(exc)}") from exc
    check_data_size(path, img.shape, itemsize, stored_bytes=_nifti_stored_bytes(img, path))
    if scaled:  # scl_slope makes nibabel return float64 (then float32 here): the memory that takes
        check_data_size(path, img.shape, 8)
    try:
        geometry = geometry_from_nifti_affine(shape, img.affine)
    except GeometryError as exc:
        raise GeometryError(f"{path.name}: {exc}") from exc
    check_spacing(geometry, path)
    try:
        data = np.asarray(np.asanyarray(img.dataobj)).reshape(shape)
    except Exception as exc:  # truncated or damaged compressed data
        raise ImageFormatError(f"cannot read NIfTI file {path.name}: {_reason(exc)}") from exc
    data = _native_dtype(data)
    return Volume(np.ascontiguousarray(data.transpose(2, 1, 0)), geometry)


def _reason(exc: BaseException) -> str:
    """An exception in words, its type when it has no message (e.g. a bare MemoryError)."""
    text = " ".join(str(exc).split())  # one line: nibabel's messages span several
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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

    The header is read first: the data size is checked against the machine's memory and the voxel spacing
    against :data:`VOXEL_SPACING_RANGE_MM` before any voxel is read.

    Raises
    ------
    ImageFormatError
        If SimpleITK cannot read it, it is not a 3D scalar image, it would not fit in memory, or its spacing is
        out of range.
    """
    import SimpleITK as sitk

    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        size = tuple(reader.GetSize())
        components = reader.GetNumberOfComponents()
        probe = sitk.Image([1] * len(size), reader.GetPixelID(), components)  # one voxel: its numpy dtype
        check_data_size(path, size, sitk.GetArrayViewFromImage(probe).dtype.itemsize * components)
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageFormatError(f"cannot read {path.name}: {str(exc).strip().splitlines()[-1]}") from exc
    if image.GetDimension() == 2:
        image = sitk.JoinSeries([image])
    volume = sitk_to_volume(image)
    check_spacing(volume.geometry, path)
    return volume


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
