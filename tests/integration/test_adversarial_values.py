"""Adversarial header and file values: each one a specific error with a reason code, never a traceback.

DICOM series are written with pydicom (:mod:`tests.synthetic`), then one value is injected. Each DICOM case runs
on both header paths: the fast parser (Part-10 files) and the pydicom fallback (the same files without the
128-byte preamble and magic, which the fast parser leaves to pydicom).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from ctseg.cli.main import cli
from ctseg.errors import DicomSeriesError, GeometryError, ImageFormatError, SeriesReason
from ctseg.io.dicom import inspect_dicom, read_dicom_series
from ctseg.io.dicom.fast_header import parse_header
from ctseg.io.images import read_image
from tests.synthetic import write_oracle_series

N_SLICES = 4
STEP_MM = 2.5


def _series(folder: Path) -> list[Path]:
    return write_oracle_series(folder, [(0.0, 0.0, STEP_MM * k) for k in range(N_SLICES)], rows=8, cols=8)


def _set(index: int | None, **values: Any) -> Callable[[list[Path]], None]:
    """Set tags on one file (``index``) or on all (None)."""

    def apply(paths: list[Path]) -> None:
        for path in paths if index is None else [paths[index]]:
            ds = pydicom.dcmread(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom warns when told to write NaN or inf in a DS: the point here
                for key, value in values.items():
                    setattr(ds, key, value)
            ds.save_as(path)

    return apply


def _raw(**values: str) -> Callable[[list[Path]], None]:
    """Store text as is in numeric tags of every file (pydicom refuses to set such values, but reads them)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement

    def apply(paths: list[Path]) -> None:
        for path in paths:
            ds = pydicom.dcmread(path)
            for key, text in values.items():
                tag = tag_for_keyword(key)
                assert tag is not None
                raw = text.encode() + (b" " if len(text) % 2 else b"")
                ds[tag] = RawDataElement(pydicom.tag.Tag(tag), dictionary_VR(tag), len(raw), raw, 0, False, True)
            ds.save_as(path)

    return apply


def _pixels(index: int | None, data: bytes, **values: Any) -> Callable[[list[Path]], None]:
    """Replace PixelData (and set tags) on one file or all."""

    def apply(paths: list[Path]) -> None:
        for path in paths if index is None else [paths[index]]:
            ds = pydicom.dcmread(path)
            for key, value in values.items():
                setattr(ds, key, value)
            ds.PixelData = data
            ds.save_as(path)

    return apply


def _implicit_vr(paths: list[Path]) -> None:
    """Rewrite as implicit VR little endian (the fast parser's other syntax)."""
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # re-encoding converts the malformed values the case injected
            ds.save_as(path, implicit_vr=True, little_endian=True)


def _strip_preamble(paths: list[Path]) -> None:
    """Drop the preamble and DICM magic: the fast parser declines such files, pydicom reads them (force)."""
    for path in paths:
        raw = path.read_bytes()
        assert raw[128:132] == b"DICM"
        path.write_bytes(raw[132:])
        assert parse_header(path) is None


