"""Make ``docs/napari_review.png``: the ctseg-napari review widget on the real TotalSegmentator example CT.

Run (needs an X server; napari's offscreen Qt platform does not render image layers)::

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/make_napari_screenshot.py

Inputs: ``../shared/data/totalseg_abdomen/example_ct.nii.gz`` and its mask ``example_seg_fast_force_split.nii.gz``
(TotalSegmentator class ids; the names come from the mask's embedded label table). Both are opened through the
plugin's reader, as a user would, the review widget is docked, and the window is saved as a palette PNG (< 300 KB).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "totalseg_abdomen"
OUT = ROOT / "docs" / "napari_review.png"
WINDOW_SIZE = (1800, 960)
DOCK_WIDTH = 640
#: Structure whose centre the view is moved to (TotalSegmentator id 5 = liver), and demo review decisions.
FOCUS_LABEL = 5
DECISIONS = {5: ("accepted", ""), 1: ("accepted", ""), 7: ("flagged", "tail under-segmented?")}
PALETTE_COLOURS = 256

log = logging.getLogger("make_napari_screenshot")


def main() -> None:
    """Open the CT and mask in napari with the review widget docked and save the screenshot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with example_ct.nii.gz and the mask")
    parser.add_argument("--out", type=Path, default=OUT, help="PNG to write")
    args = parser.parse_args()

    import napari
    from ctseg_napari._qt.review_widget import ReviewWidget
    from PIL import Image as PILImage
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="ctseg-napari review", show=True)
    viewer.window.resize(*WINDOW_SIZE)
    (ct,) = viewer.open(str(args.data / "example_ct.nii.gz"), plugin="ctseg-napari")
    (mask,) = viewer.open(str(args.data / "example_seg_fast_force_split.nii.gz"), plugin="ctseg-napari")
    widget = ReviewWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="Review segmentation", area="right")
    viewer.window._qt_window.resizeDocks([dock], [DOCK_WIDTH], Qt.Orientation.Horizontal)  # room for every column
    widget.set_window("soft_tissue")
    for label, (status, note) in DECISIONS.items():
        widget.set_status(label, status)
        if note:
            widget.set_note(label, note)
    widget.go_to(FOCUS_LABEL)
    for _ in range(5):  # let Qt lay out the resized dock before fitting the view to the canvas
        QApplication.processEvents()
    viewer.reset_view()
    QApplication.processEvents()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    image = PILImage.fromarray(np.asarray(shot)[..., :3]).quantize(PALETTE_COLOURS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, optimize=True)
    log.warning("wrote %s (%d x %d, %d KB)", args.out, image.width, image.height, args.out.stat().st_size // 1024)
    viewer.close()


if __name__ == "__main__":
    main()
