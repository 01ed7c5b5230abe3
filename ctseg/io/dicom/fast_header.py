"""A small DICOM header parser for the common case: Part-10 files in implicit or explicit VR little endian.

It replaces ``pydicom.dcmread(stop_before_pixels=True)`` on the hot path of :func:`ctseg.io.dicom.discover.read_header`.
``benchmarks/ingest.py --only read`` showed pydicom's header parse plus ctseg's ``ds.get`` lookups (each converting
a raw element) and a second ``open`` per file taking 6x the raw-bytes floor on a 300-slice series, against a goal of 2x.
This parser opens each file once, reads a bounded chunk, walks the elements with ``struct.unpack_from`` up to the
PixelData tag and converts only the few tags ctseg reads (:data:`DECODED`), no patient-identifying ones.

Whenever the file is not the common case (no preamble, big endian, deflated or compressed syntaxes, enhanced
multi-frame, non-ASCII text in a character set it does not know) or anything looks wrong (truncation, a VR mismatch,
tags out of order), :func:`parse_header` returns ``None`` and the caller falls back to pydicom.

:class:`FastHeader` answers ``get``, ``in`` and attribute access with the values pydicom would give (plain ``float``,
``int``, ``str`` and ``list`` instead of pydicom's subclasses). A keyword outside :data:`DECODED` is read from the
file with pydicom on first use, so the header stays a drop-in for a ``Dataset``.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["DECODED", "FastFileMeta", "FastHeader", "parse_header"]

log = logging.getLogger(__name__)

PREAMBLE_BYTES = 128
MAGIC = b"DICM"
#: Bytes read per ``read`` call; a typical CT header (up to the PixelData tag) fits in one.
CHUNK_BYTES = 16 * 1024
#: Sequences nested deeper than this are treated as damage (pydicom is left to judge them).
MAX_DEPTH = 32

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
#: Float and double-float pixel data: pydicom stops there too, but ctseg's fast pixel path does not read them.
_OTHER_PIXEL_DATA = {0x7FE00008, 0x7FE00009}
_META_GROUP = 0x0002

_VALID_VRS = frozenset(
    vr.encode()
    for vr in (
        "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
    )
)
#: Explicit-VR elements with a 2-byte reserved field and a 4-byte length.
_LONG_VRS = frozenset(vr.encode() for vr in "OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())

#: keyword -> (tag, VR). Only these are converted; none identifies the patient.
DECODED: dict[str, tuple[int, str]] = {
    "SpecificCharacterSet": (0x00080005, "CS"),
    "ImageType": (0x00080008, "CS"),
    "SOPClassUID": (0x00080016, "UI"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "Modality": (0x00080060, "CS"),
    "Manufacturer": (0x00080070, "LO"),
    "SeriesDescription": (0x0008103E, "LO"),
    "ContrastBolusAgent": (0x00180010, "LO"),
    "SliceThickness": (0x00180050, "DS"),
    "SpacingBetweenSlices": (0x00180088, "DS"),
    "ConvolutionKernel": (0x00181210, "SH"),
    "GantryDetectorTilt": (0x00181120, "DS"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "SeriesNumber": (0x00200011, "IS"),
    "AcquisitionNumber": (0x00200012, "IS"),
    "InstanceNumber": (0x00200013, "IS"),
    "ImagePositionPatient": (0x00200032, "DS"),
    "ImageOrientationPatient": (0x00200037, "DS"),
    "FrameOfReferenceUID": (0x00200052, "UI"),
    "SliceLocation": (0x00201041, "DS"),
    "SamplesPerPixel": (0x00280002, "US"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "NumberOfFrames": (0x00280008, "IS"),
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "PixelSpacing": (0x00280030, "DS"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "HighBit": (0x00280102, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "PixelPaddingValue": (0x00280120, "US or SS"),
    "PixelPaddingRangeLimit": (0x00280121, "US or SS"),
    "RescaleIntercept": (0x00281052, "DS"),
    "RescaleSlope": (0x00281053, "DS"),
}
#: Keywords read for every file of a scan (grouping, slice geometry, modality LUT, instance lists): converted while
#: parsing. The others (series-level: description, kernel, thickness, bit depth...) are read from one file of a
#: series, so their raw bytes are kept and converted on first use; a scan of a 2,000-file study then converts about
#: half the values it would otherwise (``benchmarks/inspect_speed.py``).
PER_FILE: frozenset[str] = frozenset(
    (
        "SpecificCharacterSet ImageType SOPClassUID SOPInstanceUID Modality SeriesInstanceUID InstanceNumber "
        "AcquisitionNumber ImagePositionPatient ImageOrientationPatient SamplesPerPixel NumberOfFrames Rows Columns "
        "PixelSpacing PixelRepresentation RescaleIntercept RescaleSlope"
    ).split()
)
#: Sequences whose presence is recorded (``keyword in header``); their content is read with pydicom if asked for.
PRESENCE_ONLY: dict[str, int] = {"DirectoryRecordSequence": 0x00041220}
#: Enhanced multi-frame objects: their per-frame geometry lives in these sequences, so pydicom reads them.
REFUSED: dict[str, int] = {
    "SharedFunctionalGroupsSequence": 0x52009229,
    "PerFrameFunctionalGroupsSequence": 0x52009230,
}
_REFUSED = set(REFUSED.values())
#: Keywords whose presence a FastHeader knows without asking pydicom (refused ones are always absent).
_KNOWN = frozenset(DECODED) | frozenset(PRESENCE_ONLY) | frozenset(REFUSED)
_META_DECODED: dict[int, str] = {
    0x00020002: "MediaStorageSOPClassUID",
    0x00020003: "MediaStorageSOPInstanceUID",
    0x00020010: "TransferSyntaxUID",
}
_META_KNOWN = frozenset(_META_DECODED.values())
_KEYWORD_OF = {tag: kw for kw, (tag, _) in DECODED.items()}
_DECODE, _PRESENCE, _REFUSE = 0, 1, 2
#: What the main loop looks up per element: tag -> what to do with it.
_WANTED: dict[int, int] = {
    **dict.fromkeys(_KEYWORD_OF, _DECODE),
    **dict.fromkeys(PRESENCE_ONLY.values(), _PRESENCE),
    **dict.fromkeys(_REFUSED, _REFUSE),
}
#: Python codecs for the character sets whose non-ASCII text this parser decodes as pydicom does.
_CODECS = {"": "latin_1", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
_NOTHING_WANTED: dict[int, int] = {}
_PRESENCE_KEYWORD = {tag: kw for kw, tag in PRESENCE_ONLY.items()}


class _Unsupported(Exception):
    """Raised inside the parser for anything it leaves to pydicom; never escapes :func:`parse_header`."""


class _IntText(int):
    """An IS value whose text is not its canonical ``str`` (e.g. ``"01"``); ``str`` gives the text, as pydicom does."""

    text: str

    def __new__(cls, value: int, text: str) -> _IntText:
        obj = super().__new__(cls, value)
        obj.text = text
        return obj

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[type[_IntText], tuple[int, str]]:
        return (_IntText, (int(self), self.text))


class _Reader:
    """A window onto an open file: ``data`` holds the bytes from absolute offset ``base``."""

    __slots__ = ("base", "data", "fd", "size")

    def __init__(self, fd: int, size: int, data: bytes) -> None:
        self.fd = fd
        self.size = size
        self.data = data
        self.base = 0

    def window(self, pos: int, n: int) -> int:
        """Make ``data`` hold bytes ``[pos, pos + n)`` and return where they start in it."""
        rel = pos - self.base
        if rel >= 0 and rel + n <= len(self.data):
            return rel
        if pos < 0 or pos + n > self.size:
            raise _Unsupported("truncated")
        self.data = os.pread(self.fd, max(n, CHUNK_BYTES), pos)
        self.base = pos
        if len(self.data) < n:
            raise _Unsupported("short read")
        return 0


def _walk(r: _Reader, pos: int, explicit: bool, depth: int, found: dict[int, tuple[bytes, bytes]] | None) -> int:
    """Walk the elements of one dataset from ``pos``.

    At the top level (``found`` given) collect the raw values of the wanted tags and stop at the PixelData tag
    (returning its offset) or at the end of the file (returning the file size). In a sequence item of undefined
    length (``found`` is None) stop after the item delimiter and return the position after it. A header cut short
    raises :class:`_Unsupported` (or ``struct.error``).
    """
    # This loop runs once per element of every file: locals only, one unpack per element, rare cases in one branch.
    unpack_from = struct.unpack_from
    long_vrs, valid_vrs = _LONG_VRS, _VALID_VRS
    top = found is not None
    sink: dict[int, tuple[bytes, bytes]] = found if found is not None else {}
    wanted = _WANTED if top else _NOTHING_WANTED
    size = r.size
    data, base = r.data, r.base
    n = len(data)
    last = -1
    vr = b""
    while True:
        p = pos - base
        if p < 0 or p + 12 > n:
            if pos >= size:
                if not top or pos > size:
                    raise _Unsupported("dataset runs past the end of the file")
                return pos
            p = r.window(pos, min(12, size - pos))
            data, base = r.data, r.base
            n = len(data)
        if explicit:
            group, elem, vr, length = unpack_from("<HH2sH", data, p)
        else:
            group, elem, length = unpack_from("<HHI", data, p)
        tag = group << 16 | elem
        if tag <= last or tag >= 0x7FE00008:
            if not top and tag == _ITEM_DELIMITER:
                return pos + 8
            if tag <= last:
                raise _Unsupported("tags out of order")
            if top and tag == _PIXEL_DATA:
                return pos
            if (top and tag in _OTHER_PIXEL_DATA) or group == 0xFFFE:
                raise _Unsupported("float pixel data or an item tag outside a sequence")
        last = tag
        if explicit:
            if vr in long_vrs:
                length = unpack_from("<I", data, p + 8)[0]
                pos += 12
            elif vr in valid_vrs:
                pos += 8
            else:
                raise _Unsupported("invalid VR")
        else:
            pos += 8
        want = wanted.get(tag)
        if length == _UNDEFINED:
            pos = _skip_undefined_length(r, pos, explicit, vr, depth)
            data, base = r.data, r.base
            n = len(data)
            if want == _DECODE or want == _REFUSE:
                raise _Unsupported("undefined length on a decoded tag, or enhanced multi-frame")
            if want == _PRESENCE:
                sink[tag] = (vr, b"")
            continue
        if want is not None:
            if want == _DECODE:
                q = pos - base
                if q < 0 or q + length > n:
                    q = r.window(pos, length)
                    data, base = r.data, r.base
                    n = len(data)
                sink[tag] = (vr, data[q : q + length])
            elif want == _PRESENCE:
                sink[tag] = (vr, b"")
            else:
                raise _Unsupported("enhanced multi-frame")
        pos += length


def _skip_undefined_length(r: _Reader, pos: int, explicit: bool, vr: bytes, depth: int) -> int:
    """Skip a value of undefined length starting at ``pos``: a sequence (SQ, or any in implicit VR) or an UN one."""
    if not explicit or vr == b"SQ":
        return _skip_sequence(r, pos, explicit, depth)
    if vr == b"UN":
        # A sequence whose VR was lost: its content is implicit VR little endian (PS3.5 6.2.2).
        return _skip_sequence(r, pos, False, depth)
    raise _Unsupported("undefined length outside a sequence")


def _skip_sequence(r: _Reader, pos: int, explicit: bool, depth: int) -> int:
    """Walk a sequence of undefined length from its first item; return the position after its delimiter."""
    if depth >= MAX_DEPTH:
        raise _Unsupported("sequences nested too deep")
    while True:
        p = r.window(pos, 8)
        group, elem, length = struct.unpack_from("<HHI", r.data, p)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQUENCE_DELIMITER:
            return pos
        if tag != _ITEM:
            raise _Unsupported("expected a sequence item")
        if length == _UNDEFINED:
            pos = _walk(r, pos, explicit, depth + 1, None)
        else:
            pos += length


def _read_meta(r: _Reader) -> tuple[dict[str, str], int, int]:
    """Parse the file meta group (explicit VR LE) after the magic; return its decoded UIDs, element count and end."""
    pos = PREAMBLE_BYTES + len(MAGIC)
    values: dict[str, str] = {}
    count = 0
    size = r.size
    while pos < size:
        p = r.window(pos, min(12, size - pos))
        data = r.data
        group, elem, vr, length = struct.unpack_from("<HH2sH", data, p)
        if group != _META_GROUP:
            break
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", data, p + 8)[0]
            p += 12
        elif vr in _VALID_VRS:
            p += 8
        else:
            raise _Unsupported("invalid VR in file meta")
        keyword = _META_DECODED.get(group << 16 | elem)
        if keyword is not None:
            if vr != b"UI" or p + length > len(data):
                raise _Unsupported("meta UID with another VR, or too long")
            values[keyword] = data[p : p + length].decode("latin_1").rstrip("\0 ")
        count += 1
        pos = r.base + p + length
    if "TransferSyntaxUID" not in values or pos > size:
        raise _Unsupported("no transfer syntax, or a truncated file meta")
    return values, count, pos


def _strings(raw: bytes) -> Any:
    """CS/UI as pydicom's ``multi_string``: strip trailing spaces and NULs, split on backslash."""
    text = raw.decode("latin_1").rstrip(" \0")
    return text.split("\\") if "\\" in text else text


