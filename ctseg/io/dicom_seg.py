"""Label :class:`~ctseg.volume.Volume` <-> DICOM Segmentation (SEG), placed on slices by world position.

Writing uses highdicom (``Segmentation``, BINARY, one segment per label value, empty frames omitted). Each source
slice's plane (ImagePositionPatient, orientation, pixel spacing) is mapped into the label grid with
``geometry.world_to_index``; the frame written for that slice is the grid plane it lands on, so frames follow world
positions, never file or array order, and highdicom links every frame to its source instance. A series that ctseg
resampled (gantry tilt, gaps, uneven steps) has no source slice per grid plane: its SEG frames carry their own plane
positions and only a series-level reference to the source images (``SpatialLocationsPreserved`` is not claimed).

Reading uses pydicom (highdicom cannot parse big-endian files): BINARY, FRACTIONAL (a pixel is in a segment when its
value is at least half of MaximumFractionalValue) and LABELMAP. Where segments overlap, the highest segment number
wins. Segment number = label value, so BINARY SEGs written here describe every label from 1 to the highest present
one (absent ones as segments without frames), as highdicom requires numbers 1, 2, 3, ...
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

import ctseg
from ctseg.colors import PALETTE
from ctseg.errors import CtsegError
from ctseg.io.atomic import atomic_path
from ctseg.io.dicom.series import SeriesPlan
from ctseg.volume import Geometry, Volume

log = logging.getLogger(__name__)

#: Segmentation Storage and Label Map Segmentation Storage.
SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
#: A frame lies on a grid when its pixels are within this distance (mm, per axis) of grid voxel centres.
GRID_TOL_MM = 0.05
#: A FRACTIONAL pixel belongs to its segment when value >= this fraction of MaximumFractionalValue.
FRACTION_THRESHOLD = 0.5
MAX_LABEL = 255
MAX_SEGMENT_LABEL_CHARS = 64  # VR LO
SEG_SERIES_NUMBER = 901
#: (value, scheme, meaning). CID 7150 "Anatomical Structure" (pydicom's code dictionary: SCT 91723000).
ANATOMY_CATEGORY = ("91723000", "SCT", "Anatomical Structure")
TISSUE = ("85756007", "SCT", "Tissue")
#: (SNOMED CT code, meaning, names it is used for: lower case, "_" for spaces); other names get :data:`TISSUE`.
_STRUCTURES = [
    ("10200004", "Liver", "liver"),
    ("78961009", "Spleen", "spleen"),
    ("64033007", "Kidney", "kidney kidneys"),
    ("9846003", "Right kidney", "kidney_right right_kidney"),
    ("18639004", "Left kidney", "kidney_left left_kidney"),
    ("15825003", "Aorta", "aorta"),
    ("39607008", "Lung", "lung lungs"),
    ("15776009", "Pancreas", "pancreas"),
    ("69695003", "Stomach", "stomach"),
    ("28231008", "Gallbladder", "gallbladder gall_bladder"),
    ("80891009", "Heart", "heart"),
    ("89837001", "Urinary bladder", "urinary_bladder bladder"),
    ("421060004", "Spine", "spine vertebral_column vertebrae"),
    ("32849002", "Esophagus", "esophagus oesophagus"),
    ("71854001", "Colon", "colon"),
    ("30315005", "Small intestine", "small_intestine small_bowel"),
    ("12738006", "Brain", "brain"),
]
STRUCTURE_CODES = {name: (code, meaning) for code, meaning, names in _STRUCTURES for name in names.split()}
#: Type-2 attributes highdicom copies from the source; absent ones are added empty.
_TYPE2_KEYWORDS = (
    "PatientName PatientID PatientBirthDate PatientSex AccessionNumber StudyID StudyDate StudyTime ReferringPhysicianName"
).split()
#: Display colours (RGB) for labels the caller gives none for, by label value.


class DicomSegError(CtsegError, ValueError):
    """A DICOM SEG that cannot be written for this mask and series, or read onto the requested grid."""


@dataclass(frozen=True)
class _Plane:
    """One 2D frame in LPS mm: top-left pixel centre, row/column cosines, (row, column) spacing and size."""

    ipp: np.ndarray
    row_cos: np.ndarray
    col_cos: np.ndarray
    spacing: tuple[float, float]
    size: tuple[int, int]


def segment_codes(name: str) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """SNOMED CT (category, type) codes, each ``(value, scheme, meaning)``, for a structure name."""
    key = "_".join(name.strip().lower().replace("-", " ").split())
    known = STRUCTURE_CODES.get(key)
    return (ANATOMY_CATEGORY, (known[0], "SCT", known[1])) if known else (TISSUE, TISSUE)


_Where = tuple[tuple[Any, ...], bool]


def _place(geometry: Geometry, plane: _Plane) -> _Where | None:
    """Index of the ``geometry``-shaped array region holding ``plane`` and whether its view needs ``.T``.

    None when the frame's pixels do not all sit on voxel centres (within :data:`GRID_TOL_MM`) inside the grid.
    """
    ends = [plane.ipp, plane.ipp + plane.spacing[0] * plane.col_cos, plane.ipp + plane.spacing[1] * plane.row_cos]
    idx = geometry.world_to_index(np.stack(ends))
    start, steps = idx[0], idx[1:] - idx[0]  # fractional voxel index of pixel (0, 0); per frame row and column
    axes = [int(np.argmax(np.abs(step))) for step in steps]
    if axes[0] == axes[1]:
        return None
    signs = [1 if steps[i][axes[i]] > 0 else -1 for i in range(2)]
    unit = np.zeros((2, 3))
    unit[0, axes[0]], unit[1, axes[1]] = signs
    first = np.round(start)
    # Largest distance of any pixel from its voxel centre (the error grows linearly across the frame).
    error = np.abs(start - first) + sum((n - 1) * np.abs(steps[i] - unit[i]) for i, n in enumerate(plane.size))
    if np.any(error * np.array(geometry.spacing_mm) > GRID_TOL_MM):
        return None
    first_i = first.astype(int)
    index: list[Any] = [None] * 3
    for axis, sign, n in zip(axes, signs, plane.size):
        lo, last = first_i[axis], first_i[axis] + sign * (n - 1)
        if min(lo, last) < 0 or max(lo, last) >= geometry.shape[axis]:
            return None
        index[axis] = slice(lo, last + sign if last + sign >= 0 else None, sign)
    (normal,) = {0, 1, 2} - set(axes)
    if not 0 <= first_i[normal] < geometry.shape[normal]:
        return None
    index[normal] = int(first_i[normal])
    return tuple(index), axes[0] > axes[1]


def _view(array: np.ndarray, where: _Where) -> np.ndarray:
    """The ``(rows, cols)`` view of ``array`` that a placed frame occupies."""
    index, transpose = where
    view = array[index]
    return view.T if transpose else view


def _import_highdicom() -> ModuleType:
    try:
        import highdicom
    except ImportError as exc:
        raise ImportError("writing DICOM SEG needs highdicom: pip install highdicom") from exc
    return highdicom


def _source_datasets(source: SeriesPlan) -> list[Any]:
    """The source headers as pydicom datasets (no pixel data), with empty type-2 attributes highdicom reads."""
    import pydicom

    out, seen = [], set()
    for s in source.slices:
        if s.file.path not in seen:
            seen.add(s.file.path)
            ds = pydicom.dcmread(s.file.path, stop_before_pixels=True, force=True)
            for keyword in _TYPE2_KEYWORDS:
                if keyword not in ds:
                    setattr(ds, keyword, None)
            if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
                del ds.SpecificCharacterSet  # empty means the default repertoire; highdicom rejects ''
            out.append(ds)
    return out


def _frames_on_source(labels: Volume, source: SeriesPlan) -> tuple[np.ndarray, list[Sequence[float]]] | None:
    """``(N, R, C)`` frames (one per source slice, in plan order) and their IPPs, or None if the grids differ."""
    frames, positions, covered = [], [], set()
    for s in source.slices:
        plane = _Plane(
            np.asarray(s.position, float), source.row_cos, source.col_cos, source.pixel_spacing_mm, (s.rows, s.cols)
        )
        where = _place(labels.geometry, plane)
        if where is None:
            return None
        covered.add(repr(where[0]))
        frames.append(_view(labels.array, where))
        positions.append(s.position)
    if len(covered) != len(frames) or len(frames) * frames[0].size != labels.array.size:
        return None  # some grid voxels would be in no frame
    return np.stack(frames), positions  # type: ignore[return-value]


def write_dicom_seg(
    labels: Volume,
    source: SeriesPlan,
    out_path: Path,
    *,
    names: Mapping[int, str] | None = None,
    colors: Mapping[int, tuple[int, int, int]] | None = None,
    algorithm_name: str = "ctseg",
    algorithm_version: str = ctseg.__version__,
    series_description: str = "ctseg segmentation",
) -> Path:
    """Write a label map as a BINARY DICOM SEG that references its source CT series.

    Parameters
    ----------
    labels
        ``(Z, Y, X)`` integer label map, values 0..255 (0 = background), on the grid that
        :func:`~ctseg.io.dicom.read_dicom_series` gives for ``source``.
    source
        The series the mask was made from (``inspect_dicom(path).chosen``).
    out_path
        The ``.dcm`` file to write (atomically).
    names, colors
        Label value -> structure name (SegmentLabel; also picks SNOMED CT codes) and RGB display colour.
    algorithm_name, algorithm_version, series_description
        Recorded as the segments' automatic algorithm and the SEG's series description.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    DicomSegError
        If the mask is empty, not 0..255 integers, not on the source series' slices, a name is too long, or
        highdicom refuses the series (the message gives highdicom's reason).
    ImportError
        If highdicom is not installed.
    """
    hd = _import_highdicom()
    from pydicom.uid import generate_uid

    array = np.asarray(labels.array)
    if array.dtype.kind not in "iub" or array.min() < 0 or array.max() > MAX_LABEL:
        raise DicomSegError(f"labels must be integers 0..{MAX_LABEL}, got {array.dtype} {array.min()}..{array.max()}")
    present = [int(v) for v in np.unique(array) if v]
    if not present:
        raise DicomSegError("the label map is empty (only 0): a DICOM SEG needs at least one segment; write NIfTI")
    if not source.usable or not source.slices:
        raise DicomSegError(f"source series is unusable: {source.error}")
    placed = _frames_on_source(labels, source)
    spatial: dict[str, Any] = {}
    if placed is not None:
        frames, ipps = placed
        spatial["plane_positions"] = [hd.PlanePositionSequence("PATIENT", p) for p in ipps]
    elif source.needs_resampling and labels.shape == source.shape:
        g = labels.geometry
        d = g.direction_matrix
        frames = array
        spatial["plane_positions"] = [
            hd.PlanePositionSequence("PATIENT", p) for p in g.index_to_world([[k, 0, 0] for k in range(g.shape[0])])
        ]
        spatial["plane_orientation"] = hd.PlaneOrientationSequence("PATIENT", [*d[:, 2], *d[:, 1]])
        spatial["pixel_measures"] = hd.PixelMeasuresSequence(g.spacing_mm[1:], g.spacing_mm[0], g.spacing_mm[0])
        log.warning("%s was resampled (tilt/gaps): SEG frames reference the series, not single slices", source.label)
    else:
        expected = "the resampled grid" if source.needs_resampling else "one plane per source slice"
        raise DicomSegError(
            f"the label grid {labels.geometry} does not match series {source.label} ({expected}, "
            f"{len(source.slices)} slices of {source.slices[0].rows}x{source.slices[0].cols}); write the mask on the "
            "grid read_dicom_series gives (resample_to(mask, ct.geometry, order=0))"
        )
    descriptions = []
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name,
        version=algorithm_version,
        family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"),
    )
    for number in range(1, max(present) + 1):
        name = (names or {}).get(number) or f"label {number}"
        if len(name) > MAX_SEGMENT_LABEL_CHARS:
            raise DicomSegError(
                f"segment name {name!r} has {len(name)} characters; DICOM allows "
                f"{MAX_SEGMENT_LABEL_CHARS}: pass a shorter name"
            )
        category, kind = segment_codes(name)
        rgb = (colors or {}).get(number) or PALETTE[(number - 1) % len(PALETTE)]
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=hd.sr.CodedConcept(*category),
                segmented_property_type=hd.sr.CodedConcept(*kind),
                algorithm_type="AUTOMATIC",
                algorithm_identification=algorithm,
                display_color=hd.color.CIELabColor.from_rgb(*rgb),
            )
        )
    sources = _source_datasets(source)
    with warnings.catch_warnings():
        # highdicom warns about odd patient names by quoting them; no identifiers in logs.
        warnings.filterwarnings("ignore", message=".*person name", category=UserWarning)
        try:
            seg = hd.seg.Segmentation(
                source_images=sources,
                pixel_array=frames.astype(np.uint8, copy=False),
                segmentation_type="BINARY",
                segment_descriptions=descriptions,
                series_instance_uid=generate_uid(),
                series_number=SEG_SERIES_NUMBER,
                sop_instance_uid=generate_uid(),
                instance_number=1,
                manufacturer="ctseg",
                manufacturer_model_name=algorithm_name,
                software_versions=algorithm_version,
                device_serial_number="0",
                series_description=series_description,
                omit_empty_frames=True,
                **spatial,
            )
        except (ValueError, AttributeError) as exc:  # highdicom's checks on the source headers
            raise DicomSegError(f"highdicom cannot build a SEG on {source.label}: {exc}") from exc
    with atomic_path(Path(out_path)) as tmp:
        seg.save_as(tmp)
    log.info(
        "wrote DICOM SEG %s: %d segment(s), %d frame(s)",
        Path(out_path).name,
        len(descriptions),
        int(seg.NumberOfFrames),
    )
    return Path(out_path)


def _item(ds: Any, frame: int, sequence: str) -> Any:
    """The item of functional-group ``sequence`` for ``frame`` (0-based): per-frame, else shared; None if absent."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    for group in ([per_frame[frame]] if frame < len(per_frame) else []) + list(shared[:1]):
        items = group.get(sequence)
        if items:
            return items[0]
    return None


def _frame_plane(ds: Any, frame: int) -> _Plane:
    position = _item(ds, frame, "PlanePositionSequence")
    orientation = _item(ds, frame, "PlaneOrientationSequence")
    measures = _item(ds, frame, "PixelMeasuresSequence")
    if position is None or orientation is None or measures is None or "PixelSpacing" not in measures:
        raise DicomSegError(
            f"SEG frame {frame + 1} has no plane position, orientation or pixel spacing; "
            "only SEGs of patient-space images (CT, MR) can be read"
        )
    iop = np.asarray(orientation.ImageOrientationPatient, float)
    return _Plane(
        np.asarray(position.ImagePositionPatient, float),
        iop[:3],
        iop[3:],
        (float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1])),
        (int(ds.Rows), int(ds.Columns)),
    )


