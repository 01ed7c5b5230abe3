"""``preview.png``: axial, coronal and sagittal slices through the structures, mask overlaid in the class colours.

Slices are shown in the radiological convention (patient's right on the image's left, anterior and superior up)
with the true voxel aspect ratio, whatever the volume's orientation on disk. Drawn with Pillow (NumPy blending,
nearest-neighbour scaling, Pillow's built-in font for the titles) instead of matplotlib: the same picture without
matplotlib's import and figure machinery, which cost about as much as writing the mask in ``ctseg predict``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ctseg.io.atomic import atomic_path
from ctseg.volume import Volume

if TYPE_CHECKING:
    from PIL.Image import Image as PilImage

WINDOW = (40.0, 400.0)  # soft tissue
ALPHA = 0.45
#: Each view is scaled (nearest neighbour, true aspect) to fit a square of this many pixels.
PANEL_PX = 380
MARGIN_PX = 10
TITLE_PX = 22
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


#: Above this many voxels the foreground's centre is taken on every second voxel along each axis: it only picks the
#: slices shown (within 2 voxels of the full count), at an eighth of the work (0.09 s -> 0.015 s on 300x512x512).
CENTRE_SUBSAMPLE_VOXELS = 8_000_000


def _centre(labels: np.ndarray) -> np.ndarray:
    """The centre of the foreground, from per-axis projections (no coordinate list of every voxel)."""
    step = 2 if labels.size > CENTRE_SUBSAMPLE_VOXELS else 1
    fg = labels[::step, ::step, ::step] > 0
    if step > 1 and not fg.any():  # a foreground of a few voxels between the samples: count every voxel
        step, fg = 1, labels > 0
    centre = np.array(labels.shape) // 2
    if fg.any():
        zy = fg.sum(axis=2, dtype=np.int64)  # (Z, Y): one pass over the volume for all three profiles
        profiles = (zy.sum(axis=1), zy.sum(axis=0), fg.sum(axis=(0, 1), dtype=np.int64))
        for axis, profile in enumerate(profiles):
            mean = (profile * np.arange(len(profile))).sum() / profile.sum()
            centre[axis] = min(int(np.round(mean * step)), labels.shape[axis] - 1)
    return centre


def blend_slice(hu: np.ndarray, labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8: the HU slice in the soft-tissue window, labelled pixels blended with their colour.

    ``lut``: ``(K, 3)`` float RGB 0-255 per label value (label values beyond it are clipped to its last row).
    """
    lo, hi = WINDOW[0] - WINDOW[1] / 2, WINDOW[0] + WINDOW[1] / 2
    gray = (np.clip(hu.astype(np.float32), lo, hi) - lo) * (255.0 / (hi - lo))
    rgb = np.repeat(gray[..., None], 3, axis=2)
    lab = np.clip(labels, 0, len(lut) - 1)
    on = lab > 0
    rgb[on] = (1.0 - ALPHA) * rgb[on] + ALPHA * lut[lab[on]]
    return np.round(rgb).astype(np.uint8)


def _panel(rgb: np.ndarray, row_mm: float, col_mm: float) -> PilImage:
    """The slice as a Pillow image scaled to fit ``PANEL_PX`` with pixels of true aspect (rows ``row_mm`` tall)."""
    from PIL import Image

    height_mm, width_mm = rgb.shape[0] * row_mm, rgb.shape[1] * col_mm
    scale = PANEL_PX / max(height_mm, width_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    return Image.fromarray(rgb, "RGB").resize(size, Image.Resampling.NEAREST)


def write_preview(
    image: Volume, labels: Volume, colors: dict[int, tuple[int, int, int]], path: Path, *, title: str = ""
) -> None:
    """Render the three orthogonal views through the foreground's centre to ``path`` (PNG, atomic)."""
    from PIL import Image, ImageDraw, ImageFont

    img = image.to_closest_canonical(copy=False)  # axes: z (S), y (P), x (L); views, no copy of the scan
    lab = labels.to_closest_canonical(copy=False)
    c = _centre(np.asarray(lab.array))
    sz, sy, sx = img.geometry.spacing_mm
    lut = np.zeros((max(colors, default=0) + 1, 3), np.float32)
    for k, rgb in colors.items():
        lut[k] = rgb
    a, m = np.asarray(img.array), np.asarray(lab.array)
    views = [  # name, HU slice, label slice, row and column spacing; coronal/sagittal flipped so superior is up
        ("axial", a[c[0]], m[c[0]], sy, sx),
        ("coronal", a[::-1, c[1], :], m[::-1, c[1], :], sz, sx),
        ("sagittal", a[::-1, :, c[2]], m[::-1, :, c[2]], sz, sy),
    ]
    top = TITLE_PX * (2 if title else 1)
    canvas = Image.new("RGB", (3 * PANEL_PX + 4 * MARGIN_PX, PANEL_PX + top + 2 * MARGIN_PX), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    if title:
        draw.text((canvas.width // 2, MARGIN_PX), title, fill=TEXT, font=font, anchor="mt")
    for i, (name, hu, ml, row_mm, col_mm) in enumerate(views):
        panel = _panel(blend_slice(hu, ml, lut), float(row_mm), float(col_mm))
        x0 = MARGIN_PX + i * (PANEL_PX + MARGIN_PX)
        y0 = top + MARGIN_PX
        canvas.paste(panel, (x0 + (PANEL_PX - panel.width) // 2, y0 + (PANEL_PX - panel.height) // 2))
        draw.text((x0 + PANEL_PX // 2, y0 - 6), name, fill=TEXT, font=font, anchor="ms")
    with atomic_path(Path(path)) as tmp:
        canvas.save(tmp, format="PNG", compress_level=1)