# id -> (injection, reason, message pattern)
DICOM_CASES: dict[str, tuple[Callable[[list[Path]], None], SeriesReason, str]] = {
    "ipp-nan-all": (
        _set(None, ImagePositionPatient=["nan", "0", "0"]),
        SeriesReason.INVALID_TAG_VALUE,
        r"ImagePositionPatient of slice0000 is \[nan, 0.0, 0.0\] \(and 3 other",
    ),
    "ipp-nan-one-slice": (
        _set(2, ImagePositionPatient=["0", "0", "nan"]),
        SeriesReason.INVALID_TAG_VALUE,
        r"ImagePositionPatient of slice0002 is \[0.0, 0.0, nan\]; expected 3 finite numbers",
    ),
    "ipp-inf": (
        _set(1, ImagePositionPatient=["inf", "0", "2.5"]),
        SeriesReason.INVALID_TAG_VALUE,
        r"ImagePositionPatient of slice0001 is \[inf",
    ),
    "ipp-huge": (
        _set(3, ImagePositionPatient=["0", "0", "1e300"]),
        SeriesReason.INVALID_TAG_VALUE,
        r"ImagePositionPatient of slice0003 .* within \+-1e\+06 mm",
    ),
    "iop-zero": (
        _set(None, ImageOrientationPatient=["0"] * 6),
        SeriesReason.INVALID_TAG_VALUE,
        r"ImageOrientationPatient of slice0000 is \[0.0, 0.0, 0.0, 0.0, 0.0, 0.0\].*perpendicular unit cosines",
    ),
    "iop-parallel": (
        _set(None, ImageOrientationPatient=["1", "0", "0", "1", "0", "0"]),
        SeriesReason.INVALID_TAG_VALUE,
        r"ImageOrientationPatient of slice0000 is \[1.0, 0.0, 0.0, 1.0, 0.0, 0.0\]",
    ),
    "iop-nan": (
        _set(None, ImageOrientationPatient=["1", "0", "0", "0", "nan", "0"]),
        SeriesReason.INVALID_TAG_VALUE,
        r"ImageOrientationPatient of slice0000",
    ),
    "iop-not-unit": (
        _set(None, ImageOrientationPatient=["2", "0", "0", "0", "1", "0"]),
        SeriesReason.INVALID_TAG_VALUE,
        r"ImageOrientationPatient .* unit cosines",
    ),
    "slope-zero": (
        _set(None, RescaleSlope="0"),
        SeriesReason.INVALID_TAG_VALUE,
        r"RescaleSlope of slice0000 is 0.0 \(and 3 other slice\(s\)\); expected a finite, non-zero number",
    ),
    "slope-nan-one-slice": (
        _set(1, RescaleSlope="NaN"),
        SeriesReason.INVALID_TAG_VALUE,
        r"RescaleSlope of slice0001 is nan",
    ),
    "intercept-inf": (
        _set(0, RescaleIntercept="-inf"),
        SeriesReason.INVALID_TAG_VALUE,
        r"RescaleIntercept of slice0000 is -inf; expected a finite number",
    ),
    "rows-zero": (
        _set(None, Rows=0),
        SeriesReason.INVALID_TAG_VALUE,
        r"Rows, Columns of slice0000 is \[0, 8\]",
    ),
    "pixel-spacing-zero": (
        _set(None, PixelSpacing=["0", "0.7"]),
        SeriesReason.INVALID_TAG_VALUE,
        r"PixelSpacing of slice0000 is \[0.0, 0.7\].*0.0001..1000 mm",
    ),
    "pixel-spacing-negative": (
        _set(None, PixelSpacing=["-0.7", "-0.7"]),
        SeriesReason.INVALID_TAG_VALUE,
        r"PixelSpacing of slice0000 is \[-0.7, -0.7\]",
    ),
    "pixel-spacing-nan": (
        _set(None, PixelSpacing=["nan", "0.7"]),
        SeriesReason.INVALID_TAG_VALUE,
        r"PixelSpacing of slice0000 is \[nan, 0.7\]",
    ),
    "huge-header-tiny-pixels": (
        _pixels(None, b"\0" * 128, Rows=65535, Columns=65535),
        SeriesReason.PIXEL_DATA_LENGTH,
        r"header describes 65535x65535 pixels x 1 frame\(s\) x 16 bits = 8,589,672,450 bytes of pixel data, "
        r"the file holds 128",
    ),
    "rows-larger-than-data": (
        _set(None, Rows=16),
        SeriesReason.PIXEL_DATA_LENGTH,
        r"16x8 pixels .* = 256 bytes of pixel data, the file holds 128",
    ),
    "frames-more-than-data": (
        _set(None, NumberOfFrames=3),
        SeriesReason.PIXEL_DATA_LENGTH,
        r"8x8 pixels x 3 frame\(s\) x 16 bits = 384 bytes of pixel data, the file holds 128",
    ),
    "bits-allocated-odd": (
        _set(None, BitsAllocated=12, BitsStored=12, HighBit=11),
        SeriesReason.INVALID_TAG_VALUE,
        r"BitsAllocated of slice0000 is 12; expected one of \(8, 16, 32\)",
    ),
    "bits-stored-over-allocated": (
        _set(None, BitsStored=20),
        SeriesReason.INVALID_TAG_VALUE,
        r"BitsStored of slice0000 is 20; expected 1..16",
    ),
    "pixel-representation-2": (
        _set(None, PixelRepresentation=2),
        SeriesReason.INVALID_TAG_VALUE,
        r"PixelRepresentation of slice0000 is 2; expected 0 or 1",
    ),
    "ipp-text": (
        _raw(ImagePositionPatient="0\\abc\\0"),
        SeriesReason.INVALID_TAG_VALUE,
        r"ImagePositionPatient of slice0000 is \[nan, nan, nan\]",
    ),
    "pixel-spacing-text-blank-uids": (
        lambda paths: (_raw(PixelSpacing="x\\y")(paths), _set(None, SeriesInstanceUID="")(paths)),
        SeriesReason.INVALID_TAG_VALUE,
        r"PixelSpacing of slice0000 is \[nan, nan\]",
    ),
    "frames-text": (
        _raw(SeriesNumber="abc", NumberOfFrames="x1"),
        SeriesReason.INVALID_TAG_VALUE,
        r"NumberOfFrames of slice0000 is x1; expected an integer >= 1",
    ),
    "slope-text": (
        _raw(RescaleSlope="abc"),
        SeriesReason.INVALID_TAG_VALUE,
        r"RescaleSlope of slice0000 is nan \(and 3 other slice\(s\)\)",
    ),
    "frames-zero": (
        _set(None, NumberOfFrames=0),
        SeriesReason.INVALID_TAG_VALUE,
        r"NumberOfFrames of slice0000 is 0; expected an integer >= 1",
    ),
    "samples-per-pixel-zero": (
        _set(None, SamplesPerPixel=0),
        SeriesReason.INVALID_TAG_VALUE,
        r"SamplesPerPixel of slice0000 is 0; expected an integer >= 1",
    ),
    "truncated-last-file": (
        _pixels(3, b"\0" * 64),
        SeriesReason.UNREADABLE_FILE,
        r"slice0003",
    ),
}