def _ds_slow(raw: bytes) -> Any:
    text = raw.decode("latin_1").strip().rstrip(" \0")
    if not text:
        return ""  # a blank DS reads as "" in pydicom
    try:
        out = [float(item) for item in text.split("\\")]
    except ValueError:
        raise _Unsupported("DS not a number") from None
    return out[0] if len(out) == 1 else out


def _ds(raw: bytes) -> Any:
    """DS as float (list of float when multi-valued); float() takes bytes and ignores surrounding whitespace."""
    try:
        if b"\\" in raw:
            return [float(item) for item in raw.split(b"\\")]
        return float(raw)
    except ValueError:
        return _ds_slow(raw)


def _is(raw: bytes) -> Any:
    """IS as int; an int that keeps its text (e.g. "01") when ``str`` would differ, as pydicom's IS does."""
    text = raw.decode("latin_1").rstrip(" \0")
    if not text.strip():
        return ""
    out: list[int] = []
    for item in text.split("\\"):
        item = item.strip()
        try:
            value = int(item)
        except ValueError:
            raise _Unsupported("IS not an integer") from None
        out.append(value if str(value) == item else _IntText(value, item))
    return out[0] if len(out) == 1 else out


def _us(raw: bytes) -> Any:
    if len(raw) == 2:
        return raw[0] | raw[1] << 8
    return _numbers(raw, "H")


