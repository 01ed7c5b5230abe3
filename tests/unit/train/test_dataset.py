from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ctseg.errors import ConfigError
from ctseg.io import read_volume
from ctseg.io.images import write_image
from ctseg.phantom import write_phantom_dataset
from ctseg.train.dataset import DatasetError, check_dataset, load_dataset, parse_label_subset
from ctseg.volume import Geometry, Volume


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_phantom_dataset(tmp_path / "ds", 2, shape=(16, 24, 24))


def test_load_and_check_clean_dataset(dataset: Path) -> None:
    ds = load_dataset(dataset)
    assert [c.name for c in ds.cases] == ["phantom_000", "phantom_001"]
    assert ds.labels[1] == "liver" and ds.num_classes == 7
    assert check_dataset(ds) == []


def test_label_subset_remaps_values(dataset: Path) -> None:
    ds = load_dataset(dataset, label_subset=parse_label_subset("lungs=4, liver=1"))
    assert ds.labels == {1: "lungs", 2: "liver"} and ds.source_values == {1: 4, 2: 1}
    assert ds.remap(np.array([0, 1, 2, 4, 6])).tolist() == [0, 2, 0, 1, 0]
    with pytest.raises(DatasetError, match="--labels heart not in dataset.json labels"):
        load_dataset(dataset, label_subset={"heart": 9})


@pytest.mark.parametrize("text", ["liver", "liver=x", "=3", ""])
def test_bad_label_subset(text: str) -> None:
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_label_subset(text)


def test_check_finds_each_problem(dataset: Path) -> None:
    labels = dataset / "labelsTr"
    # A label on another grid, with a value not in dataset.json.
    write_image(
        Volume(np.full((8, 8, 8), 9, np.uint8), Geometry((8, 8, 8), (1.0, 1.0, 1.0))), labels / "phantom_000.nii.gz"
    )
    # A normalised (not HU) image.
    img = dataset / "imagesTr" / "phantom_001_0000.nii.gz"
    write_image(Volume(np.random.default_rng(0).random((16, 24, 24)).astype(np.float32), Geometry((16, 24, 24))), img)
    problems = check_dataset(load_dataset(dataset))
    text = "\n".join(problems)
    assert "case phantom_000: label grid (8, 8, 8)" in text and "resample the label onto the image" in text
    assert "case phantom_000: label values [9] are not declared" in text
    assert "case phantom_001: HU range 0..1 is not raw CT" in text


def test_layout_errors(tmp_path: Path, dataset: Path) -> None:
    with pytest.raises(DatasetError, match="dataset.json not found"):
        load_dataset(tmp_path)
    (dataset / "imagesTr" / "phantom_001_0000.nii.gz").unlink()
    with pytest.raises(DatasetError, match="case phantom_001: no image"):
        load_dataset(dataset)
    (dataset / "dataset.json").write_text(json.dumps({"labels": {"a": 1}}))
    with pytest.raises(DatasetError, match="expected 'channel_names' and 'labels'"):
        load_dataset(dataset)


def test_require_valid_dataset_refuses_before_training(dataset: Path) -> None:
    from ctseg.train.dataset import require_valid_dataset

    ds = load_dataset(dataset)
    require_valid_dataset(ds)  # a clean dataset passes
    label_path = dataset / "labelsTr" / "phantom_000.nii.gz"
    label = read_volume(label_path)
    write_image(label.with_array(np.where(np.asarray(label.array) == 1, 9, label.array).astype(np.uint8)), label_path)
    with pytest.raises(
        DatasetError,
        match=r"1 problem\(s\) in 2 cases of ds, training not started: case phantom_000: label values \[9\]",
    ):
        require_valid_dataset(load_dataset(dataset))


def test_a_label_subset_allows_the_other_values_of_a_larger_map(dataset: Path) -> None:
    from ctseg.train.dataset import require_valid_dataset

    # Value 9 is in no class of dataset.json: refused when every declared class is trained ...
    label_path = dataset / "labelsTr" / "phantom_000.nii.gz"
    label = read_volume(label_path)
    arr = np.asarray(label.array).copy()
    arr[0, 0, :4] = 9
    write_image(label.with_array(arr), label_path)
    with pytest.raises(DatasetError, match=r"label values \[9\] are not declared"):
        require_valid_dataset(load_dataset(dataset))
    # ... but `--labels` trains a chosen subset of a larger map, where every other value becomes background.
    declared = json.loads((dataset / "dataset.json").read_text())["labels"]
    name, value = next((n, v) for n, v in declared.items() if v != 0)
    ds = load_dataset(dataset, label_subset={name: value})
    require_valid_dataset(ds)
    assert ds.subset and ds.source_values == {1: value}