@pytest.mark.parametrize("header_path", ["fast", "fast-implicit", "pydicom"])
@pytest.mark.parametrize("case", list(DICOM_CASES))
def test_dicom_bad_value_is_refused_with_reason(tmp_path: Path, case: str, header_path: str) -> None:
    inject, reason, pattern = DICOM_CASES[case]
    paths = _series(tmp_path / "s")
    inject(paths)
    if header_path == "fast-implicit":
        _implicit_vr(paths)
    if header_path == "pydicom":
        _strip_preamble(paths)
    with pytest.raises(DicomSeriesError, match=pattern) as info:
        read_dicom_series(tmp_path / "s")
    assert info.value.reason is reason
    found = inspect_dicom(tmp_path / "s")
    if reason is not SeriesReason.UNREADABLE_FILE:  # damaged pixel data shows only when the pixels are read
        # inspect and read agree: the series is not usable, for the same reason.
        assert [p.usable for p in found.plans] == [False]
        assert found.plans[0].error is not None and found.plans[0].error.reason is reason


@pytest.mark.parametrize("header_path", ["fast", "pydicom"])
@pytest.mark.parametrize(
    "tags",
    [
        {"SliceThickness": "-5"},
        {"SliceThickness": "nan"},
        {"SpacingBetweenSlices": "0"},
        {"ImageOrientationPatient": ["1", "0", "0", "0", "0.99999", "0.00001"]},  # 5-digit cosines, as exported
    ],
    ids=["thickness-negative", "thickness-nan", "spacing-between-zero", "cosines-5-digits"],
)
def test_dicom_values_not_used_or_within_tolerance_still_read(tmp_path: Path, tags: dict, header_path: str) -> None:
    """Tags the stack geometry does not depend on (it comes from positions) are ignored, whatever they hold."""
    paths = _series(tmp_path / "s")
    _set(None, **tags)(paths)
    if header_path == "pydicom":
        _strip_preamble(paths)
    volume = read_dicom_series(tmp_path / "s")
    assert volume.shape == (N_SLICES, 8, 8) and volume.geometry.spacing_mm[0] == pytest.approx(STEP_MM)
    assert np.isfinite(np.asarray(volume.array, np.float64)).all()


