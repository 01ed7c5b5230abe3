"""The fast header parser against pydicom: same values, same pixel offset, or ``None`` (pydicom fallback)."""

from __future__ import annotations

import importlib
import pickle
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from ctseg.io.dicom import inspect_dicom, read_dicom_series
from ctseg.io.dicom.fast_header import DECODED, PRESENCE_ONLY, REFUSED, FastHeader, parse_header
from tests.synthetic import PHI_ID, PHI_NAME, make_volume, write_dicom_series, write_oracle_series

discover_module = importlib.import_module("ctseg.io.dicom.discover")

EXPLICIT_TS = b"1.2.840.10008.1.2.1\0"
#: Transfer syntaxes of the same encoded length as EXPLICIT_TS, patched into the meta to test refusal.
OTHER_TS = {"big endian": b"1.2.840.10008.1.2.2\0", "RLE": b"1.2.840.10008.1.2.5\0"}
PIXEL_TAG = b"\xe0\x7f\x10\x00"


@contextmanager
def _pydicom_only() -> Iterator[None]:
    """Make ``discover.read_header`` take its pydicom path (the reference)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(discover_module, "parse_header", lambda path: None)
        yield


def _reference(path: Path) -> tuple[Dataset, int | None]:
    with _pydicom_only():
        return discover_module.read_header(path)  # type: ignore[no-any-return]


def _norm(value: Any) -> Any:
    """A comparable form: lists for multi-values, floats and ints (with their str, which pydicom keeps) by kind."""
    if isinstance(value, (list, MultiValue)):
        return [_norm(v) for v in value]
    if isinstance(value, bool):
        return ("other", value)
    if isinstance(value, float):
        return ("float", float(value))
    if isinstance(value, int):
        return ("int", int(value), str(value))
    if isinstance(value, str):
        return ("str", str(value))
    return ("other", repr(value))


def assert_same_as_pydicom(path: Path, header: FastHeader) -> None:
    """Every keyword the parser knows has pydicom's presence and value; offsets and file meta agree."""
    ds, offset = _reference(path)
    for kw in [*DECODED, *PRESENCE_ONLY, *REFUSED]:
        assert (kw in header) == (kw in ds), f"{path.name}: presence of {kw}"
    for kw in DECODED:
        if kw in ds:
            expected = _norm(ds.get(kw))
            assert _norm(header.get(kw)) == expected, f"{path.name}: {kw}"
            assert _norm(getattr(header, kw)) == expected, f"{path.name}: {kw} as attribute"
        else:
            assert header.get(kw, "absent") == "absent"
            assert getattr(header, kw, None) is None
    assert header.pixel_offset == offset, f"{path.name}: pixel offset"
    for kw in ("TransferSyntaxUID", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID"):
        assert header.file_meta.get(kw) == ds.file_meta.get(kw), f"{path.name}: file meta {kw}"
    assert len(header.file_meta) == len(ds.file_meta)


def _one_slice(folder: Path, **kwargs: Any) -> Path:
    """One 4x4 synthetic CT slice (explicit VR little endian), written by pydicom."""
    return write_oracle_series(folder, [(0.0, 0.0, 0.0)], rows=4, cols=4, **kwargs)[0]


def _resave(src: Path, dst: Path, edit: Callable[[Dataset], None] | None = None, *, implicit: bool = True) -> Path:
    """Re-save ``src`` with pydicom, optionally edited, in implicit VR little endian."""
    ds = pydicom.dcmread(src)
    if edit is not None:
        edit(ds)
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(dst, enforce_file_format=True)
    return dst


def _parsed(path: Path) -> FastHeader:
    header = parse_header(path)
    assert header is not None, f"{path.name} fell back to pydicom"
    return header


# ---------------------------------------------------------------------------------------------------------------
# Real files
# ---------------------------------------------------------------------------------------------------------------
def test_real_files_match_pydicom(shared_data: Path) -> None:
    parsed, fell_back = [], []
    for path in sorted(p for p in shared_data.rglob("*") if p.is_file()):
        header = parse_header(path)
        if header is None:
            fell_back.append(path)
            continue
        assert_same_as_pydicom(path, header)
        parsed.append(path)
    # The uncompressed little-endian CT series (GE, Philips, dcmqi, itkelastix, ...) take the fast path.
    assert len(parsed) >= 140, f"only {len(parsed)} files parsed fast"
    names = {p.name for p in parsed}
    assert "CTImage.dcm_LittleEndianImplicitTransferSyntax_1.2.840.10008.1.2.dcm" in names
    assert "CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm" in names
    # Compressed, big-endian, deflated and enhanced multi-frame files are left to pydicom.
    for name in ("BigEndian", "Deflated", "JPEG2000", "JPEGLS", "RLE", "eCT_Supplemental", "seg_image_ct_binary."):
        assert any(name in p.name for p in fell_back), name
        assert not any(name in p.name for p in parsed), name


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")  # pydicom, on a deid file's hashed UID
def test_real_data_plans_identical_with_and_without_fast_path(shared_data: Path) -> None:
    def summary() -> Any:
        found = inspect_dicom(shared_data)
        plans = [
            (
                p.series_uid,
                p.label,
                p.modality,
                str(p.error),
                [str(w) for w in p.warnings],
                p.skipped,
                p.step_mm,
                p.shape,
                [(s.file.path, s.file.pixel_offset, s.position, s.orientation, s.slope, s.intercept) for s in p.slices],
            )
            for p in found.plans
        ]
        return plans, [(i.path, i.reason) for i in found.ignored], found.reason

    fast = summary()
    with _pydicom_only():
        reference = summary()
    assert fast == reference


# ---------------------------------------------------------------------------------------------------------------
# pydicom-written files
# ---------------------------------------------------------------------------------------------------------------
EXTRAS: dict[str, dict[str, Any]] = {
    "plain": {},
    "padding-signed": {"PixelPaddingValue": -3024, "PixelPaddingRangeLimit": -2000},
    "tags": {
        "AcquisitionNumber": "01",  # pydicom keeps the text: str() gives "01"
        "SpacingBetweenSlices": "2.50",
        "GantryDetectorTilt": "-12.5",
        "NumberOfFrames": "1",
        "SeriesDescription": "ABDOMEN\\PORTAL",  # multi-valued LO
    },
    "empty": {"SliceThickness": None, "SeriesDescription": "", "AcquisitionNumber": None, "ImageType": ""},
    "blank-ds": {"SliceThickness": "  "},
    "choice": {  # what the series choice reads: LO and SH text, a multi-valued kernel
        "ConvolutionKernel": "I30f\\3",
        "Manufacturer": "SIEMENS",
        "ContrastBolusAgent": "IOMERON 350",
        "ImageType": "DERIVED\\SECONDARY\\MPR",
    },
}


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize("extra", list(EXTRAS), ids=list(EXTRAS))
def test_synthetic_files_match_pydicom(tmp_path: Path, extra: str, implicit: bool) -> None:
    path = _one_slice(tmp_path / "s", extra=EXTRAS[extra])
    if implicit:
        path = _resave(path, tmp_path / "implicit.dcm")
    header = _parsed(path)
    assert header.file_meta.get("TransferSyntaxUID") == ("1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1")
    assert_same_as_pydicom(path, header)


@pytest.mark.parametrize("pixel_rep", [0, 1])
def test_implicit_padding_value_signedness_follows_pixel_representation(tmp_path: Path, pixel_rep: int) -> None:
    def edit(ds: Dataset) -> None:
        ds.PixelRepresentation = pixel_rep
        ds.PixelPaddingValue = 63000 if pixel_rep == 0 else -3024

    path = _resave(_one_slice(tmp_path / "s"), tmp_path / "implicit.dcm", edit)
    header = _parsed(path)
    assert header.PixelPaddingValue == (63000 if pixel_rep == 0 else -3024)
    assert_same_as_pydicom(path, header)


def _private_sequences(ds: Dataset) -> None:
    """Add an undefined-length private sequence (nested, with decoy image tags inside) before the pixel data."""
    inner_item = Dataset()
    inner_item.Rows = 99  # decoys: tags inside items must not be taken for the image's own
    inner_item.add_new(0x00291030, "LO", "inner")
    inner_item.is_undefined_length_sequence_item = True
    inner = Sequence([inner_item])
    item = Dataset()
    item.ImagePositionPatient = [1, 2, 3]
    item.add_new(0x00291020, "SQ", inner)
    item[0x00291020].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    defined_item = Dataset()
    defined_item.add_new(0x00291040, "SQ", Sequence([inner_item]))  # undefined inside a defined-length item
    defined_item[0x00291040].is_undefined_length = True
    ds.add_new(0x00290010, "LO", "CTSEG TEST")
    ds.add_new(0x00291010, "SQ", Sequence([item, Dataset()]))
    ds[0x00291010].is_undefined_length = True
    ds.add_new(0x00291011, "SQ", Sequence([defined_item]))  # defined length: skipped by its length
    ds.ReferencedImageSequence = Sequence([item])  # a public one, undefined length too
    ds["ReferencedImageSequence"].is_undefined_length = True


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_undefined_length_sequences_are_walked(tmp_path: Path, implicit: bool) -> None:
    path = _resave(_one_slice(tmp_path / "s"), tmp_path / "seq.dcm", _private_sequences, implicit=implicit)
    raw = path.read_bytes()
    assert b"\xfe\xff\xdd\xe0" in raw and b"\xfe\xff\x0d\xe0" in raw  # the delimiters really are there
    header = _parsed(path)
    assert header.Rows == 4 and header.ImagePositionPatient == [0.0, 0.0, 0.0]
    assert_same_as_pydicom(path, header)


def _un_sequence_element() -> bytes:
    """(0031,1010) as explicit VR 'UN' of undefined length, holding implicit-VR items (a sequence whose VR was lost)."""
    creator = struct.pack("<HH2sH", 0x0031, 0x0010, b"LO", 10) + b"CTSEG UN  "
    inner = struct.pack("<HHI", 0x0031, 0x1011, 4) + b"abcd"
    nested = struct.pack("<HHI", 0x0031, 0x1012, 0xFFFFFFFF)  # implicit VR: undefined length means a sequence
    nested += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner
    nested += struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner + nested + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence = struct.pack("<HH2sHI", 0x0031, 0x1010, b"UN", 0, 0xFFFFFFFF) + item
    return creator + sequence + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def test_un_sequence_of_undefined_length_is_walked_as_implicit(tmp_path: Path) -> None:
    src = _one_slice(tmp_path / "s")
    raw = src.read_bytes()
    at = raw.index(PIXEL_TAG)
    path = tmp_path / "un.dcm"
    path.write_bytes(raw[:at] + _un_sequence_element() + raw[at:])
    header = _parsed(path)
    assert header.pixel_offset == at + len(_un_sequence_element())
    assert_same_as_pydicom(path, header)


@pytest.mark.parametrize(
    ("charset", "text"),
    [("", "Caf\xe9"), ("ISO_IR 100", "Thorax nativ \xe4\xf6\xfc"), ("ISO_IR 192", "Thorax \u00e9 \u4e2d")],
    ids=["default", "latin1", "utf8"],
)
def test_non_ascii_description_in_known_charsets(tmp_path: Path, charset: str, text: str) -> None:
    extra = {"SpecificCharacterSet": charset} if charset else {}
    path = _one_slice(tmp_path / "s", extra=extra, description=text)
    header = _parsed(path)
    assert header.SeriesDescription == text
    assert_same_as_pydicom(path, header)


def test_non_ascii_description_in_other_charsets_falls_back(tmp_path: Path) -> None:
    path = _one_slice(
        tmp_path / "s", extra={"SpecificCharacterSet": "ISO_IR 144"}, description="\u0413\u0440\u0443\u0434\u044c"
    )
    assert parse_header(path) is None
    header, _ = discover_module.read_header(path)
    assert not isinstance(header, FastHeader) and header.SeriesDescription == "\u0413\u0440\u0443\u0434\u044c"


# ---------------------------------------------------------------------------------------------------------------
# What the parser refuses: None, never an exception
# ---------------------------------------------------------------------------------------------------------------
def test_not_dicom_returns_none(tmp_path: Path) -> None:
    cases = {
        "text.txt": b"hello, not DICOM\n" * 20,
        "empty": b"",
        "random": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "magic-only": b"\0" * 128 + b"DICM",
        "magic-garbage": b"\0" * 128 + b"DICM" + b"\xff" * 64,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert parse_header(tmp_path / name) is None, name
    assert parse_header(tmp_path / "missing") is None
    assert parse_header(tmp_path) is None  # a folder


def test_truncated_headers_return_none(tmp_path: Path) -> None:
    path = _resave(_one_slice(tmp_path / "s"), tmp_path / "seq.dcm", _private_sequences, implicit=False)
    raw = path.read_bytes()
    offset = raw.index(PIXEL_TAG)
    sequence_at = raw.index(b"\x29\x00\x10\x10")
    for cut in (100, 131, 140, 200, sequence_at + 20, sequence_at + 70, offset - 3):
        (tmp_path / "cut.dcm").write_bytes(raw[:cut])
        assert parse_header(tmp_path / "cut.dcm") is None, cut


@pytest.mark.parametrize("syntax", list(OTHER_TS))
def test_other_transfer_syntaxes_return_none(tmp_path: Path, syntax: str) -> None:
    raw = _one_slice(tmp_path / "s").read_bytes()
    assert raw.count(EXPLICIT_TS) == 1
    (tmp_path / "other.dcm").write_bytes(raw.replace(EXPLICIT_TS, OTHER_TS[syntax]))
    assert parse_header(tmp_path / "other.dcm") is None


def test_no_preamble_returns_none_and_pydicom_reads_it(tmp_path: Path) -> None:
    raw = _one_slice(tmp_path / "s").read_bytes()
    (tmp_path / "bare.dcm").write_bytes(raw[132:])
    assert parse_header(tmp_path / "bare.dcm") is None
    header, _ = discover_module.read_header(tmp_path / "bare.dcm")
    assert header.Rows == 4


def test_transfer_syntax_contradicting_the_encoding_returns_none(tmp_path: Path) -> None:
    raw = _one_slice(tmp_path / "s").read_bytes()
    # Claim implicit VR (same value length, NUL-padded) for an explicit-VR dataset; pydicom notices and switches.
    (tmp_path / "liar.dcm").write_bytes(raw.replace(EXPLICIT_TS, b"1.2.840.10008.1.2\0\0"))
    assert parse_header(tmp_path / "liar.dcm") is None


def test_multiframe_returns_none(tmp_path: Path) -> None:
    path = _one_slice(tmp_path / "s", extra={"NumberOfFrames": "2"})
    assert parse_header(path) is None


def test_functional_groups_return_none(tmp_path: Path) -> None:
    def edit(ds: Dataset) -> None:
        ds.SharedFunctionalGroupsSequence = Sequence([Dataset()])

    path = _resave(_one_slice(tmp_path / "s"), tmp_path / "fg.dcm", edit, implicit=False)
    assert parse_header(path) is None


# ---------------------------------------------------------------------------------------------------------------
# A drop-in for the pydicom Dataset
# ---------------------------------------------------------------------------------------------------------------
def test_behaves_like_a_dataset(tmp_path: Path) -> None:
    path = _one_slice(tmp_path / "s")
    header, offset = discover_module.read_header(path)
    assert isinstance(header, FastHeader) and offset == header.pixel_offset
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert header.Rows == 4 and "Rows" in header
    assert getattr(header, "PerFrameFunctionalGroupsSequence", None) is None
    assert "PerFrameFunctionalGroupsSequence" not in header and "DirectoryRecordSequence" not in header
    with pytest.raises(AttributeError, match="no PixelPaddingValue"):
        _ = header.PixelPaddingValue
    assert header.get("PixelPaddingValue") is None and header.get("PixelPaddingValue", 7) == 7
    assert len(header.file_meta) > 0 and header.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert "TransferSyntaxUID" in header.file_meta
    # A keyword outside DECODED is read with pydicom on first use.
    assert "RescaleType" not in DECODED
    assert header.RescaleType == "HU" and header.get("RescaleType") == "HU" and "RescaleType" in header
    assert header.file_meta.ImplementationClassUID == ds.file_meta.ImplementationClassUID
    with pytest.raises(AttributeError):
        _ = header.NotAKeyword
    with pytest.raises(AttributeError):
        _ = header.lowercase_name


def test_stores_no_patient_identifiers(tmp_path: Path) -> None:
    header = _parsed(_one_slice(tmp_path / "s"))
    stored = repr(header.__getstate__())
    assert PHI_NAME not in stored and PHI_ID not in stored and "19700101" not in stored


def test_pickles(tmp_path: Path) -> None:
    header = _parsed(_one_slice(tmp_path / "s", extra={"AcquisitionNumber": "01"}))
    copy = pickle.loads(pickle.dumps(header))
    assert copy.__getstate__() == header.__getstate__()
    assert str(copy.AcquisitionNumber) == "01" and copy.file_meta.get("TransferSyntaxUID") == "1.2.840.10008.1.2.1"


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_read_series_identical_with_and_without_fast_path(tmp_path: Path, implicit: bool) -> None:
    v = make_volume(shape=(5, 8, 6), spacing=(2.0, 0.7, 0.9))
    paths = write_dicom_series(tmp_path / "s", v, shuffle_instances=True, extra={"PixelPaddingValue": -3024})
    if implicit:
        for path in paths:
            _resave(path, path, _private_sequences)
    fast = read_dicom_series(tmp_path / "s")
    with _pydicom_only():
        reference = read_dicom_series(tmp_path / "s")
    assert fast.geometry == reference.geometry
    np.testing.assert_array_equal(fast.array, reference.array)
    assert fast.array.dtype == reference.array.dtype


def test_reading_a_series_never_needs_the_full_pydicom_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every keyword ctseg reads per file is in DECODED; a new one would silently take pydicom's slow path."""

    def refuse(path: Path) -> None:
        raise AssertionError(f"full pydicom header read for {path.name}: add the keyword to fast_header.DECODED")

    monkeypatch.setattr(importlib.import_module("ctseg.io.dicom.fast_header"), "_load_dataset", refuse)
    v = make_volume(shape=(4, 6, 5))
    choice_tags = {"ConvolutionKernel": "B30f", "Manufacturer": "SIEMENS", "ContrastBolusAgent": "IOMERON"}
    write_dicom_series(tmp_path / "s", v, extra={"PixelPaddingValue": -3024, **choice_tags})
    assert read_dicom_series(tmp_path / "s").shape == v.shape


# ---------------------------------------------------------------------------------------------------------------
# Per-file values converted while parsing, series-level ones on first use
# ---------------------------------------------------------------------------------------------------------------
def test_the_fast_slice_path_reads_only_values_converted_while_parsing() -> None:
    from ctseg.io.dicom.fast_header import PER_FILE
    from ctseg.io.dicom.slices import FAST_SLICE_KEYWORDS

    assert set(FAST_SLICE_KEYWORDS) <= PER_FILE <= set(DECODED)


def test_series_level_values_are_converted_on_first_use(tmp_path: Path) -> None:
    path = _one_slice(tmp_path / "s", extra={"ConvolutionKernel": "B30f", "SliceThickness": "1.5"})
    header = _parsed(path)
    assert "ConvolutionKernel" in header and "ConvolutionKernel" not in header._values
    assert header.ConvolutionKernel == "B30f" and header.get("SliceThickness") == 1.5
    assert header._values["ConvolutionKernel"] == "B30f" and "ConvolutionKernel" not in header._lazy
    assert_same_as_pydicom(path, header)


def test_a_series_level_value_this_parser_cannot_convert_is_pydicoms(tmp_path: Path) -> None:
    """A DS that is not a number, kept raw while parsing: on use it is what pydicom makes of it (no exception)."""
    path = _one_slice(tmp_path / "s", extra={"SliceThickness": "1.5"})
    raw = path.read_bytes()
    assert raw.count(b"1.5 ") == 1
    path.write_bytes(raw.replace(b"1.5 ", b"abc "))
    header = _parsed(path)
    reference, _ = _reference(path)
    assert _norm(header.get("SliceThickness")) == _norm(reference.get("SliceThickness"))
    assert _norm(header.SliceThickness) == _norm(reference.SliceThickness)
