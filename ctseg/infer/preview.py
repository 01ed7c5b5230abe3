"""``preview.png``: axial, coronal and sagittal slices through the structures, mask overlaid in the class colours.

Slices are shown in the radiological convention (patient's right on the image's left, anterior and superior up)
with the true voxel aspect ratio, whatever the volume's orientation on disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctseg.io.atomic import atomic_path
from ctseg.volume import Volume

WINDOW = (40.0, 400.0)  # soft tissue
ALPHA = 0.45


def write_preview(
    image: Volume, labels: Volume, colors: dict[int, tuple[int, int, int]], path: Path, *, title: str = ""
) -> None:
    """Render the three orthogonal views through the foreground's centre to ``path`` (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = image.to_closest_canonical(copy=False)  # axes: z (S), y (P), x (L); views, no copy of the scan
    lab = labels.to_closest_canonical(copy=False)
    # The centre of the foreground, from per-axis projections (no coordinate list of every voxel).
    fg = lab.array > 0
    centre = np.array(lab.shape) // 2
    if fg.any():
        for axis in range(3):
            profile = fg.sum(axis=tuple(a for a in range(3) if a != axis))
            centre[axis] = int(np.round((profile * np.arange(len(profile))).sum() / profile.sum()))
    lo, hi = WINDOW[0] - WINDOW[1] / 2, WINDOW[0] + WINDOW[1] / 2
    sz, sy, sx = img.geometry.spacing_mm
    views = [
        ("axial", img.array[centre[0]], lab.array[centre[0]], sy / sx, False),
        ("coronal", img.array[:, centre[1], :], lab.array[:, centre[1], :], sz / sx, True),
        ("sagittal", img.array[:, :, centre[2]], lab.array[:, :, centre[2]], sz / sy, True),
    ]
    lut = np.zeros((max(colors, default=0) + 1, 4))
    for k, (r, g, b) in colors.items():
        lut[k] = (r / 255, g / 255, b / 255, ALPHA)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), dpi=100)
    for ax, (name, sl, ml, aspect, flip_up) in zip(axes, views, strict=True):
        if flip_up:  # superior at the top
            sl, ml = sl[::-1], ml[::-1]
        ax.imshow(np.clip(sl, lo, hi), cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        ax.imshow(lut[np.clip(ml, 0, len(lut) - 1)], aspect=aspect, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