def test_single_slice_with_nonsense_thickness_gets_one_mm(tmp_path: Path) -> None:
    paths = write_oracle_series(tmp_path / "s", [(0.0, 0.0, 0.0)], rows=8, cols=8)
    _set(None, SliceThickness="nan")(paths)
    from ctseg.io.dicom import ReadOptions

    volume = read_dicom_series(tmp_path / "s", options=ReadOptions(min_slices=1))
    assert volume.geometry.spacing_mm[0] == 1.0


def _read_without_permission_override(folder: Path) -> tuple[str, str, str]:
    """``read_dicom_series(folder)`` in a forked child whose effective capabilities are dropped.

    As root (as in a container) permission bits do not apply; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    they do, so a folder with mode 000 is unreadable as it is for any user. Returns the error's type name, message
    and reason (``("", "", "")`` when it read).
    """
    import ctypes
    import multiprocessing

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    def child(conn: Any) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
        if libc.capget(ctypes.byref(header), data) != 0:
            conn.send(("capget failed", "", ""))
            return
        data[0].effective = data[1].effective = 0
        if libc.capset(ctypes.byref(header), data) != 0:
            conn.send(("capset failed", "", ""))
            return
        try:
            read_dicom_series(folder)
            conn.send(("", "", ""))
        except Exception as exc:
            conn.send((type(exc).__name__, str(exc), str(getattr(exc, "reason", ""))))

    ctx = multiprocessing.get_context("fork")
    parent, child_end = ctx.Pipe()
    proc = ctx.Process(target=child, args=(child_end,))
    proc.start()
    result = parent.recv() if parent.poll(60) else ("no answer", "", "")
    proc.join(10)
    return result


@pytest.mark.skipif(sys.platform != "linux", reason="capabilities and fork are Linux")
def test_unreadable_subfolder_is_named(tmp_path: Path) -> None:
    _series(tmp_path / "study" / "sub")
    (tmp_path / "study" / "sub").chmod(0)
    try:
        kind, message, reason = _read_without_permission_override(tmp_path / "study")
    finally:
        (tmp_path / "study" / "sub").chmod(0o755)
    assert kind == "DicomSeriesError" and reason == SeriesReason.UNREADABLE_PATH.value, (kind, message)
    expected = r"1 file\(s\)/folder\(s\) could not be read, e.g. sub: folder cannot be listed \(PermissionError"
    assert re.search(expected, message), message


@pytest.mark.skipif(sys.platform != "linux", reason="capabilities and fork are Linux")
def test_unreadable_file_beside_a_good_series_is_listed_not_fatal(tmp_path: Path) -> None:
    paths = _series(tmp_path / "study")
    extra = tmp_path / "study" / "locked"
    extra.write_bytes(paths[0].read_bytes())
    extra.chmod(0)
    kind, message, _ = _read_without_permission_override(tmp_path / "study")
    assert (kind, message) == ("", "")


def test_unopenable_file_is_named(tmp_path: Path) -> None:
    """A file that cannot be opened (here a dangling link; a permission error reads alike) is named with its error."""
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "IM0001").symlink_to(tmp_path / "gone")
    with pytest.raises(
        DicomSeriesError, match=r"could not be read, e.g. IM0001: file cannot be opened \(FileNotFoundError"
    ) as info:
        read_dicom_series(tmp_path / "study")
    assert info.value.reason is SeriesReason.UNREADABLE_PATH


