"""npe2 sample data: the ctseg synthetic phantom CT (HU) and its label map, placed in world mm like read data."""

from __future__ import annotations

from ctseg.phantom import PHANTOM_LABELS, make_phantom
from ctseg.volume import Geometry
from ctseg_napari._labels import LabelTable
from ctseg_napari._layers import LayerDataTuple
from ctseg_napari._reader import image_layer, labels_layer

#: A small abdomen-sized grid: 48 slices of 2.5 mm, 128 x 128 pixels of 2.5 mm (32 x 32 cm field of view).
PHANTOM_GEOMETRY = Geometry((48, 128, 128), (2.5, 2.5, 2.5), (-160.0, -160.0, -60.0))
#: Colours of the phantom's structures (RGB).
PHANTOM_COLORS = {
    1: (221, 130, 101),
    2: (157, 108, 162),
    3: (185, 102, 83),
    4: (197, 165, 145),
    5: (216, 101, 79),
    6: (241, 214, 145),
}


def phantom_sample() -> list[LayerDataTuple]:
    """The phantom CT and its label map (names from :data:`ctseg.phantom.PHANTOM_LABELS`)."""
    ct, labels = make_phantom(PHANTOM_GEOMETRY, seed=0)
    names = {k: name for k, (name, _) in PHANTOM_LABELS.items()}
    return [image_layer(ct, "phantom CT"), labels_layer(labels, "phantom labels", LabelTable(names, PHANTOM_COLORS))]
