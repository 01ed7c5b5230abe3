"""A synthetic CT phantom with realistic HU, for the demo and for users trying ctseg without data.

The body is an elliptic cylinder of muscle with a fat rim holding lungs, liver, spleen, kidneys, aorta and spine;
each structure has a known label. Values are HU with partial-volume blur and seeded noise, so the same seed gives
the same phantom.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctseg.volume import Geometry, Volume

#: label -> (name, HU mean). Contrast-enhanced portal-venous values; liver and spleen differ in size and side.
PHANTOM_LABELS: dict[int, tuple[str, float]] = {
    1: ("liver", 110.0),
    2: ("spleen", 130.0),
    3: ("kidneys", 160.0),
    4: ("lungs", -850.0),
    5: ("aorta", 180.0),
    6: ("spine", 600.0),
}
AIR_HU = -1000.0
FAT_HU = -100.0
MUSCLE_HU = 50.0
NOISE_HU = 12.0
#: Partial-volume blur (voxels) applied to the noise-free image.
BLUR_VOXELS = 0.6


def _ellipsoid(p: np.ndarray, centre: tuple[float, float, float], radii: tuple[float, float, float]) -> np.ndarray:
    return np.sum(((p - np.array(centre)) / np.array(radii)) ** 2, axis=1) <= 1.0


def make_phantom(geometry: Geometry, *, seed: int = 0) -> tuple[Volume, Volume]:
    """A phantom CT and its label map on ``geometry`` (shapes are defined in world mm, centred on the grid).

    The anatomy is in patient (LPS) coordinates, so it is the same whatever the grid's orientation: the liver on
    the patient's right (-x), the spleen on the left, kidneys either side of the spine, lungs above the liver dome.

    Returns
    -------
    (Volume, Volume)
        ``(Z, Y, X)`` int16 HU, and the uint8 label map (:data:`PHANTOM_LABELS`).
    """
    from scipy import ndimage

    idx = np.indices(geometry.shape).reshape(3, -1).T
    world = geometry.index_to_world(idx)
    centre = geometry.index_to_world([[(s - 1) / 2 for s in geometry.shape]])[0]
    p = (world - centre) / (np.array(geometry.extent_mm()).min() / 2.0)  # LPS, in units of the half-extent
    x, y, z = p.T
    body = (x / 0.9) ** 2 + (y / 0.62) ** 2 <= 1.0
    inner = (x / 0.8) ** 2 + (y / 0.53) ** 2 <= 1.0
    hu = np.full(x.shape, AIR_HU)
    hu[body] = FAT_HU
    hu[inner] = MUSCLE_HU
    labels = np.zeros(x.shape, np.uint8)
    shapes = {
        4: (
            _ellipsoid(p, (-0.38, -0.05, 0.45), (0.3, 0.4, 0.55))
            | _ellipsoid(p, (0.38, -0.05, 0.45), (0.28, 0.4, 0.55))
        ),
        1: _ellipsoid(p, (-0.32, -0.02, -0.15), (0.36, 0.34, 0.3)),
        2: _ellipsoid(p, (0.45, 0.12, -0.05), (0.14, 0.16, 0.2)),
        3: _ellipsoid(p, (-0.25, 0.3, -0.5), (0.1, 0.1, 0.2)) | _ellipsoid(p, (0.25, 0.3, -0.45), (0.1, 0.1, 0.2)),
        5: ((x - 0.08) / 0.06) ** 2 + ((y - 0.22) / 0.06) ** 2 <= 1.0,
        6: (x / 0.11) ** 2 + ((y - 0.4) / 0.1) ** 2 <= 1.0,
    }
    for label, mask in shapes.items():
        mask &= inner
        labels[mask] = label
        hu[mask] = PHANTOM_LABELS[label][1]
    hu = ndimage.gaussian_filter(hu.reshape(geometry.shape), BLUR_VOXELS)
    rng = np.random.default_rng(seed)
    hu += rng.normal(0.0, NOISE_HU, hu.shape)
    ct = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    return Volume(ct, geometry), Volume(labels.reshape(geometry.shape), geometry)


def write_phantom_dataset(
    root: Path,
    n_cases: int,
    *,
    shape: tuple[int, int, int] = (40, 64, 64),
    spacing_mm: tuple[float, float, float] = (3.0, 2.0, 2.0),
    seed: int = 0,
) -> Path:
    """Write an nnU-Net v2 raw dataset of ``n_cases`` phantoms (NIfTI) with varied spacing and position.

    Each case's grid is jittered (spacing +-10 %, origin +-20 mm, a flip of the x axis on odd cases) so that
    training and inference exercise resampling and orientation handling.
    """
    import json

    from ctseg.io.images import write_image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for k in range(n_cases):
        spacing = tuple(float(s * rng.uniform(0.9, 1.1)) for s in spacing_mm)
        origin = tuple(float(v) for v in rng.uniform(-20, 20, 3))
        direction = AXIAL_FLIPPED_X if k % 2 else ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0))
        geometry = Geometry(shape, spacing, origin, direction)  # type: ignore[arg-type]
        ct, labels = make_phantom(geometry, seed=seed * 1000 + k)
        write_image(ct, root / "imagesTr" / f"phantom_{k:03d}_0000.nii.gz")
        write_image(labels, root / "labelsTr" / f"phantom_{k:03d}.nii.gz")
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{name: value for value, (name, _) in PHANTOM_LABELS.items()}},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "description": "ctseg synthetic phantoms",
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


#: Axial with the x axis reversed (array x runs right-to-left in LPS terms: towards -x).
AXIAL_FLIPPED_X = ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0))
