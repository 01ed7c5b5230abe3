"""ctseg: CT segmentation from DICOM to a reviewed mask, correct to the voxel.

The building blocks are :class:`~ctseg.volume.Geometry` and :class:`~ctseg.volume.Volume`; readers live in
:mod:`ctseg.io`, preprocessing in :mod:`ctseg.preprocess`.
"""

from typing import TYPE_CHECKING, Any

from ctseg._version import __version__
from ctseg.volume import Geometry, Volume

__all__ = ["Geometry", "Volume", "__version__", "load_model", "segment"]

if TYPE_CHECKING:
    from ctseg.infer import load_model, segment


def __getattr__(name: str) -> Any:
    # torch is imported only when the inference API is used, so `import ctseg` stays fast.
    if name in ("load_model", "segment"):
        import ctseg.infer

        return getattr(ctseg.infer, name)
    raise AttributeError(f"module 'ctseg' has no attribute {name!r}")