def _geometry_from_planes(planes: Sequence[_Plane], step_hint_mm: float | None) -> Geometry:
    """The grid of a stack of parallel, aligned frames, sorted along the normal (frames may skip grid planes)."""
    first = planes[0]
    if any(
        not np.allclose(np.r_[p.row_cos, p.col_cos], np.r_[first.row_cos, first.col_cos], atol=1e-4)
        or not np.allclose(p.spacing, first.spacing, atol=1e-4)
        for p in planes
    ):
        raise DicomSegError("SEG frames differ in orientation or pixel spacing; pass the source geometry to read it")
    u, _, vt = np.linalg.svd(np.stack([np.cross(first.row_cos, first.col_cos), first.col_cos, first.row_cos], 1))
    direction = u @ vt  # DICOM cosines carry ~6 digits; re-orthonormalise as the series reader does
    ipps = np.stack([p.ipp for p in planes])
    along = ipps @ direction
    if np.ptp(along[:, 1:], axis=0).max() > GRID_TOL_MM:
        raise DicomSegError("SEG frames are shifted in plane against each other; pass the source geometry to read it")
    levels = np.unique(np.round(along[:, 0] / GRID_TOL_MM)) * GRID_TOL_MM
    steps = np.diff(levels)
    # The stated spacing first; else the smallest step (empty frames may be omitted, so steps can be multiples).
    for step in [s for s in (step_hint_mm, float(steps.min()) if steps.size else 1.0) if s]:
        counts = (levels - levels[0]) / step
        if np.abs(counts - np.round(counts)).max() * step <= GRID_TOL_MM:
            break
    else:
        raise DicomSegError(
            f"SEG frame positions {levels.round(3).tolist()} mm along the normal are not on one "
            "regular grid; pass the source geometry to read it"
        )
    origin = ipps[int(np.argmin(along[:, 0]))]
    shape = (int(np.round(counts[-1])) + 1, first.size[0], first.size[1])
    return Geometry(shape, (step, *first.spacing), tuple(origin), tuple(map(tuple, direction)))


