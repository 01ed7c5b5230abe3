"""Per-structure statistics of a label map over its CT: voxels, volume (mL), HU mean/std, bounding box."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ctseg.volume import Volume

MM3_PER_ML = 1000.0
#: Slices per slab for the statistics pass.
SLAB = 16


def structure_stats(labels: Volume, image: Volume, names: dict[int, str]) -> dict[str, Any]:
    """Statistics for every class in ``names`` (absent classes get zero counts).

    Returns
    -------
    dict
        ``{"voxel_volume_ml": ..., "structures": {name: {label, voxels, volume_ml, mean_hu, std_hu,
        bbox_index_zyx: [[z0, y0, x0], [z1, y1, x1]] (inclusive), bbox_centre_lps_mm}}}``.
    """
    voxel_ml = float(np.prod(labels.geometry.spacing_mm)) / MM3_PER_ML
    lab = np.asarray(labels.array)
    hu = np.asarray(image.array)
    index = sorted(k for k in names if k != 0)
    top = max(index, default=0)
    length = max(top, int(lab.max(initial=0))) + 1
    counts = np.zeros(length, np.int64)
    sums = np.zeros(length)
    squares = np.zeros(length)
    # Slab by slab along z: float64 sums with bounded memory, and each slab stays in cache for its three passes.
    for z0 in range(0, lab.shape[0], SLAB):
        lab_slab = lab[z0 : z0 + SLAB].ravel()
        hu_slab = hu[z0 : z0 + SLAB].ravel().astype(np.float64)
        counts += np.bincount(lab_slab, minlength=length)
        sums += np.bincount(lab_slab, weights=hu_slab, minlength=length)
        squares += np.bincount(lab_slab, weights=hu_slab * hu_slab, minlength=length)
    counts, sums, squares = counts[index], sums[index], squares[index]
    boxes = ndimage.find_objects(lab, max_label=top)
    out: dict[str, Any] = {}
    for k, count, s, s2 in zip(index, counts, sums, squares, strict=True):
        n = int(count)
        entry: dict[str, Any] = {"label": k, "voxels": n, "volume_ml": round(n * voxel_ml, 3)}
        if n:
            mean = float(s) / n
            entry["mean_hu"] = round(mean, 2)
            entry["std_hu"] = round(float(np.sqrt(max(float(s2) / n - mean * mean, 0.0))), 2)
            box = boxes[k - 1]
            lo = [sl.start for sl in box]
            hi = [sl.stop - 1 for sl in box]
            entry["bbox_index_zyx"] = [lo, hi]
            centre = labels.geometry.index_to_world([[(a + b) / 2 for a, b in zip(lo, hi, strict=True)]])[0]
            entry["bbox_centre_lps_mm"] = [round(float(v), 2) for v in centre]
        else:
            entry.update(mean_hu=None, std_hu=None, bbox_index_zyx=None, bbox_centre_lps_mm=None)
        out[names[k]] = entry
    return {"voxel_volume_ml": voxel_ml, "structures": out}
