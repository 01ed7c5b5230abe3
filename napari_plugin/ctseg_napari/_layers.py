"""ctseg :class:`~ctseg.volume.Volume` <-> napari layer data, with one fixed world convention.

World convention
----------------
napari world coordinates are **LPS millimetres in (S, P, L) order**, i.e. ctseg's ``(z, y, x)`` naming:
``world = lps[::-1]`` where ``lps = geometry.index_to_world(index)``. napari shows world axes 1 and 2 in 2D, so the
default view is axial in radiological orientation (anterior up, patient's left on the screen's right), and the
slider moves along S.

Every layer array is put into its *closest canonical* orientation first (:meth:`Volume.to_closest_canonical`: a
permutation and flips of the axes, no resampling), so that each array axis runs along one world axis and napari
slices it correctly; what is left (an oblique series' small rotation) goes into the layer's ``rotate``. The layer's
``scale`` is the voxel spacing, ``translate`` the first voxel's centre and ``rotate`` the direction cosines, so
``layer.data_to_world(index) == lps_to_world(layer_geometry.index_to_world(index))`` for image and mask alike.

The layer's ``metadata["ctseg"]`` holds a :class:`LayerSource`: the grid of the layer array and the grid the array
had on disk. Writers restore the disk grid exactly (the inverse permutation and flips), so a mask is saved on the
grid it was read on, voxel for voxel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ctseg.volume import Geometry, Volume

if TYPE_CHECKING:
    from ctseg.io.dicom import CheckedSeries

#: napari world axis names: LPS reversed into ctseg's (z, y, x) order.
WORLD_AXES = ("S", "P", "L")
WORLD_UNITS = "mm"
#: The metadata key holding a :class:`LayerSource`.
META_KEY = "ctseg"
#: (3, 3) reversal: LPS (x, y, z) <-> world (S, P, L).
_REVERSE = np.eye(3)[::-1]

LayerDataTuple = tuple[Any, dict[str, Any], str]


@dataclass(frozen=True)
class LayerSource:
    """Where a layer's array came from and how to put it back.

    Parameters
    ----------
    geometry
        The grid of the layer's array (closest-canonical orientation).
    source_geometry
        The grid of the array as read (file or DICOM series); writers restore it.
    path
        The file or folder that was read, ``""`` when made in memory.
    dicom_dir, series_uid
        The DICOM folder and series of the CT this layer lives on (image or mask), for DICOM SEG output.
    names, colors
        For label maps: label value -> structure name and RGB (0-255) colour.
    dicom_series
        The checked series (``read_dicom(...).plan``) as read, so that a DICOM SEG references its instances
        without scanning ``dicom_dir`` again; ``None`` when the layer was not made from a DICOM read.
    """

    geometry: Geometry
    source_geometry: Geometry
    path: str = ""
    dicom_dir: str = ""
    series_uid: str = ""
    names: Mapping[int, str] = field(default_factory=dict)
    colors: Mapping[int, tuple[int, int, int]] = field(default_factory=dict)
    dicom_series: CheckedSeries | None = field(default=None, compare=False, repr=False)


def lps_to_world(points_lps: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``(..., 3)`` LPS points (x, y, z) in mm -> napari world points (S, P, L) in mm."""
    return np.asarray(points_lps, dtype=np.float64)[..., ::-1].copy()


