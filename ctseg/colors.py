"""Display colours of classes, shared by training (model.json), DICOM SEG and the napari plugin.

Fixed colours for common CT structures, a generic palette otherwise."""

from __future__ import annotations

#: RGB colours (close to those of common CT atlases) for frequent structure names.
KNOWN_COLORS: dict[str, tuple[int, int, int]] = {
    "liver": (221, 130, 101),
    "spleen": (157, 108, 162),
    "kidney": (185, 102, 83),
    "kidney_left": (185, 102, 83),
    "kidney_right": (185, 102, 83),
    "aorta": (224, 97, 76),
    "lung": (197, 165, 145),
    "lungs": (197, 165, 145),
    "spine": (241, 214, 145),
    "vertebrae": (241, 214, 145),
    "pancreas": (249, 180, 111),
    "stomach": (216, 132, 105),
    "gallbladder": (139, 150, 98),
    "heart": (206, 110, 84),
    "bladder": (222, 154, 132),
}
PALETTE: list[tuple[int, int, int]] = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
]


def label_colors(labels: dict[int, str]) -> dict[int, tuple[int, int, int]]:
    """A colour per class index (background excluded); known names get their usual colour."""
    out = {}
    for i, (idx, name) in enumerate(sorted(labels.items())):
        out[idx] = KNOWN_COLORS.get(name.lower(), PALETTE[i % len(PALETTE)])
    return out
