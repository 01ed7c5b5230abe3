"""ctseg: CT segmentation from DICOM to a reviewed mask, correct to the voxel.

The building blocks are :class:`~ctseg.volume.Geometry` and :class:`~ctseg.volume.Volume`; readers live in
:mod:`ctseg.io`, preprocessing in :mod:`ctseg.preprocess`.
"""

from ctseg.volume import Geometry, Volume

__version__ = "0.1.0"

__all__ = ["Geometry", "Volume", "__version__"]