# -- ctseg train: the dataset checks run before every training, not only with --check ---------------------------
def _phantoms(root: Path) -> Path:
    from ctseg.phantom import write_phantom_dataset

    return write_phantom_dataset(root, 2, shape=(16, 24, 24))


def _rewrite_label(dataset: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    from ctseg.io.images import read_image, write_image

    path = dataset / "labelsTr" / "phantom_001.nii.gz"
    label = read_image(path)
    write_image(label.with_array(change(np.asarray(label.array))), path)


def _rewrite_image(dataset: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    from ctseg.io.images import read_image, write_image

    path = dataset / "imagesTr" / "phantom_000_0000.nii.gz"
    image = read_image(path)
    write_image(image.with_array(change(np.asarray(image.array))), path)


def _regrid_label(dataset: Path) -> None:
    from ctseg.io.images import write_image
    from ctseg.volume import Geometry, Volume

    write_image(
        Volume(np.ones((8, 12, 12), np.uint8), Geometry((8, 12, 12), (2.0, 2.0, 2.0))),
        dataset / "labelsTr" / "phantom_000.nii.gz",
    )


def _meta(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(dataset: Path) -> None:
        meta = json.loads((dataset / "dataset.json").read_text())
        change(meta)
        (dataset / "dataset.json").write_text(json.dumps(meta))

    return apply


def _with_value(arr: np.ndarray, value: float, dtype: type) -> np.ndarray:
    out = arr.astype(dtype)
    out[0, 0, 0] = value
    return out


TRAIN_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "label-undeclared": (
        lambda d: _rewrite_label(d, lambda a: _with_value(a, 9, np.uint8)),
        r"case phantom_001: label values \[9\] are not declared in dataset.json labels",
    ),
    "label-negative": (
        lambda d: _rewrite_label(d, lambda a: _with_value(a, -3, np.int16)),
        r"case phantom_001: label values \[-3, 0, .*outside 0..65535",
    ),
    "label-fractional": (
        lambda d: _rewrite_label(d, lambda a: _with_value(a, 1.5, np.float32)),
        r"case phantom_001: label values \[1.5\] are not integers",
    ),
    "label-nan": (
        lambda d: _rewrite_label(d, lambda a: _with_value(a, np.nan, np.float32)),
        r"case phantom_001: label values \[nan\] are not integers",
    ),
    "image-nan": (
        lambda d: _rewrite_image(d, lambda a: _with_value(a, np.nan, np.float32)),
        r"case phantom_000: image has NaN/Inf voxels",
    ),
    "image-inf": (
        lambda d: _rewrite_image(d, lambda a: _with_value(a, np.inf, np.float32)),
        r"case phantom_000: image has NaN/Inf voxels",
    ),
    "label-grid-differs": (_regrid_label, r"case phantom_000: label grid \(8, 12, 12\) @ \[2.0, 2.0, 2.0\] mm differs"),
    "labels-list": (
        _meta(lambda m: m.update(labels=["background", "liver"])),
        r"'labels' is list; expected an object of name -> value",
    ),
    "labels-empty": (_meta(lambda m: m.update(labels={})), r"'labels' is dict \(empty\); expected an object"),
    "label-value-fractional": (
        _meta(lambda m: m["labels"].update(liver=1.5)),
        r"label 'liver' has value 1.5; expected an integer 0..65535",
    ),
    "label-value-negative": (
        _meta(lambda m: m["labels"].update(liver=-1)),
        r"label 'liver' has value -1; expected an integer",
    ),
    "label-value-region-list": (
        _meta(lambda m: m["labels"].update(liver=[1, 2])),
        r"label 'liver' has value \[1, 2\]; expected an integer 0..65535 \(region lists are not supported\)",
    ),
    "label-value-bool": (_meta(lambda m: m["labels"].update(liver=True)), r"label 'liver' has value True"),
    "label-value-huge": (_meta(lambda m: m["labels"].update(liver=10**12)), r"label 'liver' has value 1000000000000"),
    "label-value-repeated": (
        _meta(lambda m: m["labels"].update(liver=2)),
        r"label value\(s\) \[2\] given to several names",
    ),
    "channel-names-number": (_meta(lambda m: m.update(channel_names=3)), r"'channel_names' is 3; expected an object"),
}


@pytest.fixture(scope="module")
def clean_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _phantoms(tmp_path_factory.mktemp("phantoms") / "ds")


def _no_traceback(result: Any) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_refuses_bad_dataset_without_check(clean_phantoms: Path, tmp_path: Path, case: str) -> None:
    inject, pattern = TRAIN_CASES[case]
    dataset = tmp_path / "ds"
    shutil.copytree(clean_phantoms, dataset)
    inject(dataset)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(dataset), "--out", str(run), "--epochs", "1"])
    _no_traceback(result)
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert re.search(pattern, result.output), result.output
    assert not (run / "checkpoint.pt").exists() and not (tmp_path / "models").exists()
    # --check reports the same problem (and exits 1).
    checked = CliRunner().invoke(cli, ["train", str(dataset), "--out", str(run), "--check"])
    _no_traceback(checked)
    assert checked.exit_code == 1 and re.search(pattern, checked.output), checked.output


