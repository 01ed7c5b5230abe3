"""From a checked :class:`~ctseg.io.dicom.plan.CheckedSeries` to a :class:`~ctseg.volume.Volume` in HU.

The output grid is always orthogonal: axis 0 along the slice normal (ascending), axis 1 along the column cosine
(rows), axis 2 along the row cosine (columns); origin at the first slice's ImagePositionPatient.

A sheared stack (gantry tilt) and a non-uniform one are resampled onto an orthogonal, uniform grid. Each output
slice is a linear blend of the two input slices that bracket it along the normal, each sampled bilinearly at the
output's in-plane positions (``scipy.ndimage.affine_transform``, order 1). The field of view is extended so that
every input slice fits (as dcm2niix does for tilt); uncovered voxels get ``fill_hu``. Linear interpolation keeps a
linear function of world position exact, which is what the tests check against.
"""

from __future__ import annotations

import logging

import numpy as np

from ctseg.io.dicom.pixels import native_dtype, read_native_into, read_stored_frames, rescale_to_hu
from ctseg.io.dicom.plan import CheckedSeries, ReadOptions
from ctseg.volume import Volume

log = logging.getLogger(__name__)


def _read_stored_stack(plan: CheckedSeries) -> tuple[np.ndarray, tuple[int, int] | None]:
    """``(N, R, C)`` stored values of the plan's slices, in plan order, and their (min, max) when integer.

    Uncompressed slices are read straight into the preallocated stack; others are decoded (each file once).
    """
    first = plan.slices[0]
    dtype = native_dtype(first.file) or np.dtype(np.int32)
    out = np.empty((len(plan.slices), first.rows, first.cols), dtype=dtype)
    lo, hi = None, None
    cache: dict[object, np.ndarray] = {}
    for i, s in enumerate(plan.slices):
        if s.frame != 0 or not read_native_into(s.file, out[i]):
            frames = cache.get(s.file.path)
            if frames is None:
                frames = read_stored_frames(s.file)
                if frames.shape[0] > 1:
                    cache[s.file.path] = frames
            if frames.dtype.kind == "f" or not np.can_cast(frames.dtype, out.dtype):
                out = out.astype(
                    np.result_type(out.dtype, frames.dtype, np.int32 if frames.dtype.kind != "f" else np.float32)
                )
            out[i] = frames[s.frame]
        if out.dtype.kind in "iu":
            # Per-slice range while the slice is in cache: rescale_to_hu needs no extra pass over the stack.
            smin, smax = int(out[i].min()), int(out[i].max())
            lo, hi = (smin, smax) if lo is None else (min(lo, smin), max(hi, smax))  # type: ignore[type-var]
    rng = (lo, hi) if lo is not None and hi is not None and out.dtype.kind in "iu" else None
    return out, rng


def _padding_mask(plan: CheckedSeries, stored: np.ndarray) -> np.ndarray | None:
    ds = plan.slices[0].file.header
    pad = ds.get("PixelPaddingValue")
    if pad is None:
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None:
        return stored == pad
    lo, hi = sorted((int(pad), int(limit)))
    return (stored >= lo) & (stored <= hi)


def _resample_onto_orthogonal(plan: CheckedSeries, hu: np.ndarray, fill_hu: float) -> np.ndarray:
    """Resample a sheared and/or non-uniform stack onto ``plan.geometry`` (whose origin includes the FOV shift)."""
    from scipy import ndimage

    t = plan.positions_mm - plan.positions_mm[0]
    dy, dx = plan.pixel_spacing_mm
    off = plan.offsets_mm  # (N, 2): drift along the column cosine (rows) and row cosine (columns)
    lo = off.min(axis=0)
    n_out, rows, cols = plan.shape
    out = np.empty((n_out, rows, cols), dtype=np.float32)
    sampled: dict[int, np.ndarray] = {}

    def sample(k: int) -> np.ndarray:
        # Output pixel (j, i) lies at in-plane (lo + (j, i) * spacing); in slice k that is pixel
        # (j, i) + (lo - off_k) / spacing.
        if k not in sampled:
            shift = (lo - off[k]) / np.array([dy, dx])
            if np.allclose(shift, 0.0, atol=1e-6) and (rows, cols) == hu.shape[1:]:
                sampled[k] = hu[k].astype(np.float32, copy=False)
            else:
                sampled[k] = ndimage.affine_transform(
                    hu[k].astype(np.float32, copy=False),
                    np.eye(2),
                    offset=shift,
                    output_shape=(rows, cols),
                    order=1,
                    mode="constant",
                    cval=fill_hu,
                )
            for old in [key for key in sampled if key < k - 1]:
                del sampled[old]
        return sampled[k]

    for m in range(n_out):
        tm = m * plan.step_mm
        k = int(np.clip(np.searchsorted(t, tm, side="right") - 1, 0, len(t) - 2))
        w = float(np.clip((tm - t[k]) / (t[k + 1] - t[k]), 0.0, 1.0))
        if w < 1e-6:
            out[m] = sample(k)
        elif w > 1 - 1e-6:
            out[m] = sample(k + 1)
        else:
            out[m] = (1.0 - w) * sample(k) + w * sample(k + 1)
    return out


def assemble_volume(plan: CheckedSeries, options: ReadOptions = ReadOptions()) -> Volume:
    """Read the pixel data of a checked series and return the HU volume on an orthogonal grid.

    Returns
    -------
    Volume
        ``(Z, Y, X)`` HU: int16 when exact (no resampling, integer modality LUT), float32 otherwise.

    Raises
    ------
    DicomSeriesError
        ``UNREADABLE_FILE`` for truncated or damaged pixel data.
    UnsupportedTransferSyntaxError
        If a file's compression has no installed decoder.
    """
    stored, stored_range = _read_stored_stack(plan)
    padding_hu = options.padding_hu
    pad_mask = _padding_mask(plan, stored) if padding_hu is not None else None
    slopes = np.array([s.slope for s in plan.slices])
    intercepts = np.array([s.intercept for s in plan.slices])
    hu = rescale_to_hu(stored, slopes, intercepts, overwrite_input=True, stored_range=stored_range)
    if padding_hu is not None and pad_mask is not None and pad_mask.any():
        if hu.dtype == np.int16 and not float(padding_hu).is_integer():
            hu = hu.astype(np.float32)
        hu[pad_mask] = padding_hu
    geometry = plan.geometry
    if plan.needs_resampling:
        hu = _resample_onto_orthogonal(plan, hu, options.fill_hu)
    log.info("%s: read %d slices -> %s HU %s", plan.label, len(plan.slices), hu.dtype, hu.shape)
    return Volume(hu, geometry)
