"""Label :class:`~ctseg.volume.Volume` -> DICOM Segmentation (SEG), placed on the source slices by world position.

Writing uses highdicom (``Segmentation``, BINARY, one segment per label value, empty frames omitted). Each source
slice's plane (ImagePositionPatient, orientation, pixel spacing) is mapped into the label grid with
``geometry.world_to_index``; the frame written for that slice is the grid plane it lands on, so frames follow world
positions, never file or array order, and highdicom links every frame to its source instance. A series that ctseg
resampled (gantry tilt, gaps, uneven steps) has no source slice per grid plane: its SEG frames carry their own plane
positions and only a series-level reference to the source images (``SpatialLocationsPreserved`` is not claimed).
Segment number = label value, so the SEG describes every label from 1 to the highest present one (absent ones as
segments without frames), as highdicom requires numbers 1, 2, 3, ...
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ctseg._version import __version__
from ctseg.colors import PALETTE
from ctseg.errors import DicomSegError
from ctseg.io.atomic import atomic_path
from ctseg.io.dicom.plan import CheckedSeries, SeriesCheck
from ctseg.io.dicom.quiet import ignored_warnings
from ctseg.io.dicom.read import DicomImage
from ctseg.io.dicom_seg.codes import segment_codes
from ctseg.io.dicom_seg.grid import MAX_LABEL, Plane, place, view
from ctseg.volume import Volume

log = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 901
MAX_SEGMENT_LABEL_CHARS = 64  # VR LO
#: Type-2 attributes highdicom copies from the source; absent ones are added empty.
_TYPE2_KEYWORDS = (
    "PatientName PatientID PatientBirthDate PatientSex AccessionNumber StudyID StudyDate StudyTime ReferringPhysicianName"
).split()


def _import_highdicom() -> ModuleType:
    try:
        import highdicom
    except ImportError as exc:
        raise ImportError("writing DICOM SEG needs highdicom: pip install highdicom") from exc
    return highdicom


def _source_datasets(source: CheckedSeries) -> list[Any]:
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


def _frames_on_source(labels: Volume, source: CheckedSeries) -> tuple[np.ndarray, list[Sequence[float]]] | None:
    """``(N, R, C)`` frames (one per source slice, in slice order) and their IPPs, or None if the grids differ."""
    frames, positions, covered = [], [], set()
    row_cos, col_cos = np.asarray(source.row_cos), np.asarray(source.col_cos)
    for s in source.slices:
        plane = Plane(np.asarray(s.position, float), row_cos, col_cos, source.pixel_spacing_mm, (s.rows, s.cols))
        where = place(labels.geometry, plane)
        if where is None:
            return None
        covered.add(repr(where[0]))
        frames.append(view(labels.array, where))
        positions.append(s.position)
    if len(covered) != len(frames) or len(frames) * frames[0].size != labels.array.size:
        return None  # some grid voxels would be in no frame
    return np.stack(frames), positions  # type: ignore[return-value]


def _checked_labels(labels: Volume) -> list[int]:
    """The label values present (1..255), after checking the map is integer and not empty."""
    array = np.asarray(labels.array)
    if array.dtype.kind not in "iub" or array.min() < 0 or array.max() > MAX_LABEL:
        raise DicomSegError(f"labels must be integers 0..{MAX_LABEL}, got {array.dtype} {array.min()}..{array.max()}")
    present = [int(v) for v in np.unique(array) if v]
    if not present:
        raise DicomSegError("the label map is empty (only 0): a DICOM SEG needs at least one segment; write NIfTI")
    return present


def _frames_and_planes(hd: ModuleType, labels: Volume, source: CheckedSeries) -> tuple[np.ndarray, dict[str, Any]]:
    """The SEG frames and highdicom's plane arguments: one frame per source slice, else the resampled grid's planes."""
    placed = _frames_on_source(labels, source)
    if placed is not None:
        frames, ipps = placed
        return frames, {"plane_positions": [hd.PlanePositionSequence("PATIENT", p) for p in ipps]}
    if source.needs_resampling and labels.shape == source.shape:
        g = labels.geometry
        d = g.direction_matrix
        log.warning("%s was resampled (tilt/gaps): SEG frames reference the series, not single slices", source.label)
        return np.asarray(labels.array), {
            "plane_positions": [
                hd.PlanePositionSequence("PATIENT", p) for p in g.index_to_world([[k, 0, 0] for k in range(g.shape[0])])
            ],
            "plane_orientation": hd.PlaneOrientationSequence("PATIENT", [*d[:, 2], *d[:, 1]]),
            "pixel_measures": hd.PixelMeasuresSequence(g.spacing_mm[1:], g.spacing_mm[0], g.spacing_mm[0]),
        }
    expected = "the resampled grid" if source.needs_resampling else "one plane per source slice"
    first = source.slices[0]
    raise DicomSegError(
        f"the label grid {labels.geometry} does not match series {source.label} ({expected}, "
        f"{len(source.slices)} slices of {first.rows}x{first.cols}); write the mask on the "
        "grid read_dicom gives (resample_to(mask, image.volume.geometry, order=0))"
    )


def _segment_descriptions(
    hd: ModuleType,
    present: list[int],
    names: Mapping[int, str],
    colors: Mapping[int, tuple[int, int, int]],
    algorithm: Any,
) -> list[Any]:
    """One description per segment number 1..max(present): name, SNOMED CT codes, display colour."""
    descriptions = []
    for number in range(1, max(present) + 1):
        name = names.get(number) or f"label {number}"
        if len(name) > MAX_SEGMENT_LABEL_CHARS:
            raise DicomSegError(
                f"segment name {name!r} has {len(name)} characters; DICOM allows "
                f"{MAX_SEGMENT_LABEL_CHARS}: pass a shorter name"
            )
        category, kind = segment_codes(name)
        rgb = colors.get(number) or PALETTE[(number - 1) % len(PALETTE)]
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
    return descriptions


def _source_series(source: DicomImage | SeriesCheck) -> CheckedSeries:
    plan = source.plan if isinstance(source, DicomImage) else source
    if not isinstance(plan, CheckedSeries):
        raise DicomSegError(f"source series is unusable: {plan.error}")
    _check_references(plan)
    return plan


def _check_references(plan: CheckedSeries) -> None:
    """Refuse a source whose UIDs a SEG cannot reference (blank Study/Series/SOP Instance UID or SOP Class UID)."""
    first = plan.slices[0].file
    blank = [k for k in ("StudyInstanceUID", "SeriesInstanceUID") if not str(first.header.get(k, "") or "").strip()]
    if any(not s.file.sop_instance_uid.strip() for s in plan.slices):
        blank.append("SOPInstanceUID")
    if any(not s.file.sop_class.strip() for s in plan.slices):
        blank.append("SOPClassUID")
    if blank:
        raise DicomSegError(
            f"the source series {plan.label} has blank {', '.join(blank)}; a DICOM SEG must reference its source by "
            "these UIDs, so none was written (the mask is in NIfTI; fix the source headers to get a SEG)"
        )


def write_dicom_seg(
    labels: Volume,
    source: DicomImage | SeriesCheck,
    out_path: Path,
    *,
    names: Mapping[int, str] | None = None,
    colors: Mapping[int, tuple[int, int, int]] | None = None,
    algorithm_name: str = "ctseg",
    algorithm_version: str = __version__,
    series_description: str = "ctseg segmentation",
) -> Path:
    """Write a label map as a BINARY DICOM SEG that references its source CT series.

    Parameters
    ----------
    labels
        ``(Z, Y, X)`` integer label map, values 0..255 (0 = background), on the grid of ``source``'s volume.
    source
        What the mask was made from: the :class:`~ctseg.io.dicom.DicomImage` of
        :func:`~ctseg.io.dicom.read_dicom` (or its ``plan``); every frame references one of its instances.
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
        If the mask is empty, not 0..255 integers, not on the source series' slices, the source series is unusable,
        a name is too long, or highdicom refuses the series (the message gives highdicom's reason).
    ImportError
        If highdicom is not installed.
    """
    hd = _import_highdicom()
    from pydicom.uid import generate_uid

    present = _checked_labels(labels)
    plan = _source_series(source)
    frames, spatial = _frames_and_planes(hd, labels, plan)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name,
        version=algorithm_version,
        family=hd.sr.CodedConcept("123110", "DCM", "Artificial Intelligence"),
    )
    descriptions = _segment_descriptions(hd, present, names or {}, colors or {}, algorithm)
    with ignored_warnings(message=".*person name", category=UserWarning):
        # highdicom warns about odd patient names by quoting them; no identifiers in logs.
        try:
            seg = hd.seg.Segmentation(
                source_images=_source_datasets(plan),
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
            raise DicomSegError(f"highdicom cannot build a SEG on {plan.label}: {exc}") from exc
    with atomic_path(Path(out_path)) as tmp:
        seg.save_as(tmp)
    n_frames = int(seg.NumberOfFrames)
    log.info("wrote DICOM SEG %s: %d segment(s), %d frame(s)", Path(out_path).name, len(descriptions), n_frames)
    return Path(out_path)
