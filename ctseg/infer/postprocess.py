"""Label-map post-processing: keep the largest connected component per class, fill holes per class."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def keep_largest_component(labels: np.ndarray) -> np.ndarray:
    """Per class, keep only its largest 26-connected component (the rest become background).

    Examples
    --------
    >>> a = np.zeros((1, 1, 6), np.uint8); a[0, 0, [0, 2, 3]] = 1
    >>> keep_largest_component(a)[0, 0].tolist()
    [0, 0, 1, 1, 0, 0]
    """
    out = labels.copy()
    structure = np.ones((3, 3, 3), bool)
    for value in np.unique(labels):
        if value == 0:
            continue
        comp, n = ndimage.label(labels == value, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        out[(comp != 0) & (comp != int(sizes.argmax()))] = 0
    return out


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Per class, fill enclosed background holes (3D) with that class.

    Examples
    --------
    >>> a = np.ones((3, 3, 3), np.uint8); a[1, 1, 1] = 0
    >>> int(fill_holes(a)[1, 1, 1])
    1
    """
    out = labels.copy()
    for value in np.unique(labels):
        if value == 0:
            continue
        filled = ndimage.binary_fill_holes(labels == value)
        out[filled & (out == 0)] = value
    return out
