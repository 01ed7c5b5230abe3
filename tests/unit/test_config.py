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


def test_numbers_written_without_a_dot_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 reads ``3e-3`` as a string; a float field takes it as the number it is (also through --set)."""
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 3e-3\n  time_budget_minutes: 1e1\n")
    cfg = load_run_config(path)
    assert cfg.train.learning_rate == 3e-3 and cfg.train.time_budget_minutes == 10.0
    assert merge(RunConfig(), {"train": {"learning_rate": "3e-3"}}).train.learning_rate == 3e-3
    with pytest.raises(ConfigError, match=r"train.learning_rate: expected a number, got 'fast'"):
        merge(RunConfig(), {"train": {"learning_rate": "fast"}})
    with pytest.raises(ConfigError, match=r"train.weight_decay: expected a number, got \[1\]"):
        merge(RunConfig(), {"train": {"weight_decay": [1]}})


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("epochs", 0, r"train.epochs is 0; expected a number in \[1, inf\)"),
        ("steps_per_epoch", -1, r"train.steps_per_epoch is -1; expected a number in \[1, inf\)"),
        ("batch_size", 0, r"train.batch_size is 0; expected a number in \[1, inf\)"),
        ("val_every", 0, r"train.val_every is 0; expected a number in \[1, inf\)"),
        ("grad_accumulation", 0, r"train.grad_accumulation is 0; expected"),
        ("num_workers", -1, r"train.num_workers is -1; expected a number in \[0, 256\]"),
        ("seed", -2, r"train.seed is -2; expected"),
        ("patch_size", [2, 64, 64], r"train.patch_size is 2; expected a number in \[4, 1024\]"),
        ("learning_rate", 0.0, r"train.learning_rate is 0.0; expected a number in \(0, 1\]"),
        ("learning_rate", 2.0, r"train.learning_rate is 2.0; expected a number in \(0, 1\]"),
        ("learning_rate", "nan", r"train.learning_rate is nan; expected a number in \(0, 1\]"),
        ("learning_rate", "inf", r"train.learning_rate is inf; expected"),
        ("weight_decay", -1e-5, r"train.weight_decay is -1e-05; expected a number in \[0, 1\]"),
        ("grad_clip", 0, r"train.grad_clip is 0.0; expected a number in \(0, inf\)"),
        ("foreground_fraction", 1.5, r"train.foreground_fraction is 1.5; expected a number in \[0, 1\]"),
        ("checkpoint_minutes", 0, r"train.checkpoint_minutes is 0.0; expected"),
        ("time_budget_minutes", 0.1, r"train.time_budget_minutes is 0.1; expected a number in \[0.166667, 43200\]"),
        ("optimizer", "adam", r"train.optimizer is 'adam'; expected one of adamw, sgd"),
        ("loss", "ce", r"train.loss is 'ce'; expected one of dice_ce, dice"),
        ("mirror_axes", [0, 3], r"train.mirror_axes is \[0, 3\]; expected distinct axes from 0, 1, 2"),
        ("mirror_axes", [1, 1], r"train.mirror_axes is \[1, 1\]; expected distinct axes"),
    ],
)
def test_train_ranges(key: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        merge(RunConfig(), {"train": {key: value}})
