"""ctseg-napari: read CT and masks in world millimetres, segment with a ctseg model, review and save.

Everything is contributed through the npe2 manifest ``napari.yaml``; importing this package registers nothing.
The Qt widgets live in :mod:`ctseg_napari._qt`; the other modules need no Qt and no running viewer.
"""

__version__ = "0.1.0"