def _ss(raw: bytes) -> Any:
    return _numbers(raw, "h")


def _numbers(raw: bytes, fmt: str) -> Any:
    count, rest = divmod(len(raw), 2)
    if rest:
        raise _Unsupported("odd length for a 16-bit value")
    out = list(struct.unpack(f"<{count}{fmt}", raw))
    return out[0] if count == 1 else out


def _text(raw: bytes, charset: Any) -> Any:
    """LO/SH as pydicom's ``convert_text``: decode, split on backslash, strip trailing NULs and spaces of each."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        codec = _CODECS.get(charset) if isinstance(charset, str) else None
        if codec is None:
            raise _Unsupported("non-ASCII text in a character set this parser does not decode") from None
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError:
            raise _Unsupported("text not in its character set") from None
    if "\\" in text:
        return [item.rstrip("\0 ") for item in text.split("\\")]
    return text.rstrip("\0 ")


_CONVERTERS: dict[str, Callable[[bytes], Any]] = {"CS": _strings, "UI": _strings, "DS": _ds, "IS": _is, "US": _us}
#: tag -> (keyword, VR as bytes, converter); "US or SS", LO and SH are resolved in _decode.
_SPECS: dict[int, tuple[str, bytes, Callable[[bytes], Any] | None]] = {
    tag: (kw, vr.encode(), _CONVERTERS.get(vr)) for kw, (tag, vr) in DECODED.items()
}
_EMPTY_NUMBER_VRS = {b"DS", b"IS", b"US", b"SS", b"US or SS"}


def _decode_one(tag: int, vr: bytes, raw: bytes, explicit: bool, values: dict[str, Any]) -> Any:
    """One raw value as pydicom gives it; ``values`` holds the per-file ones (character set, pixel representation)."""
    kw, expected, convert = _SPECS[tag]
    if convert is None:
        if expected in (b"LO", b"SH"):
            if explicit and vr != expected:
                raise _Unsupported(f"{kw} with VR {vr!r}")
            return _text(raw, values.get("SpecificCharacterSet", "")) if raw else ""
        # "US or SS": explicit VR says which; in implicit VR pydicom goes by PixelRepresentation (0028,0103),
        # which precedes these tags: SS when it is set and not 0.
        if explicit:
            if vr not in (b"US", b"SS"):
                raise _Unsupported(f"{kw} with VR {vr!r}")
        else:
            pixel_rep = values.get("PixelRepresentation")
            if "PixelRepresentation" in values and not isinstance(pixel_rep, int):
                raise _Unsupported("PixelRepresentation empty or multi-valued")
            vr = b"SS" if pixel_rep else b"US"
        convert = _ss if vr == b"SS" else _us
    elif explicit and vr != expected:
        raise _Unsupported(f"{kw} with VR {vr!r}")
    if raw:
        return convert(raw)
    return None if expected in _EMPTY_NUMBER_VRS else ""


def _decode(
    found: dict[int, tuple[bytes, bytes]], explicit: bool
) -> tuple[dict[str, Any], dict[str, tuple[int, bytes, bytes]], frozenset[str]]:
    """Convert the :data:`PER_FILE` values to what pydicom gives; keep the others raw (keyword -> tag, VR, bytes).

    The kept ones are checked here only as far as deciding whether this parser can read the file: a VR that
    contradicts the tag's, or non-ASCII text in a character set it does not decode, returns the file to pydicom.
    Also returns the presence-only keywords found.
    """
    values: dict[str, Any] = {}
    lazy: dict[str, tuple[int, bytes, bytes]] = {}
    present: list[str] = []
    for tag, (vr, raw) in found.items():  # in tag order: (0008,0005) and (0028,0103) precede their users
        spec = _SPECS.get(tag)
        if spec is None:
            present.append(_PRESENCE_KEYWORD[tag])
        elif spec[0] in PER_FILE:
            values[spec[0]] = _decode_one(tag, vr, raw, explicit, values)
        else:
            kw, expected, _ = spec
            if explicit and vr != expected and not (expected == b"US or SS" and vr in (b"US", b"SS")):
                raise _Unsupported(f"{kw} with VR {vr!r}")
            if expected in (b"LO", b"SH") and not raw.isascii():
                charset = values.get("SpecificCharacterSet", "")
                if not isinstance(charset, str) or charset not in _CODECS:
                    raise _Unsupported("non-ASCII text in a character set this parser does not decode")
            lazy[kw] = (tag, vr, raw)
    return values, lazy, frozenset(present)


def _check_encoding(r: _Reader, pos: int, explicit: bool) -> None:
    """Refuse a dataset whose first element contradicts the transfer syntax (pydicom peeks and switches)."""
    if pos + 6 > r.size:
        return
    p = r.window(pos, 6)
    looks_explicit = r.data[p + 4 : p + 6] in _VALID_VRS
    if looks_explicit != explicit:
        raise _Unsupported("transfer syntax does not match the dataset encoding")


def _load_dataset(path: Path) -> Any:
    import pydicom

    from ctseg.io.dicom.quiet import ignored_warnings

    with ignored_warnings():  # recoverable header oddities, as in discover.read_header
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)


class FastFileMeta:
    """The file meta group (0002) as far as ctseg reads it: ``get``, ``in``, attributes and ``len``."""

    __slots__ = ("_count", "_owner", "_values")

    def __init__(self, values: dict[str, str], count: int, owner: FastHeader) -> None:
        self._values = values
        self._count = count
        self._owner = owner

    def __len__(self) -> int:
        return self._count

    def __contains__(self, keyword: object) -> bool:
        if keyword in self._values:
            return True
        if keyword in _META_KNOWN:
            return False
        return keyword in self._owner._dataset().file_meta

    def get(self, keyword: str, default: Any = None) -> Any:
        """The value of ``keyword``, or ``default`` when absent."""
        if keyword in self._values:
            return self._values[keyword]
        if keyword in _META_KNOWN:
            return default
        return self._owner._dataset().file_meta.get(keyword, default)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._values:
            return self._values[name]
        if name in _META_KNOWN:
            raise AttributeError(f"file meta has no {name}")
        return getattr(self._owner._dataset().file_meta, name)

    def __repr__(self) -> str:
        return f"FastFileMeta({self._values!r}, {self._count} elements)"


class FastHeader:
    """A DICOM header for ctseg: the :data:`DECODED` values, the file meta and where the pixel data starts.

    Behaves like a pydicom ``Dataset`` read with ``stop_before_pixels``: ``get(keyword, default)``,
    ``keyword in header``, ``header.Rows`` (``AttributeError`` when absent) and ``header.file_meta``. Multi-valued
    elements are lists, DS values ``float``, IS/US/SS ``int``, text ``str``; empty ones ``None`` (numbers) or ``""``.
    Keywords outside :data:`DECODED` are read with pydicom from ``path`` on first use.
    """

    __slots__ = ("_explicit", "_full", "_lazy", "_present", "_values", "file_meta", "path", "pixel_offset")

    def __init__(
        self,
        path: Path,
        values: dict[str, Any],
        present: frozenset[str],
        meta: dict[str, str],
        meta_count: int,
        pixel_offset: int | None,
        lazy: dict[str, tuple[int, bytes, bytes]] | None = None,
        explicit: bool = True,
    ) -> None:
        self.path = path
        self._values = values  # converted: the PER_FILE keywords, and the others once asked for
        self._lazy = lazy if lazy is not None else {}  # keyword -> (tag, VR, raw bytes), not yet converted
        self._explicit = explicit
        self._present = present
        self.file_meta = FastFileMeta(meta, meta_count, self)
        self.pixel_offset = pixel_offset
        self._full: Any = None

    def _dataset(self) -> Any:
        """The full pydicom header, for keywords this parser does not decode."""
        if self._full is None:
            # Slow path: a keyword outside DECODED was asked for; add it there if ctseg reads it per file.
            log.debug("%s: reading the full header with pydicom", self.path.name)
            self._full = _load_dataset(self.path)
        return self._full

    def _convert(self, keyword: str) -> Any:
        """Convert a kept raw value on first use; pydicom's value when this parser cannot (e.g. a DS not a number)."""
        tag, vr, raw = self._lazy.pop(keyword)
        try:
            value = _decode_one(tag, vr, raw, self._explicit, self._values)
        except (_Unsupported, struct.error, UnicodeDecodeError):
            value = self._dataset().get(keyword)
        self._values[keyword] = value
        return value

    def get(self, keyword: str, default: Any = None) -> Any:
        """The value of ``keyword`` (``None``/``""`` when present but empty), or ``default`` when absent."""
        values = self._values
        if keyword in values:
            return values[keyword]
        if keyword in self._lazy:
            return self._convert(keyword)
        if keyword in _KNOWN and keyword not in self._present:
            return default
        return self._dataset().get(keyword, default)

    def __contains__(self, keyword: object) -> bool:
        if keyword in self._values or keyword in self._lazy or keyword in self._present:
            return True
        if keyword in _KNOWN:
            return False
        return keyword in self._dataset()

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not slots or methods; slots may be unset while unpickling.
        if name.startswith("_") or not name[:1].isupper():
            raise AttributeError(name)
        values = self._values
        if name in values:
            return values[name]
        if name in self._lazy:
            return self._convert(name)
        if name in _KNOWN and name not in self._present:
            raise AttributeError(f"header of {self.path.name} has no {name}")
        return getattr(self._dataset(), name)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "values": self._values,
            "present": self._present,
            "meta": self.file_meta._values,
            "meta_count": self.file_meta._count,
            "pixel_offset": self.pixel_offset,
            "lazy": self._lazy,
            "explicit": self._explicit,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["path"],
            state["values"],
            state["present"],
            state["meta"],
            state["meta_count"],
            state["pixel_offset"],
            state["lazy"],
            state["explicit"],
        )

    def __repr__(self) -> str:
        return (
            f"FastHeader({self.path.name}, {len(self._values)} decoded, {len(self._lazy)} kept raw, "
            f"pixel_offset={self.pixel_offset})"
        )


