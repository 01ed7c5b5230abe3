from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from ctseg.errors import GeometryError, ImageFormatError
from ctseg.io import read_volume
from ctseg.io.images import (
    geometry_from_nifti_affine,
    nifti_affine_from_geometry,
    read_image,
    sitk_to_volume,
    volume_to_sitk,
    write_image,
)
from ctseg.volume import Geometry, Volume
from tests.synthetic import OBLIQUE, make_volume


def _oblique() -> Volume:
    v = make_volume(shape=(5, 7, 9), spacing=(2.5, 0.7, 0.9), direction=OBLIQUE, origin=(12.0, -30.0, 45.0))
    return v.with_array(v.array.astype(np.float32))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_write_read_round_trip(tmp_path: Path, suffix: str) -> None:
    v = _oblique()
    path = tmp_path / f"ct{suffix}"
    write_image(v, path)
    back = read_image(path)
    assert back.geometry.is_close(v.geometry, atol_mm=1e-4)
    np.testing.assert_array_equal(back.array, v.array)
    assert back.array.dtype == np.float32
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_int16_kept(tmp_path: Path) -> None:
    v = Volume(np.arange(60, dtype=np.int16).reshape(3, 4, 5) - 1024, Geometry((3, 4, 5), (3.0, 1.0, 1.0)))
    write_image(v, tmp_path / "a.nii.gz")
    assert read_image(tmp_path / "a.nii.gz").array.dtype == np.int16


def test_nifti_affine_is_ras_of_xyz_array() -> None:
    # Axial LPS identity grid: NIfTI i runs along x (L in LPS = -R), j along y (P = -A), k along z (S).
    g = Geometry((3, 4, 5), (2.0, 0.5, 0.7), (10.0, 20.0, 30.0))
    a = nifti_affine_from_geometry(g)
    np.testing.assert_allclose(a[:3, :3], np.diag([-0.7, -0.5, 2.0]))
    np.testing.assert_allclose(a[:3, 3], [-10.0, -20.0, 30.0])
    assert geometry_from_nifti_affine((5, 4, 3), a).is_close(g, atol_mm=1e-12)


def test_nifti_world_agrees_with_nibabel(tmp_path: Path) -> None:
    v = _oblique()
    write_image(v, tmp_path / "v.nii.gz")
    img = nib.load(tmp_path / "v.nii.gz")
    ijk = np.array([2, 3, 4])  # nibabel index (x, y, z) = our (z, y, x) = (4, 3, 2)
    ras = nib.affines.apply_affine(img.affine, ijk)
    lps = v.geometry.index_to_world([[4, 3, 2]])[0]
    np.testing.assert_allclose(ras, lps * np.array([-1, -1, 1]), atol=1e-4)
    assert np.asarray(img.dataobj)[2, 3, 4] == v.array[4, 3, 2]


def test_sitk_world_agrees() -> None:
    v = _oblique()
    img = volume_to_sitk(v)
    lps = img.TransformIndexToPhysicalPoint((4, 3, 2))  # ITK index is (x, y, z)
    np.testing.assert_allclose(lps, v.geometry.index_to_world([[2, 3, 4]])[0], atol=1e-9)
    assert img.GetPixel(4, 3, 2) == v.array[2, 3, 4]
    assert sitk_to_volume(img).geometry.is_close(v.geometry, atol_mm=1e-9)


def test_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ImageFormatError, match=r"unknown image format '\.png'"):
        write_image(_oblique(), tmp_path / "x.png")


def test_damaged_nifti(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(ImageFormatError, match="cannot read NIfTI file bad.nii.gz"):
        read_image(bad)
    bad_nrrd = tmp_path / "bad.nrrd"
    bad_nrrd.write_bytes(b"garbage")
    with pytest.raises(ImageFormatError, match="cannot read bad.nrrd"):
        read_image(bad_nrrd)


def test_4d_nifti_refused(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), tmp_path / "4d.nii.gz")
    with pytest.raises(ImageFormatError, match="expected a single 3D volume"):
        read_image(tmp_path / "4d.nii.gz")


def test_sheared_nifti_refused(tmp_path: Path) -> None:
    a = np.eye(4)
    a[0, 1] = 0.5
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), a), tmp_path / "shear.nii.gz")
    with pytest.raises(GeometryError, match="shear.nii.gz: direction is not orthonormal"):
        read_image(tmp_path / "shear.nii.gz")


def test_read_volume_dispatches_to_image(tmp_path: Path) -> None:
    v = _oblique()
    write_image(v, tmp_path / "v.mha")
    assert read_volume(tmp_path / "v.mha").geometry.is_close(v.geometry, atol_mm=1e-4)


def test_sitk_vector_image_refused() -> None:
    img = sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3)
    with pytest.raises(ImageFormatError, match="3 components per voxel"):
        sitk_to_volume(img)
