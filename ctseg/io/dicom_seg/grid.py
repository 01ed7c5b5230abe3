"""Where a 2D DICOM frame lies on a 3D grid: shared by the DICOM SEG writer and reader."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ctseg.volume import Geometry

#: A frame lies on a grid when its pixels are within this distance (mm, per axis) of grid voxel centres.
GRID_TOL_MM = 0.05
MAX_LABEL = 255


@dataclass(frozen=True)
class Plane:
    """One 2D frame in LPS mm: top-left pixel centre, row/column cosines, (row, column) spacing and size."""

    ipp: np.ndarray
    row_cos: np.ndarray
    col_cos: np.ndarray
    spacing: tuple[float, float]
    size: tuple[int, int]


Where = tuple[tuple[Any, ...], bool]


def place(geometry: Geometry, plane: Plane) -> Where | None:
    """Index of the ``geometry``-shaped array region holding ``plane`` and whether its view needs ``.T``.

    None when the frame's pixels do not all sit on voxel centres (within :data:`GRID_TOL_MM`) inside the grid.
    """
    ends = [plane.ipp, plane.ipp + plane.spacing[0] * plane.col_cos, plane.ipp + plane.spacing[1] * plane.row_cos]
    idx = geometry.world_to_index(np.stack(ends))
    start, steps = idx[0], idx[1:] - idx[0]  # fractional voxel index of pixel (0, 0); per frame row and column
    axes = [int(np.argmax(np.abs(step))) for step in steps]
    if axes[0] == axes[1]:
        return None
    signs = [1 if steps[i][axes[i]] > 0 else -1 for i in range(2)]
    unit = np.zeros((2, 3))
    unit[0, axes[0]], unit[1, axes[1]] = signs
    first = np.round(start)
    # Largest distance of any pixel from its voxel centre (the error grows linearly across the frame).
    error = np.abs(start - first) + sum((n - 1) * np.abs(steps[i] - unit[i]) for i, n in enumerate(plane.size))
    if np.any(error * np.array(geometry.spacing_mm) > GRID_TOL_MM):
        return None
    first_i = first.astype(int)
    index: list[Any] = [None] * 3
    for axis, sign, n in zip(axes, signs, plane.size):
        lo, last = first_i[axis], first_i[axis] + sign * (n - 1)
        if min(lo, last) < 0 or max(lo, last) >= geometry.shape[axis]:
            return None
        index[axis] = slice(lo, last + sign if last + sign >= 0 else None, sign)
    (normal,) = {0, 1, 2} - set(axes)
    if not 0 <= first_i[normal] < geometry.shape[normal]:
        return None
    index[normal] = int(first_i[normal])
    return tuple(index), axes[0] > axes[1]


def view(array: np.ndarray, where: Where) -> np.ndarray:
    """The ``(rows, cols)`` view of ``array`` that a placed frame occupies."""
    index, transpose = where
    view = array[index]
    return view.T if transpose else view
