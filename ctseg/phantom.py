"""A synthetic CT phantom with realistic HU, for the demo and for users trying ctseg without data.

The body is an elliptic cylinder of soft tissue with a fat rim, two lungs, a liver, a spine and an aorta; each
structure has a known label. Values are HU with seeded noise, so the same seed gives the same phantom.
"""

from __future__ import annotations

import numpy as np

from ctseg.volume import Geometry, Volume

#: label -> (name, HU mean)
PHANTOM_LABELS: dict[int, tuple[str, float]] = {
    1: ("liver", 60.0),
    2: ("lungs", -850.0),
    3: ("spine", 700.0),
    4: ("aorta", 45.0),
}
AIR_HU = -1000.0
FAT_HU = -100.0
MUSCLE_HU = 40.0
NOISE_HU = 12.0


def make_phantom(geometry: Geometry, *, seed: int = 0) -> tuple[Volume, Volume]:
    """A phantom CT and its label map on ``geometry`` (shapes are defined in world mm, centred on the grid).

    Returns
    -------
    (Volume, Volume)
        ``(Z, Y, X)`` int16 HU, and the uint8 label map (:data:`PHANTOM_LABELS`).
    """
    idx = np.indices(geometry.shape).reshape(3, -1).T
    world = geometry.index_to_world(idx)
    centre = geometry.index_to_world([[(s - 1) / 2 for s in geometry.shape]])[0]
    x, y, z = (world - centre).T  # LPS mm relative to the grid centre
    ext = np.array(geometry.extent_mm()).min() / 2.0
    body = (x / (0.9 * ext)) ** 2 + (y / (0.65 * ext)) ** 2 <= 1.0
    inner = (x / (0.8 * ext)) ** 2 + (y / (0.56 * ext)) ** 2 <= 1.0
    hu = np.full(x.shape, AIR_HU)
    hu[body] = FAT_HU
    hu[inner] = MUSCLE_HU
    labels = np.zeros(x.shape, np.uint8)
    r = 0.22 * ext
    shapes = {
        2: (((np.abs(x) - 0.38 * ext) / r) ** 2 + ((y + 0.1 * ext) / (1.3 * r)) ** 2 <= 1.0) & (z > -0.2 * ext),
        1: ((x + 0.3 * ext) / (1.2 * r)) ** 2 + ((y + 0.05 * ext) / r) ** 2 + ((z + 0.45 * ext) / (1.1 * r)) ** 2
        <= 1.0,
        3: (x / (0.35 * r)) ** 2 + ((y - 0.38 * ext) / (0.35 * r)) ** 2 <= 1.0,
        4: ((x - 0.12 * ext) / (0.2 * r)) ** 2 + ((y - 0.2 * ext) / (0.2 * r)) ** 2 <= 1.0,
    }
    for label, mask in shapes.items():
        mask &= inner
        labels[mask] = label
        hu[mask] = PHANTOM_LABELS[label][1]
    rng = np.random.default_rng(seed)
    hu += rng.normal(0.0, NOISE_HU, hu.shape)
    ct = np.clip(np.round(hu), -1024, 3071).astype(np.int16).reshape(geometry.shape)
    return Volume(ct, geometry), Volume(labels.reshape(geometry.shape), geometry)
