"""model.json: one schema (ModelCard), read and written in ctseg.io.model_files, every value range-checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ctseg.config import InferConfig, ModelConfig, PreprocessConfig, to_dict
from ctseg.errors import CheckpointError, ModelFileError
from ctseg.io.model_files import (
    ModelCard,
    TrainingSummary,
    load_model_files,
    read_model_card,
    save_model_files,
)
from ctseg.model import build_model

MODEL = ModelConfig(channels=(4, 8), strides=((2, 2, 2),))


def _meta() -> dict[str, Any]:
    return {
        "config": {"model": to_dict(MODEL), "preprocess": to_dict(PreprocessConfig()), "infer": to_dict(InferConfig())},
        "labels": {"0": "background", "1": "liver", "2": "spleen"},
        "colors": {"1": [255, 0, 0], "2": [0, 0, 255]},
        "patch_size": [8, 16, 16],
        "in_channels": 1,
    }


def _with(path: str, value: Any) -> dict[str, Any]:
    """``_meta()`` with the value at a dotted path replaced (``None`` value: key removed)."""
    meta = _meta()
    *parents, last = path.split(".")
    node = meta
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return meta


def test_card_round_trip_through_a_model_folder(tmp_path: Path) -> None:
    card = ModelCard(
        model=MODEL,
        preprocess=PreprocessConfig(target_spacing_mm=(2.0, 1.0, 1.0)),
        labels={0: "background", 1: "liver"},
        patch_size=(8, 16, 16),
        infer=InferConfig(overlap=0.25),
        colors={1: (10, 20, 30)},
        source_values={1: 6},
        fingerprint={"num_classes": 2},
        training=TrainingSummary(3, 30, {"liver": 0.5}),
        ctseg_version="0.1.0",
        torch_version=torch.__version__,
    )
    net = build_model(MODEL, 1, card.num_classes)
    save_model_files(tmp_path / "m", net.state_dict(), card)
    state, loaded = load_model_files(tmp_path / "m")
    assert loaded == ModelCard(**{**card.__dict__, "sha256": loaded.sha256})
    assert len(loaded.sha256) == 64 and set(state) == set(net.state_dict())
    assert read_model_card(tmp_path / "m") == loaded == read_model_card(tmp_path / "m" / "model.json")


def test_a_plain_mapping_is_validated_before_anything_is_written(tmp_path: Path) -> None:
    net = build_model(MODEL, 1, 3)
    with pytest.raises(ModelFileError, match=r"patch_size is 0; expected an integer in \[1, 1024\]"):
        save_model_files(tmp_path / "m", net.state_dict(), _with("patch_size", [8, 0, 16]))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ([_meta()], r"expected a JSON object at the top level, got list"),
        ({**_meta(), "label": {}}, r"unknown key\(s\) label; valid keys: config, training, labels"),
        (_with("labels", None), r"required key 'labels' is missing"),
        (_with("config.preprocess", None), r"required key 'config.preprocess' is missing"),
        (_with("config.model", [1]), r"config.model is \[1\]; expected a JSON object"),
        (_with("labels", {}), r"labels is \{\}; expected at least one foreground class"),
        (_with("labels", []), r"labels is \[\]; expected a JSON object"),
        (_with("labels", {"0": "background"}), r"expected at least one foreground class"),
        (_with("labels.1", ""), r"labels is ''; expected a non-empty class name"),
        (_with("labels", {"one": "liver"}), r"a key of labels is 'one'; expected a class value in \[0, 255\]"),
        (_with("labels", {"300": "liver"}), r"a key of labels is 300; expected an integer in \[0, 255\]"),
        (_with("colors", {"1": [255, 0, 0]}), r"colors is \[1\]; expected one colour per foreground label \[1, 2\]"),
        (_with("colors.1", [255, 0]), r"a colour is \[255, 0\]; expected \[R, G, B\]"),
        (_with("colors.1", [256, 0, 0]), r"a colour value is 256; expected an integer in \[0, 255\]"),
        (_with("patch_size", [8, 0, 16]), r"patch_size is 0; expected an integer in \[1, 1024\]"),
        (_with("patch_size", [8, -8, 16]), r"patch_size is -8; expected an integer in \[1, 1024\]"),
        (_with("patch_size", [8, 16]), r"patch_size is \[8, 16\]; expected 3 integers in \[1, 1024\]"),
        (_with("in_channels", 2), r"in_channels is 2; expected an integer in \[1, 1\]"),
        (
            _with("config.preprocess.std_hu", 0),
            r"config.preprocess.std_hu is 0.0; expected a number in \[1e-06, 50000.0\]",
        ),
        (
            _with("config.preprocess.window_width_hu", -1),
            r"window_width_hu is -1.0; expected a number in \[1e-06, 50000.0\]",
        ),
        (
            _with("config.preprocess.target_spacing_mm", [0.01, 1, 1]),
            r"target_spacing_mm is 0.01; expected a number in \[0.05, 50.0\]",
        ),
        (
            _with("config.preprocess.target_spacing_mm", [60, 1, 1]),
            r"target_spacing_mm is 60.0; expected a number in \[0.05, 50.0\]",
        ),
        (_with("config.preprocess.normalization", "minmax"), r"normalization is 'minmax'; expected one of window"),
        (_with("config.preprocess.clip_lower_hu", 4000), r"clip_lower_hu is 4000.0; expected below clip_upper_hu"),
        (_with("config.preprocess.mean_hu", 1e6), r"mean_hu is 1000000.0; expected a number in \[-10000.0, 40000.0\]"),
        (_with("config.infer.overlap", 0.96), r"config.infer.overlap is 0.96; expected a number in \[0.0, 0.95\]"),
        (_with("config.infer.overlap", -0.1), r"config.infer.overlap is -0.1; expected a number in \[0.0, 0.95\]"),
        (_with("config.infer.batch_size", 0), r"config.infer.batch_size is 0; expected an integer in \[1, 1024\]"),
        (_with("config.infer.tta", "yes"), r"config.infer.tta: expected bool, got 'yes'"),
        (_with("config.model.architecture", "vnet"), r"architecture is 'vnet'; expected one of unet, dynunet"),
        (_with("config.model.channels", [4, 0]), r"config.model.channels is 0; expected an integer in \[1, 4096\]"),
        (_with("config.model.strides", []), r"config.model.strides is \[\]; expected len\(channels\) - 1 entries"),
        (_with("config.model.strides", [[2, 2, 5]]), r"config.model.strides is 5; expected an integer in \[1, 4\]"),
        (_with("config.model.num_res_units", -1), r"num_res_units is -1; expected an integer in \[0, 16\]"),
        (_with("config.model.dropout", 1.0), r"config.model.dropout is 1.0; expected a number in \[0.0, 0.99\]"),
        ({**_meta(), "sha256": "abc"}, r"sha256 is 'abc'; expected 64 lower-case hex digits"),
        ({**_meta(), "format_version": 2}, r"format_version is 2; expected an integer in \[1, 1\]"),
        ({**_meta(), "source_values": {"1": -3}}, r"source_values is -3; expected an integer in \[0, "),
        ({**_meta(), "fingerprint": []}, r"fingerprint is \[\]; expected a JSON object"),
        ({**_meta(), "ctseg_version": 1}, r"ctseg_version is 1; expected a string"),
        ({**_meta(), "training": {"epoch": -1, "step": 0}}, r"training.epoch is -1; expected an integer in \[0, "),
        (
            {**_meta(), "training": {"epoch": 1, "step": 3, "val_dice": {"liver": 1.5}}},
            r"training.val_dice.liver is 1.5; expected a Dice in \[0, 1\]",
        ),
    ],
)
def test_every_invalid_value_is_refused_with_its_key_and_range(meta: Any, match: str) -> None:
    with pytest.raises(ModelFileError, match=match):
        ModelCard.from_dict(meta)


def test_load_refuses_an_edited_model_json(tmp_path: Path) -> None:
    folder = save_model_files(tmp_path / "m", build_model(MODEL, 1, 3).state_dict(), _meta())
    meta = json.loads((folder / "model.json").read_text())
    meta["config"]["infer"]["overlap"] = 1.5
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"model.json: config.infer.overlap is 1.5; expected a number in \[0.0"):
        load_model_files(folder)
    (folder / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="model.json is not valid JSON"):
        read_model_card(folder)
    (folder / "model.pt").unlink()
    with pytest.raises(CheckpointError, match=r"model.pt is missing; a model folder holds model.pt and model.json"):
        load_model_files(folder)
