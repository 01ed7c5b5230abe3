"""The NumPy/zlib NIfTI writer: nibabel reads back the same voxels, qform, sform, codes and units."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctseg.errors import ImageFormatError
from ctseg.io.images import nifti_affine_from_geometry, read_image, write_image
from ctseg.io.nifti_write import nifti_header, quaternion
from ctseg.volume import Geometry, Volume


def _rotation(seed: int, left_handed: bool) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.linalg.det(q))
    if left_handed:
        q[:, 0] = -q[:, 0]
    return q


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_nibabel_reads_what_was_written(tmp_path: Path, suffix: str, dtype: type) -> None:
    rng = np.random.default_rng(1)
    for seed in range(4):
        direction = tuple(map(tuple, _rotation(seed, left_handed=seed % 2 == 1)))
        g = Geometry((5, 6, 7), (2.5, 0.7, 0.9), (10.0, -20.0, 30.0), direction)  # type: ignore[arg-type]
        volume = Volume(rng.integers(0, 9, g.shape).astype(dtype), g)
        path = tmp_path / f"v{suffix}"
        write_image(volume, path)
        img = nib.load(path)
        affine = nifti_affine_from_geometry(g)
        np.testing.assert_allclose(img.get_qform(), affine, atol=1e-4)
        np.testing.assert_allclose(img.get_sform(), affine, atol=1e-4)
        assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 1)
        assert img.header.get_xyzt_units()[0] == "mm"
        assert img.get_data_dtype() == np.dtype(dtype)
        back = read_image(path)
        np.testing.assert_array_equal(back.array, volume.array)
        assert back.geometry.is_close(g)


def test_quaternion_of_a_half_turn_keeps_a_non_negative() -> None:
    qfac, b, c, d = quaternion(np.diag([1.0, -1.0, -1.0]))
    assert (qfac, b, c, d) == (1.0, 1.0, 0.0, 0.0)


def test_unsupported_voxel_type_is_refused() -> None:
    with pytest.raises(ImageFormatError, match="cannot write complex64 voxels to NIfTI; expected one of uint8"):
        nifti_header((2, 2, 2), np.dtype(np.complex64), np.eye(4))


def test_boolean_mask_is_written_as_bytes(tmp_path: Path) -> None:
    g = Geometry((2, 3, 4))
    mask = np.zeros(g.shape, bool)
    mask[1, 2, 3] = True
    write_image(Volume(mask, g), tmp_path / "m.nii.gz")
    back = read_image(tmp_path / "m.nii.gz")
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, mask)
