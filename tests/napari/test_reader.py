"""Reader and writers, headless (napari layer objects, no viewer): world mm alignment, label maps, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("ctseg_napari")

from ctseg_napari._labels import looks_like_labels, table_from_caret_xml  # noqa: E402
from ctseg_napari._layers import (  # noqa: E402
    LayerSource,
    canonical_axes,
    layer_meta,
    lps_to_world,
    source_volume,
    to_source_array,
    volume_of_layer,
    world_to_lps,
)
from ctseg_napari._reader import get_reader, read  # noqa: E402
from ctseg_napari._sample_data import phantom_sample  # noqa: E402
from ctseg_napari._segment import SegmentationResult, result_layer  # noqa: E402
from ctseg_napari._writer import write_labels_dicom_seg, write_labels_nifti  # noqa: E402
from napari.layers import Image, Labels  # noqa: E402

from ctseg.io.dicom import inspect_dicom, read_dicom  # noqa: E402
from ctseg.io.dicom_seg import read_dicom_seg, write_dicom_seg  # noqa: E402
from ctseg.io.images import read_image, write_image  # noqa: E402
from ctseg.volume import Geometry, Volume  # noqa: E402
from tests.napari.conftest import NAMES, ObliqueCase  # noqa: E402
from tests.synthetic import OBLIQUE, make_volume, oracle_hu  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")


def _layer(layer_tuple: tuple) -> Image | Labels:
    data, kwargs, kind = layer_tuple
    return Image(data, **kwargs) if kind == "image" else Labels(data, **kwargs)


def _all_indices(shape: tuple[int, ...]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).reshape(-1, 3)


def test_dicom_and_mask_layers_agree_in_world_mm(oblique_case: ObliqueCase) -> None:
    (image_tuple,) = read(str(oblique_case.dicom))
    (mask_tuple,) = read(str(oblique_case.mask_path))
    image, mask = _layer(image_tuple), _layer(mask_tuple)
    assert image_tuple[2] == "image" and mask_tuple[2] == "labels"
    img_src, mask_src = image.metadata["ctseg"], mask.metadata["ctseg"]
    # The NIfTI stores the mask in RAS order, the DICOM stack in slice order; both land on the same world grid.
    assert img_src.geometry.is_close(mask_src.geometry, atol_mm=1e-4)
    idx = _all_indices(image.data.shape)
    for layer, source in ((image, img_src), (mask, mask_src)):
        world = np.array([layer.data_to_world(i) for i in idx[::7]])
        np.testing.assert_allclose(world, lps_to_world(source.geometry.index_to_world(idx[::7])), atol=1e-6)
    # The same voxel index is the same world point in both layers...
    for i in idx[::5]:
        np.testing.assert_allclose(image.data_to_world(i), mask.data_to_world(i), atol=1e-4)
    # ...the image's HU there is the oracle's HU at that LPS point (world = LPS mm reversed, S-P-L)...
    world = np.array([image.data_to_world(i) for i in idx])
    hu = np.asarray(image.data)[tuple(idx.T)]
    np.testing.assert_allclose(hu, oracle_hu(world_to_lps(world)), atol=0.13)
    # ...and the mask there is the mask that was written, found back through the source grid.
    src_index = np.round(oblique_case.mask.geometry.world_to_index(world_to_lps(world))).astype(int)
    expected = oblique_case.mask.array[tuple(src_index.T)]
    np.testing.assert_array_equal(np.asarray(mask.data)[tuple(idx.T)], expected)
    assert mask.features["name"].tolist() == ["background", "label 1", "label 2"]


def test_canonical_reorientation_is_exactly_undone() -> None:
    flipped = ((0.0, 0.0, -1.0), (0.0, -1.0, 0.0), (-1.0, 0.0, 0.0))  # x and z reversed, a RAS-like stack
    sagittal = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))
    for direction in (OBLIQUE, flipped, sagittal):
        v = make_volume(shape=(5, 6, 7), spacing=(2.0, 1.0, 0.5), direction=direction)
        canon = v.to_closest_canonical()
        source = LayerSource(canon.geometry, v.geometry)
        np.testing.assert_array_equal(to_source_array(canon.array, source), v.array)
        order, _ = canonical_axes(v.geometry.direction_matrix)
        assert canon.shape == tuple(np.array(v.shape)[order])
        # The layer's rotation is what is left after reorientation: close to identity.
        assert np.abs(np.diag(np.array(canon.geometry.direction_matrix)[::-1])).min() > 0.8


def test_label_map_detection_and_sidecars(tmp_path: Path) -> None:
    g = Geometry((4, 5, 6), (3.0, 1.0, 1.0))
    ct = Volume(np.full(g.shape, -1000, np.int16), g)
    lab = Volume(np.zeros(g.shape, np.uint8), g)
    lab.array[1:3, 1:3, 1:3] = 3
    write_image(ct, tmp_path / "ct.nii.gz")
    write_image(lab, tmp_path / "liver_seg.nrrd")  # name says mask, no sidecar
    write_image(lab, tmp_path / "plain" / "labels_of_case.mha")
    write_image(lab, tmp_path / "withstats" / "mask.nii.gz")
    (tmp_path / "withstats" / "stats.json").write_text(json.dumps({"structures": {"liver": {"label": 3}}}))
    write_image(lab, tmp_path / "unnamed" / "something.nii.gz")  # integer, but nothing says it is a mask
    write_image(lab, tmp_path / "json" / "x.nii.gz")
    (tmp_path / "json" / "x.labels.json").write_text(
        json.dumps({"labels": {"3": "kidney"}, "colors": {"3": [1, 2, 3]}})
    )
    kinds = {p: read(str(tmp_path / p))[0] for p in ["ct.nii.gz", "liver_seg.nrrd", "withstats/mask.nii.gz"]}
    kinds["unnamed"] = read(str(tmp_path / "unnamed" / "something.nii.gz"))[0]
    kinds["json"] = read(str(tmp_path / "json" / "x.nii.gz"))[0]
    assert {k: v[2] for k, v in kinds.items()} == {
        "ct.nii.gz": "image",
        "liver_seg.nrrd": "labels",
        "withstats/mask.nii.gz": "labels",
        "unnamed": "image",
        "json": "labels",
    }
    assert kinds["withstats/mask.nii.gz"][1]["features"]["name"] == ["background", "liver"]
    assert kinds["json"][1]["metadata"]["ctseg"].colors[3] == (1, 2, 3)
    assert kinds["json"][1]["colormap"][3] == pytest.approx((1 / 255, 2 / 255, 3 / 255, 1.0))
    assert not looks_like_labels(ct.array) and looks_like_labels(lab.array.astype(np.float32))


def test_caret_label_table() -> None:
    xml = (
        '<?xml version="1.0"?><CaretExtension><LabelTable><Label Key="1" Red="0.0" Green="1.0" Blue="0.0" '
        'Alpha="1"><![CDATA[spleen]]></Label><Label Key="5" Red="1" Green="0" Blue="0.5" Alpha="1">liver'
        "</Label></LabelTable></CaretExtension>"
    )
    assert table_from_caret_xml(xml) == {1: ("spleen", (0, 255, 0)), 5: ("liver", (255, 0, 128))}
    assert table_from_caret_xml("not xml") == {}


def test_unreadable_paths_give_none(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    (tmp_path / "empty").mkdir()
    (tmp_path / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 20)
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "empty")) is None
    assert get_reader(str(tmp_path / "missing.nii.gz")) is None
    assert get_reader([str(tmp_path / "a.nii"), str(tmp_path / "b.nii")]) is None
    for name in ("broken.nii.gz", "fake.dcm"):
        reader = get_reader(str(tmp_path / name))
        assert reader is not None
        with pytest.warns(UserWarning, match=f"ctseg-napari cannot read {name}"):
            assert reader(str(tmp_path / name)) is None


def test_nifti_writer_round_trip_on_source_grid(oblique_case: ObliqueCase, tmp_path: Path) -> None:
    # A RAS NIfTI mask: the layer array is reoriented, the written file is back on the file's own grid.
    ras = Volume(
        np.ascontiguousarray(oblique_case.mask.array[::-1, :, ::-1]), _flip_geometry(oblique_case.mask.geometry)
    )
    write_image(ras, tmp_path / "ras_mask.nii.gz")
    (tmp_path / "ras_mask.labels.json").write_text(json.dumps({"labels": {str(k): v for k, v in NAMES.items()}}))
    ((data, kwargs, _),) = read(str(tmp_path / "ras_mask.nii.gz"))
    layer = Labels(data, **kwargs)
    layer.data[0, 0, 0] = 2  # an edit
    written = write_labels_nifti(str(tmp_path / "out" / "edited.nii.gz"), layer.data, layer_meta(layer))
    assert [Path(p).name for p in written] == ["edited.nii.gz", "edited.labels.json"]
    back = read_image(tmp_path / "out" / "edited.nii.gz")
    original = read_image(tmp_path / "ras_mask.nii.gz")
    assert back.geometry.is_close(original.geometry, atol_mm=1e-5)
    expected = to_source_array(layer.data, layer.metadata["ctseg"])
    np.testing.assert_array_equal(back.array, expected)
    assert (back.array != original.array).sum() <= 1  # only the edited voxel changed...
    corner = layer.metadata["ctseg"].geometry.index_to_world([[0, 0, 0]])
    assert back.array[tuple(np.round(back.geometry.world_to_index(corner)[0]).astype(int))] == 2  # ...where it was
    ((again, kw2, kind),) = read(str(tmp_path / "out" / "edited.nii.gz"))
    assert kind == "labels" and kw2["features"]["name"] == ["background", "dense", "core"]
    np.testing.assert_array_equal(again, layer.data)


def _flip_geometry(g: Geometry) -> Geometry:
    """The same voxel centres indexed with axes 0 and 2 reversed."""
    d = g.direction_matrix.copy()
    origin = g.index_to_world([[g.shape[0] - 1, 0, g.shape[2] - 1]])[0]
    d[:, 0], d[:, 2] = -d[:, 0], -d[:, 2]
    return Geometry(g.shape, g.spacing_mm, tuple(origin), tuple(map(tuple, d)))


def test_dicom_seg_read_and_write(oblique_case: ObliqueCase, tmp_path: Path) -> None:
    plan = inspect_dicom(oblique_case.dicom).chosen
    seg = write_dicom_seg(oblique_case.mask, plan, oblique_case.dicom / "seg.dcm", names=NAMES, colors={1: (0, 255, 0)})
    # Opening the folder gives the CT and the SEG found in it; opening the SEG alone finds its series beside it.
    folder_layers = read(str(oblique_case.dicom))
    assert [t[2] for t in folder_layers] == ["image", "labels"]
    ((alone, kwargs, kind),) = read(str(seg))
    assert kind == "labels"
    np.testing.assert_array_equal(alone, folder_layers[1][0])
    source = kwargs["metadata"]["ctseg"]
    assert source.dicom_dir == str(oblique_case.dicom) and source.names == NAMES
    assert source.colors[1] == pytest.approx((0, 255, 0), abs=2)  # via CIELab
    np.testing.assert_array_equal(source_volume(alone, source).array, oblique_case.mask.array)
    layer = Labels(alone, **kwargs)
    out = write_labels_dicom_seg(str(tmp_path / "again.dcm"), layer.data, layer_meta(layer))
    back, names = read_dicom_seg(Path(out[0]), oblique_case.ct.geometry)
    np.testing.assert_array_equal(back.array, oblique_case.mask.array)
    assert names == NAMES


def test_dicom_seg_writer_uses_the_series_kept_from_reading(
    oblique_case: ObliqueCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mask segmented on the CT layer read from DICOM: its source keeps the checked series, so saving a SEG scans
    # no folder.
    ((image, image_kwargs, _),) = read(str(oblique_case.dicom))
    image_source = image_kwargs["metadata"]["ctseg"]
    assert image_source.dicom_series is not None and image_source.dicom_series.series_uid == image_source.series_uid
    canonical = oblique_case.mask.to_closest_canonical(copy=True)
    assert canonical.geometry.is_close(image_source.geometry, atol_mm=1e-6)
    labels = _layer(result_layer(SegmentationResult(canonical, NAMES, {1: (0, 255, 0)}), image_source, "mask"))

    uids = {i.sop_instance_uid for i in read_dicom(oblique_case.dicom).instances}

    def no_scan(root: Path) -> None:
        raise AssertionError(f"the writer scanned {root}")

    monkeypatch.setattr("ctseg.io.dicom.read.discover", no_scan)
    out = write_labels_dicom_seg(str(tmp_path / "kept.dcm"), labels.data, layer_meta(labels))
    back, _ = read_dicom_seg(Path(out[0]), oblique_case.ct.geometry)
    np.testing.assert_array_equal(back.array, oblique_case.mask.array)
    (series,) = pydicom.dcmread(out[0]).ReferencedSeriesSequence
    assert {r.ReferencedSOPInstanceUID for r in series.ReferencedInstanceSequence} == uids


def test_dicom_seg_writer_needs_a_dicom_source(oblique_case: ObliqueCase, tmp_path: Path) -> None:
    ((data, kwargs, _),) = read(str(oblique_case.mask_path))
    with pytest.raises(ValueError, match="no DICOM source series"):
        write_labels_dicom_seg(str(tmp_path / "x.dcm"), data, kwargs)


def test_layer_without_ctseg_metadata_uses_its_transform() -> None:
    layer = Labels(np.zeros((3, 4, 5), np.uint8), scale=(2.0, 1.0, 0.5), translate=(10.0, 20.0, 30.0))
    volume, source = volume_of_layer(layer.data, layer_meta(layer))
    np.testing.assert_allclose(
        lps_to_world(volume.geometry.index_to_world([[1, 2, 3]]))[0], layer.data_to_world((1, 2, 3))
    )
    assert source.geometry == source.source_geometry


def test_sample_data_is_aligned() -> None:
    (ct, ct_kw, ct_kind), (lab, lab_kw, lab_kind) = phantom_sample()
    assert (ct_kind, lab_kind) == ("image", "labels")
    assert ct_kw["metadata"]["ctseg"].geometry == lab_kw["metadata"]["ctseg"].geometry
    assert lab_kw["features"]["name"][1:] == ["liver", "spleen", "kidneys", "lungs", "aorta", "spine"]
    liver = lab == 1
    assert 80 < float(np.asarray(ct)[liver].mean()) < 140  # phantom liver HU 110
