"""`Geometry` and `Volume`: the only carriers of spacing, origin and direction in ctseg.

Conventions (fixed, never configurable):

* arrays are indexed ``(z, y, x)`` = ``(slice, row, column)``; every per-axis tuple (``shape``, ``spacing_mm``)
  is given in that array-axis order;
* world coordinates are DICOM patient coordinates, LPS, in millimetres;
* ``direction[:, a]`` is the unit LPS vector along array axis ``a``;
* ``affine`` maps an index ``(k, j, i, 1)`` to LPS ``(x, y, z, 1)``:
  ``world = origin + direction @ diag(spacing) @ index``.

Conversions to other conventions (ITK x/y/z order, NIfTI RAS) live in :mod:`ctseg.io` only.

Examples
--------
>>> import numpy as np
>>> g = Geometry(shape=(2, 3, 4), spacing_mm=(2.5, 0.7, 0.7))
>>> g.index_to_world(np.array([[1, 0, 0]]))  # one slice up: +2.5 mm in LPS z (the default is axial)
array([[0. , 0. , 2.5]])
>>> Volume(np.zeros((2, 3, 4), np.int16), g).geometry.shape
(2, 3, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ctseg.errors import GeometryError

#: Tolerance on ``direction.T @ direction == I``; DICOM stores cosines with ~6 significant digits.
ORTHONORMAL_TOL = 1e-4

#: The standard axial direction: array z -> LPS +z (S), y -> +y (P), x -> +x (L). (Symmetric: rows == columns.)
AXIAL: tuple[tuple[float, float, float], ...] = ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def _as_triple(values: Sequence[float], name: str) -> tuple[float, float, float]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise GeometryError(f"{name} must be 3 finite numbers in (z, y, x) order, got {values!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


@dataclass(frozen=True)
class Geometry:
    """An image grid in LPS world space, in array-axis order ``(z, y, x)``.

    Parameters
    ----------
    shape
        Number of voxels along each array axis.
    spacing_mm
        Voxel spacing along each array axis, in mm, all > 0.
    origin_mm
        LPS position of voxel ``(0, 0, 0)``'s centre, in mm.
    direction
        3x3 matrix whose column ``a`` is the LPS unit vector of array axis ``a``. Must be orthonormal
        (a flip, i.e. determinant -1, is allowed). Default: :data:`AXIAL`.

    Raises
    ------
    GeometryError
        If any field is malformed: wrong length, non-positive spacing, non-orthonormal direction.
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[tuple[float, float, float], ...] = field(default=AXIAL)

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or any(s < 1 for s in shape):
            raise GeometryError(f"shape must be 3 positive integers (z, y, x), got {self.shape!r}")
        spacing = _as_triple(self.spacing_mm, "spacing_mm")
        if min(spacing) <= 0:
            raise GeometryError(f"spacing_mm must be > 0 on every axis, got {spacing}; check the pixel spacing tags")
        origin = _as_triple(self.origin_mm, "origin_mm")
        d = np.asarray(self.direction, dtype=np.float64)
        if d.shape != (3, 3) or not np.all(np.isfinite(d)):
            raise GeometryError(f"direction must be a finite 3x3 matrix, got shape {d.shape}")
        err = float(np.abs(d.T @ d - np.eye(3)).max())
        if err > ORTHONORMAL_TOL:
            raise GeometryError(
                f"direction is not orthonormal (max |D^T D - I| = {err:.2e}, tolerance {ORTHONORMAL_TOL}); "
                "a sheared grid (e.g. gantry tilt) must be resampled onto an orthogonal grid first"
            )
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_mm", origin)
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in d))

    # -- derived ---------------------------------------------------------------------------------------------
    @property
    def direction_matrix(self) -> npt.NDArray[np.float64]:
        """(3, 3) float64; column ``a`` is the LPS unit vector of array axis ``a``."""
        return np.array(self.direction, dtype=np.float64)

    @property
    def affine(self) -> npt.NDArray[np.float64]:
        """(4, 4) float64 matrix mapping ``(z, y, x, 1)`` indices to LPS ``(x, y, z, 1)`` in mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction_matrix * np.array(self.spacing_mm)[None, :]
        a[:3, 3] = self.origin_mm
        return a

    @classmethod
    def from_affine(cls, shape: Sequence[int], affine: npt.ArrayLike) -> Geometry:
        """Build a geometry from an index ``(z, y, x)`` -> LPS affine.

        Raises
        ------
        GeometryError
            If the affine's columns are not orthogonal or a column has zero length.
        """
        a = np.asarray(affine, dtype=np.float64)
        if a.shape != (4, 4):
            raise GeometryError(f"affine must be 4x4, got {a.shape}")
        spacing = np.linalg.norm(a[:3, :3], axis=0)
        if np.any(spacing <= 0):
            raise GeometryError(f"affine has a zero-length axis (column norms {spacing.tolist()})")
        d = a[:3, :3] / spacing[None, :]
        s = (int(shape[0]), int(shape[1]), int(shape[2]))
        return cls(s, tuple(spacing.tolist()), tuple(a[:3, 3].tolist()), tuple(map(tuple, d.tolist())))

    def index_to_world(self, index: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map ``(N, 3)`` indices in ``(z, y, x)`` order to ``(N, 3)`` LPS points in mm."""
        idx = np.asarray(index, dtype=np.float64)
        a = self.affine
        return idx @ a[:3, :3].T + a[:3, 3]

    def world_to_index(self, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map ``(N, 3)`` LPS points in mm to fractional ``(z, y, x)`` indices, ``(N, 3)`` float64."""
        p = np.asarray(points, dtype=np.float64) - np.array(self.origin_mm)
        # direction is orthonormal, so its inverse is its transpose.
        return (p @ self.direction_matrix) / np.array(self.spacing_mm)

    def is_close(self, other: Geometry, *, atol_mm: float = 1e-3, atol_direction: float = 1e-4) -> bool:
        """Whether two grids are the same within tolerances (shape exact, positions in mm).

        Compares shape exactly, spacing and origin within ``atol_mm``, direction cosines within ``atol_direction``,
        and the far corner's world position within ``atol_mm`` (so tiny direction errors on big grids count).
        """
        if self.shape != other.shape:
            return False
        if not np.allclose(self.spacing_mm, other.spacing_mm, atol=atol_mm, rtol=0):
            return False
        if not np.allclose(self.origin_mm, other.origin_mm, atol=atol_mm, rtol=0):
            return False
        if not np.allclose(self.direction_matrix, other.direction_matrix, atol=atol_direction, rtol=0):
            return False
        corner = np.array([[s - 1 for s in self.shape]])
        return bool(np.allclose(self.index_to_world(corner), other.index_to_world(corner), atol=atol_mm, rtol=0))

    def orientation_codes(self) -> str:
        """Three letters naming the LPS direction each array axis points to most, e.g. ``"SPL"`` for axial."""
        pos, neg = "LPS", "RAI"
        codes = []
        for a in range(3):
            col = self.direction_matrix[:, a]
            k = int(np.argmax(np.abs(col)))
            codes.append(pos[k] if col[k] > 0 else neg[k])
        return "".join(codes)

    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size along each array axis, ``shape * spacing``, in mm."""
        return (
            self.shape[0] * self.spacing_mm[0],
            self.shape[1] * self.spacing_mm[1],
            self.shape[2] * self.spacing_mm[2],
        )


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D array on a :class:`Geometry`; the array's shape always equals ``geometry.shape``.

    Parameters
    ----------
    array
        ``(Z, Y, X)`` array; HU (int16 or float32) for CT, an integer label map for masks.
    geometry
        The grid the array lives on.

    Raises
    ------
    GeometryError
        If the array is not 3D or its shape differs from ``geometry.shape``.
    """

    array: np.ndarray
    geometry: Geometry

    def __post_init__(self) -> None:
        if self.array.ndim != 3 or tuple(self.array.shape) != self.geometry.shape:
            raise GeometryError(
                f"array shape {tuple(self.array.shape)} does not match geometry shape {self.geometry.shape}"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """The ``(Z, Y, X)`` shape."""
        return self.geometry.shape

    def with_array(self, array: np.ndarray) -> Volume:
        """A new volume with ``array`` on this geometry (shape must match)."""
        return Volume(array, self.geometry)

    def to_closest_canonical(self, *, copy: bool = True) -> Volume:
        """Permute and flip axes (no resampling) so axis 0/1/2 point closest to LPS +z/+y/+x (S, P, L).

        The world position of every voxel is unchanged; only the indexing changes. Useful to compare two volumes
        of the same grid stored in different axis orders (e.g. a DICOM stack and a NIfTI file). With
        ``copy=False`` the array is a strided view (no memory), e.g. to pick a few display slices.
        """
        d = self.geometry.direction_matrix
        # For each world axis (z, y, x) in turn, the array axis most aligned with it.
        order: list[int] = []
        for world_axis in (2, 1, 0):
            scores = [abs(d[world_axis, a]) if a not in order else -1.0 for a in range(3)]
            order.append(int(np.argmax(scores)))
        arr = np.transpose(self.array, order)
        d = d[:, order]
        spacing = np.array(self.geometry.spacing_mm)[order]
        origin = np.array(self.geometry.origin_mm, dtype=np.float64)
        shape = np.array(self.geometry.shape)[order]
        flips = []
        for a, world_axis in enumerate((2, 1, 0)):
            if d[world_axis, a] < 0:
                origin = origin + d[:, a] * spacing[a] * (shape[a] - 1)
                d[:, a] = -d[:, a]
                flips.append(a)
        if flips:
            arr = np.flip(arr, axis=tuple(flips))
        geom = Geometry(
            (int(shape[0]), int(shape[1]), int(shape[2])),
            tuple(spacing.tolist()),
            tuple(origin.tolist()),
            tuple(map(tuple, d.tolist())),
        )
        return Volume(np.ascontiguousarray(arr) if copy else arr, geom)