def parse_header(path: Path) -> FastHeader | None:
    """Parse the header of a Part-10 implicit/explicit VR little-endian DICOM file, up to its pixel data.

    Parameters
    ----------
    path
        Any file.

    Returns
    -------
    FastHeader or None
        The header, with ``pixel_offset`` the file offset of the PixelData (7FE0,0010) tag, or ``None`` when
        there is none. ``None`` for anything else (not DICOM, no preamble, another transfer syntax, enhanced
        multi-frame, a truncated or odd header, an unreadable file): read those with pydicom. Never raises.
    """
    if not isinstance(path, Path):
        path = Path(path)  # (not unconditionally: re-wrapping a Path re-parses it, a measurable cost per file)
    try:
        # A bare descriptor: os.read fills a bytes object directly (no file object or buffer), about half the
        # cost of open() + read() per file.
        fd = os.open(path, os.O_RDONLY)
        try:
            head = os.read(fd, CHUNK_BYTES)
            size = len(head) if len(head) < CHUNK_BYTES else os.fstat(fd).st_size
            r = _Reader(fd, size, head)
            if r.data[PREAMBLE_BYTES : PREAMBLE_BYTES + len(MAGIC)] != MAGIC:
                return None
            meta, meta_count, pos = _read_meta(r)
            syntax = meta["TransferSyntaxUID"]
            if syntax not in (IMPLICIT_LE, EXPLICIT_LE):
                return None
            explicit = syntax == EXPLICIT_LE
            _check_encoding(r, pos, explicit)
            found: dict[int, tuple[bytes, bytes]] = {}
            end = _walk(r, pos, explicit, 0, found)
        finally:
            os.close(fd)
        values, lazy, present = _decode(found, explicit)
    except (_Unsupported, OSError, struct.error, UnicodeDecodeError):
        return None
    frames = values.get("NumberOfFrames")
    if frames not in (None, "", 1):
        return None  # multi-frame (or an odd frame count): pydicom reads it
    pixel_offset = end if end < size else None
    return FastHeader(path, values, present, meta, meta_count, pixel_offset, lazy, explicit)
