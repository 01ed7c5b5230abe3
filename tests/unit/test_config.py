from __future__ import annotations

from pathlib import Path

import pytest

from ctseg.config import RunConfig, TrainConfig, dump_yaml, from_dict, load_run_config, merge, to_dict
from ctseg.errors import ConfigError


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = RunConfig()
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_run_config(path) == cfg


def test_partial_yaml_and_types(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n  patch_size: [32, 48, 48]\n  learning_rate: 1\n")
    cfg = load_run_config(path)
    assert cfg.train.epochs == 3 and cfg.train.patch_size == (32, 48, 48)
    assert isinstance(cfg.train.learning_rate, float) and cfg.model == RunConfig().model


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("train:\n  epoch: 3\n", r"c.yaml.train: unknown key\(s\) epoch; valid keys: epochs"),
        ("trian: {}\n", r"unknown key\(s\) trian"),
        ("train:\n  epochs: three\n", r"train.epochs: expected int, got 'three'"),
        ("train:\n  patch_size: [32, 32]\n", r"train.patch_size: expected 3 values, got 2"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        ("train: [1, 2\n", "cannot read config"),
    ],
)
def test_strict_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_run_config(path)


def test_merge_is_strict_and_nested() -> None:
    cfg = merge(RunConfig(), {"train": {"epochs": 7}, "model": {"channels": [8, 16]}})
    assert cfg.train.epochs == 7 and cfg.model.channels == (8, 16) and cfg.train.batch_size == 2
    with pytest.raises(ConfigError, match="unknown key"):
        merge(RunConfig(), {"train": {"nope": 1}})


def test_to_dict_plain() -> None:
    d = to_dict(TrainConfig())
    assert d["patch_size"] == [64, 64, 64] and from_dict(TrainConfig, d) == TrainConfig()


def test_config_file_keys_replace_planned_values_even_when_they_equal_the_defaults(tmp_path: Path) -> None:
    """What the YAML holds is applied on top of a plan; a key written with its default value still counts."""
    from ctseg.config import read_config_mapping

    planned = merge(RunConfig(), {"preprocess": {"normalization": "zscore"}, "train": {"epochs": 7}})
    path = tmp_path / "c.yaml"
    path.write_text("preprocess:\n  normalization: window\n")  # the default, written on purpose
    cfg = merge(planned, read_config_mapping(path))
    assert cfg.preprocess.normalization == "window" and cfg.train.epochs == 7
    path.write_text("- train\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        read_config_mapping(path)
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) epoch"):
        read_config_mapping(path)