# -- NIfTI / NRRD / MHA: the header is checked before the voxel data is read --------------------------------------
def _nifti(path: Path, *, data: np.ndarray | None = None, **fields: Any) -> Path:
    """A small NIfTI whose header fields are then overwritten byte-for-byte (nibabel would recompute them)."""
    import gzip
    import io

    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16) if data is None else data, np.eye(4)), str(path))
    gz = path.name.endswith(".gz")
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    for key, value in fields.items():
        if key == "dim":
            header.set_data_shape(value)
        else:
            header[key] = value
    patched = header.binaryblock + raw[len(header.binaryblock) :]
    path.write_bytes(gzip.compress(patched) if gz else patched)
    return path


def _itk(path: Path, spacing_zyx: tuple[float, float, float]) -> Path:
    from ctseg.io.images import write_image
    from ctseg.volume import Geometry, Volume

    write_image(Volume(np.zeros((4, 4, 4), np.int16), Geometry((4, 4, 4), spacing_zyx)), path)
    return path


IMAGE_CASES: dict[str, tuple[Callable[[Path], Path], type[Exception], str]] = {
    "nii-30000-cubed": (
        lambda d: _nifti(d / "big.nii", dim=(30000, 30000, 30000)),
        ImageFormatError,
        r"cannot read big.nii: its header describes 30000x30000x30000 voxels x 2 bytes = 5.03e\+04 GiB, the file "
        r"holds 128 bytes of voxel data",
    ),
    "nii-gz-30000-cubed": (
        lambda d: _nifti(d / "big.nii.gz", dim=(30000, 30000, 30000)),
        ImageFormatError,
        r"cannot read big.nii.gz: its header describes 30000x30000x30000 voxels .* more than this machine's .* GiB "
        r"of memory",
    ),
    "nii-gz-truncated": (
        lambda d: _nifti(d / "trunc.nii.gz", dim=(64, 64, 64)),
        ImageFormatError,
        r"cannot read NIfTI file trunc.nii.gz: OSError: Expected 524288 bytes, got 128 bytes",
    ),
    "nii-empty-axis": (
        lambda d: _nifti(d / "empty.nii.gz", dim=(4, 0, 4)),
        ImageFormatError,
        r"empty.nii.gz has shape \(4, 0, 4\); expected at least one voxel on every axis",
    ),
    "nii-spacing-500mm": (
        lambda d: _nifti(d / "s.nii.gz", srow_z=[0, 0, 500, 0], qform_code=0),
        ImageFormatError,
        r"s.nii.gz has voxel spacing \(z, y, x\) \[500.0, 1.0, 1.0\] mm; expected 0.02..100 mm",
    ),
    "nii-spacing-0.01mm": (
        lambda d: _nifti(d / "s.nii.gz", srow_x=[0.01, 0, 0, 0], srow_y=[0, 0.01, 0, 0], qform_code=0),
        ImageFormatError,
        r"voxel spacing \(z, y, x\) \[1.0, 0.01, 0.01\] mm; expected 0.02..100 mm .*metres or micrometres",
    ),
    "nii-affine-nan": (
        lambda d: _nifti(d / "n.nii.gz", srow_x=[1, 0, 0, np.nan], qform_code=0),
        GeometryError,
        r"n.nii.gz: affine \(index -> RAS mm\) holds NaN/Inf",
    ),
    "nii-affine-inf": (
        lambda d: _nifti(d / "n.nii.gz", srow_y=[0, np.inf, 0, 0], qform_code=0),
        GeometryError,
        r"affine \(index -> RAS mm\) holds NaN/Inf",
    ),
    "nii-affine-zero-axis": (
        lambda d: _nifti(d / "z.nii.gz", srow_x=[0, 0, 0, 0], qform_code=0),
        GeometryError,
        r"affine has a zero-length axis",
    ),
    "mha-spacing-500mm": (
        lambda d: _itk(d / "s.mha", (500.0, 1.0, 1.0)),
        ImageFormatError,
        r"s.mha has voxel spacing \(z, y, x\) \[500.0, 1.0, 1.0\] mm",
    ),
    "nrrd-spacing-0.001mm": (
        lambda d: _itk(d / "s.nrrd", (1.0, 0.001, 0.001)),
        ImageFormatError,
        r"s.nrrd has voxel spacing \(z, y, x\) \[1.0, 0.001, 0.001\] mm",
    ),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_image_file_bad_header_is_refused(tmp_path: Path, case: str) -> None:
    make, error, pattern = IMAGE_CASES[case]
    path = make(tmp_path)
    with pytest.raises(error, match=pattern):
        read_image(path)
    # The CLI says the same in one line, exit 1 (evaluate reads it as a reference label map).
    (tmp_path / "pred").mkdir()
    shutil.copy(path, tmp_path / "pred" / path.name)
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "pred"), str(path.parent / path.name)])
    _no_traceback(result)
    assert result.exit_code == 1 and re.search(pattern, result.output), result.output