def world_to_lps(points_world: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``(..., 3)`` napari world points (S, P, L) in mm -> LPS points (x, y, z) in mm."""
    return np.asarray(points_world, dtype=np.float64)[..., ::-1].copy()


def layer_transform(geometry: Geometry) -> dict[str, Any]:
    """napari ``scale``, ``translate`` and ``rotate`` (plus axis labels and units) placing an array in world mm.

    ``world = rotate @ (scale * index) + translate`` equals ``lps_to_world(geometry.index_to_world(index))``.
    """
    return {
        "scale": tuple(geometry.spacing_mm),
        "translate": tuple(lps_to_world(geometry.origin_mm).tolist()),
        "rotate": (_REVERSE @ geometry.direction_matrix).tolist(),
        "axis_labels": WORLD_AXES,
        "units": (WORLD_UNITS,) * 3,
    }


def canonical_axes(direction: npt.ArrayLike) -> tuple[list[int], tuple[int, ...]]:
    """The axis order and flips that :meth:`Volume.to_closest_canonical` applies for this direction matrix.

    Returns
    -------
    (list[int], tuple[int, ...])
        ``order`` (``canonical = np.flip(np.transpose(a, order), flips)``) and the flipped canonical axes.
    """
    d = np.asarray(direction, dtype=np.float64)
    order: list[int] = []
    for world_axis in (2, 1, 0):
        scores = [abs(d[world_axis, a]) if a not in order else -1.0 for a in range(3)]
        order.append(int(np.argmax(scores)))
    d = d[:, order]
    flips = tuple(a for a, world_axis in enumerate((2, 1, 0)) if d[world_axis, a] < 0)
    return order, flips


def to_source_array(array: npt.ArrayLike, source: LayerSource) -> np.ndarray:
    """Undo the canonical reorientation: the layer array laid out on ``source.source_geometry`` (a view)."""
    arr = np.asarray(array)
    if source.geometry == source.source_geometry:
        return arr
    order, flips = canonical_axes(source.source_geometry.direction_matrix)
    if flips:
        arr = np.flip(arr, axis=flips)
    arr = np.transpose(arr, np.argsort(order))
    if arr.shape != source.source_geometry.shape:
        raise ValueError(f"layer array {arr.shape} does not fit its source grid {source.source_geometry.shape}")
    return arr


def source_volume(array: npt.ArrayLike, source: LayerSource) -> Volume:
    """The layer array as a :class:`Volume` on the grid it was read on (no copy where possible)."""
    return Volume(to_source_array(array, source), source.source_geometry)


def layer_from_volume(
    volume: Volume,
    *,
    layer_type: str,
    name: str,
    path: str = "",
    dicom_dir: str = "",
    series_uid: str = "",
    names: Mapping[int, str] | None = None,
    colors: Mapping[int, tuple[int, int, int]] | None = None,
    dicom_series: CheckedSeries | None = None,
) -> tuple[np.ndarray, dict[str, Any], LayerSource]:
    """Canonicalise ``volume`` and return ``(array, layer kwargs, source)`` for an ``image`` or ``labels`` layer.

    Image arrays are strided views (no copy); label arrays are contiguous copies, since napari paints into them.
    """
    canonical = volume.to_closest_canonical(copy=layer_type == "labels")
    source = LayerSource(
        canonical.geometry,
        volume.geometry,
        path,
        dicom_dir,
        series_uid,
        dict(names or {}),
        dict(colors or {}),
        dicom_series,
    )
    kwargs = {"name": name, **layer_transform(canonical.geometry), "metadata": {META_KEY: source}}
    return canonical.array, kwargs, source


def source_of(metadata: Mapping[str, Any] | None, shape: Sequence[int]) -> LayerSource | None:
    """The :class:`LayerSource` in a layer's metadata, if present and matching the array shape."""
    source = (metadata or {}).get(META_KEY)
    if isinstance(source, LayerSource) and tuple(source.geometry.shape) == tuple(shape):
        return source
    return None


def geometry_from_transform(
    shape: Sequence[int],
    *,
    scale: npt.ArrayLike,
    translate: npt.ArrayLike,
    rotate: npt.ArrayLike,
    shear: npt.ArrayLike | None = None,
    affine: npt.ArrayLike | None = None,
) -> Geometry:
    """The :class:`Geometry` of a 3D layer from its napari transform (for layers ctseg did not make).

    Raises
    ------
    GeometryError
        If the transform is sheared or not 3D.
    """
    from napari.utils.transforms import Affine

    phys = Affine(scale=scale, translate=translate, rotate=rotate, shear=shear)
    world = phys.affine_matrix
    if affine is not None:
        world = np.asarray(affine.affine_matrix if hasattr(affine, "affine_matrix") else affine, float) @ world
    lps = np.eye(4)
    lps[:3, :] = _REVERSE @ world[:3, :]
    return Geometry.from_affine(tuple(int(s) for s in shape), lps)


def layer_meta(layer: Any) -> dict[str, Any]:
    """The parts of a napari layer's state that :func:`volume_of_layer` reads (no data copy)."""
    return {
        "metadata": layer.metadata,
        "scale": layer.scale,
        "translate": layer.translate,
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine.affine_matrix,
        "features": getattr(layer, "features", None),
    }


def volume_of_layer(data: npt.ArrayLike, meta: Mapping[str, Any]) -> tuple[Volume, LayerSource]:
    """A layer's array and grid as ``(Volume on the layer grid, LayerSource)``.

    ``meta`` is a layer's state (``layer.as_layer_data_tuple()[1]`` or a writer's ``meta``): the
    :class:`LayerSource` in its metadata when present, else a grid built from ``scale``/``translate``/``rotate``/
    ``shear``/``affine`` (then the layer grid is also the "source" grid).
    """
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise ValueError(f"ctseg layers are 3D (z, y, x); this layer has shape {arr.shape}")
    source = source_of(meta.get("metadata"), arr.shape)
    if source is None:
        geometry = geometry_from_transform(
            arr.shape,
            scale=meta.get("scale", (1.0, 1.0, 1.0)),
            translate=meta.get("translate", (0.0, 0.0, 0.0)),
            rotate=meta.get("rotate", np.eye(3)),
            shear=meta.get("shear"),
            affine=meta.get("affine"),
        )
        source = LayerSource(geometry, geometry)
    return Volume(arr, source.geometry), source
