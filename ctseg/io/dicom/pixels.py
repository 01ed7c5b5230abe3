"""Pixel data: decoding stored values and the modality LUT (rescale slope/intercept) to Hounsfield units.

Uncompressed little-endian 16-bit data, the bulk of CT, is read straight from the file at the offset found while the
header was parsed (one ``numpy.fromfile`` per slice, no second header parse); that is what keeps reading within 2x of
the raw-bytes floor (``benchmarks/ingest.py``). Every other transfer syntax goes through pydicom and its pylibjpeg
plugins. A syntax that no installed decoder handles raises :class:`UnsupportedTransferSyntaxError` naming the package
that would.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from ctseg.errors import DicomSeriesError, SeriesReason, UnsupportedTransferSyntaxError
from ctseg.io.dicom.discover import DicomFile
from ctseg.io.dicom.quiet import ignored_warnings

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
#: Native (uncompressed) syntaxes: their PixelData length is exactly what the header's image size says.
_NATIVE_SYNTAXES = (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, "")
#: BitsAllocated values ctseg decodes for greyscale CT.
BITS_ALLOCATED = (8, 16, 32)
_UNDEFINED_LENGTH = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UC", b"UR", b"UT"}
INT16_MIN, INT16_MAX = -32768, 32767

#: Transfer-syntax UID prefix -> the package(s) that decode it, for the error message.
DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg or python-gdcm",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg or python-gdcm",
    "1.2.840.10008.1.2.4.53": "python-gdcm",
    "1.2.840.10008.1.2.4.55": "python-gdcm",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg or python-gdcm",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg or python-gdcm",
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg or python-gdcm",
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg or python-gdcm",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg or python-gdcm",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg or python-gdcm",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle or python-gdcm",
}


def transfer_syntax(f: DicomFile) -> str:
    """The file's Transfer Syntax UID ("" when the file has no meta header: implicit little endian is assumed)."""
    meta = getattr(f.header, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def _fast_path_dtype(f: DicomFile) -> np.dtype | None:
    ds = f.header
    if transfer_syntax(f) not in (IMPLICIT_LE, EXPLICIT_LE, "") or f.pixel_offset is None:
        return None
    if ds.get("BitsAllocated") != 16 or ds.get("SamplesPerPixel", 1) != 1 or int(ds.get("NumberOfFrames", 1) or 1) != 1:
        return None
    return np.dtype("<i2") if ds.get("PixelRepresentation", 0) == 1 else np.dtype("<u2")


def _int_tag(f: DicomFile, keyword: str, default: int) -> int | None:
    """An integer tag's value (``default`` when absent or blank); ``None`` when it is not one integer."""
    try:
        value = f.header.get(keyword, default)
        if value is None or value == "":
            return default
        return int(value)
    except (TypeError, ValueError, OverflowError):  # pydicom converts on access: "abc" in an IS raises
        return None


def _shown(f: DicomFile, keyword: str) -> str:
    """A tag's value for a message (its text as stored, or why it cannot be shown)."""
    try:
        return str(f.header.get(keyword))
    except (TypeError, ValueError, OverflowError):
        return "not a number"


def pixel_data_bytes(f: DicomFile) -> int | None:
    """How many bytes of native PixelData the file holds: the element's length, capped by what is on disk.

    ``None`` when unknown: no PixelData offset, encapsulated (compressed) data, or a syntax whose offset is not in
    the file (deflated). Reads only the element header (at most 12 bytes).
    """
    ts = transfer_syntax(f)
    if f.pixel_offset is None or ts not in _NATIVE_SYNTAXES:
        return None
    with open(f.path, "rb") as fp:
        fp.seek(f.pixel_offset)
        head = fp.read(12)
        size = os.fstat(fp.fileno()).st_size
    order = ">" if ts == EXPLICIT_BE else "<"
    if len(head) < 8:
        return 0
    if ts in (EXPLICIT_LE, EXPLICIT_BE) and head[4:6] in _LONG_VRS:
        start, length = 12, struct.unpack(order + "I", head[8:12])[0] if len(head) == 12 else 0
    elif ts in (EXPLICIT_LE, EXPLICIT_BE):
        start, length = 8, struct.unpack(order + "H", head[6:8])[0]
    else:
        start, length = 8, struct.unpack("<I", head[4:8])[0]
    if length == _UNDEFINED_LENGTH:
        return None
    return max(0, min(length, size - f.pixel_offset - start))


def pixel_format_problem(f: DicomFile) -> tuple[SeriesReason, str] | None:
    """A pixel-format tag out of range, or less PixelData than the header's image size: the reason and words.

    Checked before any pixel buffer is allocated: BitsAllocated in :data:`BITS_ALLOCATED`, BitsStored within
    1..BitsAllocated, PixelRepresentation 0 or 1, SamplesPerPixel and NumberOfFrames at least 1, and for native
    (uncompressed) data a PixelData length of at least Rows x Columns x frames x samples x BitsAllocated / 8.
    ``None`` when all is well.
    """
    name = f.path.name
    bits = _int_tag(f, "BitsAllocated", 16)
    if bits not in BITS_ALLOCATED:
        return SeriesReason.INVALID_TAG_VALUE, (
            f"BitsAllocated of {name} is {_shown(f, 'BitsAllocated')}; expected one of {BITS_ALLOCATED}"
        )
    stored = _int_tag(f, "BitsStored", bits)
    if stored is None or not 1 <= stored <= bits:
        return SeriesReason.INVALID_TAG_VALUE, (
            f"BitsStored of {name} is {_shown(f, 'BitsStored')}; expected 1..{bits} (BitsAllocated)"
        )
    counts = {kw: _int_tag(f, kw, 1) for kw in ("SamplesPerPixel", "NumberOfFrames")}
    counts["Rows"], counts["Columns"] = _int_tag(f, "Rows", 0), _int_tag(f, "Columns", 0)
    for kw, value in counts.items():
        if value is None or value < 1:
            return SeriesReason.INVALID_TAG_VALUE, f"{kw} of {name} is {_shown(f, kw)}; expected an integer >= 1"
    if _int_tag(f, "PixelRepresentation", 0) not in (0, 1):
        return SeriesReason.INVALID_TAG_VALUE, (
            f"PixelRepresentation of {name} is {_shown(f, 'PixelRepresentation')}; expected 0 or 1"
        )
    held = pixel_data_bytes(f)
    rows, cols, frames, samples = (
        int(counts[k] or 0) for k in ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel")
    )
    needed = rows * cols * frames * samples * bits // 8
    if held is not None and held < needed:
        return SeriesReason.PIXEL_DATA_LENGTH, (
            f"{name}: the header describes {rows}x{cols} pixels x {frames} frame(s) x {bits} bits = {needed:,} bytes "
            f"of pixel data, the file holds {held:,}; the header or the file is damaged. Re-export the series or "
            "remove the file"
        )
    return None


def read_native_into(f: DicomFile, dest: np.ndarray) -> bool:
    """Read an uncompressed little-endian 16-bit slice straight into ``dest`` (a ``(R, C)`` view of the stack).

    Returns ``False`` (``dest`` untouched) when the file is not on this fast path; then use
    :func:`read_stored_frames`.

    Raises
    ------
    DicomSeriesError
        ``UNREADABLE_FILE`` when the pixel data is truncated.
    """
    dtype = _fast_path_dtype(f)
    offset = f.pixel_offset
    rows, cols = int(f.header.get("Rows", 0) or 0), int(f.header.get("Columns", 0) or 0)
    if dtype is None or offset is None or dest.dtype != dtype or dest.shape != (rows, cols):
        return False
    if not dest.flags.c_contiguous:
        return False
    with open(f.path, "rb") as fp:
        fp.seek(offset)
        head = fp.read(8)
        if len(head) < 8:
            return False
        explicit = transfer_syntax(f) == EXPLICIT_LE
        if explicit and head[4:6] in _LONG_VRS:
            length = struct.unpack("<I", fp.read(4))[0]
        elif explicit:
            length = struct.unpack("<H", head[6:8])[0]
        else:
            length = struct.unpack("<I", head[4:8])[0]
        if length == 0xFFFFFFFF or length < rows * cols * 2:
            return False
        got = fp.readinto(memoryview(dest).cast("B"))  # type: ignore[arg-type]  # no intermediate array or copy
    if got != dest.nbytes:
        raise DicomSeriesError(
            SeriesReason.UNREADABLE_FILE,
            f"{f.path.name} is truncated: pixel data has {got // 2} of {rows * cols} values; re-export or remove the file",
        )
    bits_stored = int(f.header.get("BitsStored", 16))
    if dtype.kind == "i" and bits_stored < 16:
        # Sign-extend from BitsStored, as the standard defines for signed data with unused high bits.
        shift = 16 - bits_stored
        np.right_shift(np.left_shift(dest, shift, out=dest), shift, out=dest)
    return True


def native_dtype(f: DicomFile) -> np.dtype | None:
    """The stored dtype of a file on the fast path (uncompressed LE 16-bit single frame), else ``None``."""
    return _fast_path_dtype(f)


def read_stored_frames(f: DicomFile) -> np.ndarray:
    """Decode the stored pixel values of a file, before the modality LUT.

    Returns
    -------
    numpy.ndarray
        ``(F, R, C)`` integer (or float for float pixel data) array, one entry per frame.

    Raises
    ------
    UnsupportedTransferSyntaxError
        If the pixel data is compressed in a syntax no installed decoder handles.
    DicomSeriesError
        ``UNREADABLE_FILE`` if the file is truncated or its pixel data is damaged.
    """
    dtype = _fast_path_dtype(f)
    if dtype is not None:
        frame = np.empty((int(f.header.Rows), int(f.header.Columns)), dtype)
        if read_native_into(f, frame):
            return frame[None]
    import pydicom  # only off the fast path: `ctseg convert` of plain files never imports it
    from pydicom.uid import UID

    ts = transfer_syntax(f)
    try:
        with ignored_warnings():  # recoverable header oddities; the decode result is what matters
            ds = pydicom.dcmread(f.path, force=True)
            arr = ds.pixel_array
    except NotImplementedError as exc:
        name = UID(ts).name if ts else "unknown"
        package = DECODER_PACKAGES.get(ts, "python-gdcm")
        raise UnsupportedTransferSyntaxError(
            f"{f.path.name}: no installed decoder handles transfer syntax {name} ({ts}); "
            f"install {package} (e.g. pip install {package.split(' or ')[-1]}) or convert the files to "
            "uncompressed DICOM"
        ) from exc
    except Exception as exc:  # damaged or truncated pixel data: pydicom raises ValueError, EOFError, ...
        raise DicomSeriesError(
            SeriesReason.UNREADABLE_FILE,
            f"{f.path.name}: pixel data cannot be decoded ({type(exc).__name__}: {exc}); re-export or remove the file",
        ) from exc
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))  # big-endian files decode to big-endian arrays
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DicomSeriesError(
            SeriesReason.COLOUR_IMAGE,
            f"{f.path.name} decodes to shape {arr.shape}; expected greyscale frames. Colour images are not CT input",
        )
    return arr