# -- evaluate: a bounded score gets a bounded interval ------------------------------------------------------------
def test_dice_interval_stays_in_0_1_and_says_how_it_was_made(tmp_path: Path) -> None:
    """Dice 0, 0.5 and 1 over three cases: a t-interval reaches below 0 and above 1; the bootstrap one cannot."""
    from ctseg.io.images import write_image
    from ctseg.volume import Geometry, Volume

    geometry = Geometry((8, 8, 8), (1.0, 1.0, 1.0))
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:6, 2:6, 2:6] = 1
    half = np.zeros_like(ref)
    half[2:6, 2:6, 4:8] = 1  # 32 of 64 voxels shared with a 64-voxel cube: Dice 0.5
    for name, pred in (("a", np.zeros_like(ref)), ("b", half), ("c", ref)):
        write_image(Volume(ref, geometry), tmp_path / "ref" / f"{name}.nii.gz")
        write_image(Volume(pred, geometry), tmp_path / "pred" / f"{name}.nii.gz")
    out = tmp_path / "out" / "metrics.csv"
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "--out", str(out)])
    _no_traceback(result)
    assert result.exit_code == 0, result.output
    assert "mean [95% CI: bootstrap percentile, 2000 resamples, seed 0]" in result.output
    with open(tmp_path / "out" / "metrics_summary.csv", newline="") as fp:
        (row,) = list(csv.DictReader(fp))
    low, high = float(row["dice_ci_low"]), float(row["dice_ci_high"])
    assert float(row["dice_mean"]) == pytest.approx(0.5)
    assert 0.0 <= low < 0.5 < high <= 1.0 and 0.0 <= float(row["nsd_ci_low"]) <= float(row["nsd_ci_high"]) <= 1.0
    assert row["ci_method"] == "95% bootstrap percentile, 2000 resamples, seed 0"
    # Seeded: a second run gives the same interval.
    again = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref")])
    assert f"[{low:.3f}, {high:.3f}]" in again.output