def read_dicom_seg(path: Path, geometry: Geometry | None = None) -> tuple[Volume, dict[int, str]]:
    """Read a DICOM SEG (BINARY, FRACTIONAL or LABELMAP) as a label map; label value = segment number.

    Parameters
    ----------
    path
        The SEG file (any transfer syntax pydicom decodes, big endian included).
    geometry
        The grid to read onto, e.g. the source CT's ``read_dicom_series(...).geometry``; each frame is placed by
        its world position. By default, the grid of the SEG's own frames, sorted along the slice normal.

    Returns
    -------
    tuple[Volume, dict[int, str]]
        ``(Z, Y, X)`` uint8 labels (overlaps: the highest segment number wins; FRACTIONAL: value >=
        half the maximum) and segment number -> SegmentLabel.

    Raises
    ------
    DicomSegError
        If the file is not a SEG, has segment numbers over 255, or a frame is not on ``geometry`` (or, without
        one, the frames do not form a regular stack).
    """
    import pydicom

    ds = pydicom.dcmread(Path(path))
    sop = str(ds.get("SOPClassUID", ""))
    if sop not in SEG_SOP_CLASSES:
        raise DicomSegError(
            f"{Path(path).name} is not a DICOM SEG (SOP class {sop or 'missing'}, modality "
            f"{ds.get('Modality', '?')}); expected Segmentation Storage"
        )
    names = {int(s.SegmentNumber): str(s.get("SegmentLabel", "")) for s in ds.SegmentSequence}
    names.pop(0, None)  # a LABELMAP SEG's background
    if max(names, default=0) > MAX_LABEL:
        raise DicomSegError(f"segment number {max(names)} does not fit a uint8 label map (max {MAX_LABEL})")
    pixels = ds.pixel_array.reshape(int(ds.get("NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns))
    planes = [_frame_plane(ds, f) for f in range(len(pixels))]
    labelmap = sop == SEG_SOP_CLASSES[1] or ds.get("SegmentationType") == "LABELMAP"
    if ds.get("SegmentationType") == "FRACTIONAL":
        pixels = pixels >= FRACTION_THRESHOLD * float(ds.MaximumFractionalValue)
    numbers = [
        0 if labelmap else int(_item(ds, f, "SegmentIdentificationSequence").ReferencedSegmentNumber)
        for f in range(len(pixels))
    ]
    if geometry is None:
        hint = _item(ds, 0, "PixelMeasuresSequence").get("SpacingBetweenSlices")
        geometry = _geometry_from_planes(planes, float(hint) if hint else None)
    out = np.zeros(geometry.shape, np.uint8)
    for f in sorted(range(len(pixels)), key=lambda f: numbers[f]):  # ascending: the highest number wins
        where = _place(geometry, planes[f])
        if where is None:
            raise DicomSegError(
                f"SEG frame {f + 1} at IPP {np.round(planes[f].ipp, 3).tolist()} does not lie on the "
                f"grid {geometry} (tolerance {GRID_TOL_MM} mm); pass the geometry of the SEG's "
                "source series, or none to use the SEG's own"
            )
        view, frame = _view(out, where), pixels[f]
        if labelmap:
            view[frame != 0] = frame[frame != 0]
        else:
            view[frame != 0] = numbers[f]
    return Volume(out, geometry), names