def rescale_to_hu(
    stored: np.ndarray,
    slopes: np.ndarray,
    intercepts: np.ndarray,
    *,
    overwrite_input: bool = False,
    stored_range: tuple[int, int] | None = None,
) -> np.ndarray:
    """Apply per-slice rescale slope/intercept: ``HU = stored * slope + intercept``.

    Parameters
    ----------
    stored
        ``(N, R, C)`` stored values, integer or float.
    slopes, intercepts
        ``(N,)`` per-slice modality LUT.
    overwrite_input
        Allow the int16 result to reuse ``stored``'s memory (saves a copy of the whole stack); off by default so
        the caller's array is left as it was.
    stored_range
        ``(min, max)`` of ``stored`` when the caller already knows it (saves two passes over the stack).

    Returns
    -------
    numpy.ndarray
        ``(N, R, C)`` HU: int16 when every slope is 1, every intercept an integer and the result fits int16
        (exact and half the memory); float32 otherwise.

    Examples
    --------
    >>> rescale_to_hu(np.array([[[0, 1024]]], np.uint16), np.array([1.0]), np.array([-1024.0])).tolist()
    [[[-1024, 0]]]
    >>> rescale_to_hu(np.array([[[10]]], np.int16), np.array([0.5]), np.array([-1.0])).dtype
    dtype('float32')
    """
    slopes = np.asarray(slopes, dtype=np.float64)
    intercepts = np.asarray(intercepts, dtype=np.float64)
    integer_lut = bool(np.all(slopes == 1.0) and np.all(intercepts == np.round(intercepts)))
    if integer_lut and stored.dtype.kind in "iu" and stored.size:
        lo, hi = stored_range if stored_range is not None else (int(stored.min()), int(stored.max()))
        if lo + intercepts.min() >= INT16_MIN and hi + intercepts.max() <= INT16_MAX and hi <= INT16_MAX:
            out = stored.astype(np.int16, copy=not (overwrite_input and stored.dtype == np.int16))
            if np.any(intercepts != 0):
                shift = intercepts.astype(np.int16)
                if np.all(shift == shift[0]):
                    out += shift[0]
                else:
                    out += shift[:, None, None]
            return out
    out32 = stored.astype(np.float32)
    out32 *= slopes.astype(np.float32)[:, None, None]
    out32 += intercepts.astype(np.float32)[:, None, None]
    return out32
