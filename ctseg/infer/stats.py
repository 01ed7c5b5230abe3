"""Per-structure statistics of a label map over its CT: voxels, volume (mL), HU mean/std, bounding box."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ctseg.volume import Volume

MM3_PER_ML = 1000.0
#: Slices per slab when summing HU inside a bounding box (bounded float64 temporaries on long structures).
SLAB = 64


def _box_sums(lab: np.ndarray, hu: np.ndarray, box: tuple[slice, ...], k: int) -> tuple[int, float, float]:
    """Voxel count, HU sum and HU sum of squares of class ``k`` inside its bounding box, slab by slab along z."""
    n, s, s2 = 0, 0.0, 0.0
    zs = box[0]
    for z0 in range(zs.start, zs.stop, SLAB):
        sub = (slice(z0, min(z0 + SLAB, zs.stop)), box[1], box[2])
        values = hu[sub][lab[sub] == k].astype(np.float64)
        n += values.size
        s += float(values.sum())
        s2 += float(np.dot(values, values))
    return n, s, s2


def structure_stats(labels: Volume, image: Volume, names: dict[int, str]) -> dict[str, Any]:
    """Statistics for every class in ``names`` (absent classes get zero counts).

    One pass over the label map finds each structure's bounding box (``scipy.ndimage.find_objects``); counts and
    HU moments are then computed inside the boxes only, so the cost follows the structures' size, not the CT's.

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
    boxes = ndimage.find_objects(lab, max_label=max(index, default=0)) if index else []
    out: dict[str, Any] = {}
    for k in index:
        box = boxes[k - 1] if k - 1 < len(boxes) else None
        n, s, s2 = _box_sums(lab, hu, box, k) if box is not None else (0, 0.0, 0.0)
        entry: dict[str, Any] = {"label": k, "voxels": n, "volume_ml": round(n * voxel_ml, 3)}
        if n and box is not None:
            mean = s / n
            entry["mean_hu"] = round(mean, 2)
            entry["std_hu"] = round(float(np.sqrt(max(s2 / n - mean * mean, 0.0))), 2)
            lo = [sl.start for sl in box]
            hi = [sl.stop - 1 for sl in box]
            entry["bbox_index_zyx"] = [lo, hi]
            centre = labels.geometry.index_to_world([[(a + b) / 2 for a, b in zip(lo, hi, strict=True)]])[0]
            entry["bbox_centre_lps_mm"] = [round(float(v), 2) for v in centre]
        else:
            entry.update(mean_hu=None, std_hu=None, bbox_index_zyx=None, bbox_centre_lps_mm=None)
        out[names[k]] = entry
    return {"voxel_volume_ml": voxel_ml, "structures": out}