@pytest.mark.parametrize(
    "values",
    [[0.0, 1.0], [0.97, 0.98, 0.99, 1.0], [0.0] * 5 + [1.0], [1.0, 1.0, 1.0], list(np.linspace(0, 1, 500))],
    ids=["two-extremes", "near-one", "mostly-zero", "constant", "many"],
)
def test_bootstrap_interval_within_value_range(values: list[float]) -> None:
    from ctseg.evaluate.summary import mean_ci

    mean, (low, high) = mean_ci(values)
    assert min(values) <= low <= mean <= high <= max(values)
    assert mean_ci(values) == (mean, (low, high))  # seeded


# -- the same DICOM cases through the CLI: one line, exit 1, no traceback, nothing written ------------------------
@pytest.mark.parametrize("case", [c for c in DICOM_CASES if c != "truncated-last-file"])
def test_dicom_bad_value_cli_convert_and_inspect(tmp_path: Path, case: str) -> None:
    inject, reason, pattern = DICOM_CASES[case]
    inject(_series(tmp_path / "s"))
    out = tmp_path / "out" / "ct.nii.gz"
    result = CliRunner().invoke(cli, ["convert", str(tmp_path / "s"), str(out)])
    _no_traceback(result)
    assert result.exit_code == 1 and f"[{reason.value}]" in result.output and re.search(pattern, result.output)
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    report = CliRunner().invoke(cli, ["inspect", str(tmp_path / "s"), "--json"])
    _no_traceback(report)
    (series,) = json.loads(report.output)["series"]
    assert series["usable"] is False and f"[{reason.value}]" in json.dumps(series)


@pytest.mark.parametrize(
    "case",
    ["ipp-nan-one-slice", "iop-zero", "slope-nan-one-slice", "huge-header-tiny-pixels", "frames-text", "slope-text"],
)
def test_dicom_bad_value_in_a_real_process_prints_no_warning(tmp_path: Path, case: str) -> None:
    """``python -m ctseg convert``: stderr holds the one error line, no numpy warning, no traceback."""
    inject, reason, _ = DICOM_CASES[case]
    inject(_series(tmp_path / "s"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "ctseg", "convert", str(tmp_path / "s"), str(tmp_path / "ct.nii.gz")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and f"[{reason.value}]" in lines[0], proc.stderr


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("config.infer.overlap", 1.0, r"config.infer.overlap is 1.0; expected a number in \[0.0, 0.95\]"),
        ("config.infer.overlap", -5, r"config.infer.overlap is -5.0; expected a number in \[0.0, 0.95\]"),
        ("config.preprocess.target_spacing_mm", [0.001, 1, 1], r"target_spacing_mm is 0.001; expected a number in"),
        ("config.preprocess.std_hu", 0, r"config.preprocess.std_hu is 0.0; expected a number in \[1e-06"),
        ("patch_size", [0, 16, 16], r"patch_size is 0; expected an integer in \[1, 1024\]"),
        ("patch_size", [-8, 16, 16], r"patch_size is -8; expected an integer in \[1, 1024\]"),
        ("labels", {}, r"labels is \{\}; expected at least one foreground class"),
        ("colors", {"1": [255, 0, 0]}, r"colors is \[1\]; expected one colour per foreground label \[1, 2\]"),
    ],
)
def test_model_json_values_from_the_issue_are_refused(key: str, value: Any, match: str) -> None:
    from ctseg.errors import ModelFileError
    from ctseg.io.model_files import ModelCard
    from tests.unit.io.test_model_files import _with

    with pytest.raises(ModelFileError, match=match):
        ModelCard.from_dict(_with(key, value))


def test_model_json_list_at_top_level_is_refused() -> None:
    from ctseg.errors import ModelFileError
    from ctseg.io.model_files import ModelCard
    from tests.unit.io.test_model_files import _meta

    with pytest.raises(ModelFileError, match=r"expected a JSON object at the top level, got list"):
        ModelCard.from_dict([_meta()])
