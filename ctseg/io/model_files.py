"""The model artefact on disk, and the one owner of the ``model.json`` schema.

A model folder holds ``model.pt`` (state dict only) and ``model.json`` (everything else, a :class:`ModelCard`).
``model.pt`` is loaded with ``torch.load(..., weights_only=True)``: no pickled code runs. ``model.json`` records the
sha256 of ``model.pt``; loading recomputes it and refuses a mismatch. Every value of ``model.json`` is checked
against its range when it is read (and before it is written), raising :class:`~ctseg.errors.ModelFileError` that
names the key and the allowed range.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ctseg.config import ARCHITECTURES, NORMALIZATIONS, InferConfig, ModelConfig, PreprocessConfig, from_dict, to_dict
from ctseg.errors import CheckpointError, ConfigError, ModelFileError
from ctseg.io.atomic import write_bytes_atomic, write_text_atomic

WEIGHTS_NAME = "model.pt"
META_NAME = "model.json"
FORMAT_VERSION = 1
#: Ranges of model.json values (inclusive).
SPACING_RANGE_MM = (0.05, 50.0)
OVERLAP_RANGE = (0.0, 0.95)
PATCH_RANGE = (1, 1024)
LABEL_RANGE = (0, 255)  # label maps are uint8
CHANNELS_RANGE = (1, 4096)
STRIDE_RANGE = (1, 4)
HU_RANGE = (-10000.0, 40000.0)
POSITIVE_HU_RANGE = (1e-6, HU_RANGE[1] - HU_RANGE[0])  # widths and standard deviations (the planner's floor is 1e-6)
INFER_BATCH_RANGE = (1, 1024)
#: What ``kernel_class`` may declare: the reconstruction kernel class the model was trained on.
MODEL_KERNEL_CLASSES = ("soft", "bone", "lung")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class TrainingSummary:
    """How the saved weights were reached: the epoch and step, and the validation Dice per class name."""

    epoch: int
    step: int
    val_dice: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelCard:
    """The content of ``model.json``: everything inference needs besides the weights, plus provenance.

    ``labels`` maps class value -> name (background included); ``colors`` maps each foreground value to RGB;
    ``source_values`` maps class value -> the value in the training labels it came from. ``kernel_class``
    (optional: soft, bone or lung) is the CT reconstruction kernel class the model was trained on; ``ctseg predict``
    prefers a series of that class. ``sha256`` (of ``model.pt``) and ``format_version`` are set by
    :func:`save_model_files`. ``exports`` is the record of ``ctseg export`` (variant -> files, hashes, accuracy
    gate); its entries are validated by :mod:`ctseg.runtime.variants`, which writes them.
    """

    model: ModelConfig
    preprocess: PreprocessConfig
    labels: dict[int, str]
    patch_size: tuple[int, int, int]
    infer: InferConfig = field(default_factory=InferConfig)
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    in_channels: int = 1
    source_values: dict[int, int] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    training: TrainingSummary | None = None
    kernel_class: str = ""
    ctseg_version: str = ""
    torch_version: str = ""
    sha256: str = ""
    format_version: int = FORMAT_VERSION
    exports: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_card(self)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``model.json`` (string keys, lists for tuples)."""
        out: dict[str, Any] = {
            "config": {
                "model": to_dict(self.model),
                "preprocess": to_dict(self.preprocess),
                "infer": to_dict(self.infer),
            },
            "labels": {str(k): v for k, v in self.labels.items()},
            "colors": {str(k): list(c) for k, c in self.colors.items()},
            "patch_size": list(self.patch_size),
            "in_channels": self.in_channels,
            "source_values": {str(k): v for k, v in self.source_values.items()},
            "fingerprint": self.fingerprint,
            "ctseg_version": self.ctseg_version,
            "torch_version": self.torch_version,
            "format_version": self.format_version,
        }
        if self.training is not None:
            out["training"] = {
                "epoch": self.training.epoch,
                "step": self.training.step,
                "val_dice": self.training.val_dice,
            }
        if self.sha256:
            out["sha256"] = self.sha256
        if self.kernel_class:
            out["kernel_class"] = self.kernel_class
        if self.exports:
            out["exports"] = self.exports
        return out

    @classmethod
    def from_dict(cls, data: Any, *, where: str = META_NAME) -> ModelCard:
        """Parse and validate ``model.json`` content.

        Raises
        ------
        ModelFileError
            For a missing or unknown key, a wrong type, or a value out of its range (the message names the key).
        """
        if not isinstance(data, Mapping):
            raise ModelFileError(f"{where}: expected a JSON object at the top level, got {type(data).__name__}")
        valid = ("config", "training", *[f.name for f in fields(cls) if f.name not in ("model", "preprocess", "infer")])
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ModelFileError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
        for key in ("config", "labels", "patch_size"):
            if key not in data:
                raise ModelFileError(f"{where}: required key '{key}' is missing")
        model, preprocess, infer = _configs(data["config"], where)
        return cls(
            model=model,
            preprocess=preprocess,
            infer=infer,
            labels=_int_keyed(data["labels"], "labels", where, lambda v: _name(v, "labels", where)),
            patch_size=_patch(data["patch_size"], where),
            colors=_int_keyed(data.get("colors", {}), "colors", where, lambda v: _rgb(v, where)),
            in_channels=_int(data.get("in_channels", 1), "in_channels", (1, 1), where),
            source_values=_int_keyed(
                data.get("source_values", {}),
                "source_values",
                where,
                lambda v: _int(v, "source_values", (0, 2**31), where),
            ),
            fingerprint=_mapping(data.get("fingerprint", {}), "fingerprint", where),
            training=_training(data.get("training"), where),
            kernel_class=_str(data.get("kernel_class", ""), "kernel_class", where),
            ctseg_version=_str(data.get("ctseg_version", ""), "ctseg_version", where),
            torch_version=_str(data.get("torch_version", ""), "torch_version", where),
            sha256=_str(data.get("sha256", ""), "sha256", where),
            format_version=_int(
                data.get("format_version", FORMAT_VERSION), "format_version", (1, FORMAT_VERSION), where
            ),
            exports=_mapping(data.get("exports", {}), "exports", where),
        )

    @property
    def num_classes(self) -> int:
        """Output channels of the network, background included."""
        return max(self.labels) + 1


def _configs(data: Any, where: str) -> tuple[ModelConfig, PreprocessConfig, InferConfig]:
    sections = _mapping(data, "config", where)
    for key in ("model", "preprocess"):
        if key not in sections:
            raise ModelFileError(f"{where}: required key 'config.{key}' is missing")
    try:
        return (
            from_dict(ModelConfig, _mapping(sections["model"], "config.model", where), where=f"{where} config.model"),
            from_dict(
                PreprocessConfig,
                _mapping(sections["preprocess"], "config.preprocess", where),
                where=f"{where} config.preprocess",
            ),
            from_dict(
                InferConfig, _mapping(sections.get("infer", {}), "config.infer", where), where=f"{where} config.infer"
            ),
        )
    except ConfigError as exc:
        raise ModelFileError(str(exc)) from exc


def _fail(where: str, key: str, value: Any, expected: str) -> ModelFileError:
    return ModelFileError(f"{where}: {key} is {value!r}; expected {expected}")


def _in_range(value: float, key: str, bounds: tuple[float, float], where: str) -> None:
    lo, hi = bounds
    if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
        raise _fail(where, key, value, f"a number in [{lo}, {hi}]")


def _int(value: Any, key: str, bounds: tuple[int, int], where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise _fail(where, key, value, f"an integer in [{bounds[0]}, {bounds[1]}]")
    return value


def _str(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, key, value, "a string")
    return value


def _mapping(value: Any, key: str, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, key, value, "a JSON object")
    return dict(value)


def _name(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, key, value, "a non-empty class name")
    return value


def _rgb(value: Any, where: str) -> tuple[int, int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise _fail(where, "a colour", value, "[R, G, B] with each value in [0, 255]")
    r, g, b = (_int(v, "a colour value", (0, 255), where) for v in value)
    return (r, g, b)


def _int_keyed(value: Any, key: str, where: str, parse: Any) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for k, v in _mapping(value, key, where).items():
        try:
            number = int(k)
        except ValueError:
            raise _fail(where, f"a key of {key}", k, f"a class value in [{LABEL_RANGE[0]}, {LABEL_RANGE[1]}]") from None
        out[_int(number, f"a key of {key}", LABEL_RANGE, where)] = parse(v)
    return out


def _patch(value: Any, where: str) -> tuple[int, int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise _fail(where, "patch_size", value, f"3 integers in [{PATCH_RANGE[0]}, {PATCH_RANGE[1]}]")
    z, y, x = (_int(v, "patch_size", PATCH_RANGE, where) for v in value)
    return (z, y, x)


def _training(value: Any, where: str) -> TrainingSummary | None:
    if value is None:
        return None
    data = _mapping(value, "training", where)
    dice = _mapping(data.get("val_dice", {}), "training.val_dice", where)
    for name, d in dice.items():
        if not (isinstance(d, (int, float)) and (math.isnan(d) or 0.0 <= d <= 1.0)):
            raise _fail(where, f"training.val_dice.{name}", d, "a Dice in [0, 1] (or NaN)")
    return TrainingSummary(
        _int(data.get("epoch"), "training.epoch", (0, 2**31), where),
        _int(data.get("step"), "training.step", (0, 2**62), where),
        {str(k): float(v) for k, v in dice.items()},
    )


def check_settings(model: ModelConfig, preprocess: PreprocessConfig, infer: InferConfig, *, where: str) -> None:
    """Range-check the settings a model.json records (training calls it before the first step).

    Raises
    ------
    ModelFileError
        Naming the key and its allowed range.
    """
    _check_model(model, where)
    _check_preprocess(preprocess, where)
    _in_range(infer.overlap, "config.infer.overlap", OVERLAP_RANGE, where)
    _int(infer.batch_size, "config.infer.batch_size", INFER_BATCH_RANGE, where)


def _check_card(card: ModelCard) -> None:
    """Ranges of every value (also for a card built in code, before it is written)."""
    where = META_NAME
    check_settings(card.model, card.preprocess, card.infer, where=where)
    if not any(k != 0 for k in card.labels):
        raise _fail(where, "labels", {str(k): v for k, v in card.labels.items()}, "at least one foreground class")
    for k in card.labels:
        _int(k, "a key of labels", LABEL_RANGE, where)
    foreground = sorted(k for k in card.labels if k)
    if card.colors and sorted(k for k in card.colors if k) != foreground:
        raise _fail(where, "colors", sorted(card.colors), f"one colour per foreground label {foreground}")
    for z in card.patch_size:
        _int(z, "patch_size", PATCH_RANGE, where)
    _int(card.in_channels, "in_channels", (1, 1), where)
    if card.sha256 and not _SHA256.fullmatch(card.sha256):
        raise _fail(where, "sha256", card.sha256, "64 lower-case hex digits")
    _int(card.format_version, "format_version", (1, FORMAT_VERSION), where)
    if card.kernel_class and card.kernel_class not in MODEL_KERNEL_CLASSES:
        raise _fail(where, "kernel_class", card.kernel_class, f"one of {', '.join(MODEL_KERNEL_CLASSES)} (or absent)")


def _check_model(m: ModelConfig, where: str) -> None:
    if m.architecture not in ARCHITECTURES:
        raise _fail(where, "config.model.architecture", m.architecture, f"one of {', '.join(ARCHITECTURES)}")
    if not 1 <= len(m.channels) <= 8:
        raise _fail(where, "config.model.channels", list(m.channels), "1 to 8 levels")
    for c in m.channels:
        _int(c, "config.model.channels", CHANNELS_RANGE, where)
    if len(m.strides) != len(m.channels) - 1:
        raise _fail(where, "config.model.strides", [list(s) for s in m.strides], "len(channels) - 1 entries")
    for s in m.strides:
        for v in s:
            _int(v, "config.model.strides", STRIDE_RANGE, where)
    _int(m.num_res_units, "config.model.num_res_units", (0, 16), where)
    _in_range(m.dropout, "config.model.dropout", (0.0, 0.99), where)


def _check_preprocess(p: PreprocessConfig, where: str) -> None:
    for s in p.target_spacing_mm:
        _in_range(s, "config.preprocess.target_spacing_mm", SPACING_RANGE_MM, where)
    if p.normalization not in NORMALIZATIONS:
        raise _fail(where, "config.preprocess.normalization", p.normalization, f"one of {', '.join(NORMALIZATIONS)}")
    for key in ("window_level_hu", "clip_lower_hu", "clip_upper_hu", "mean_hu"):
        _in_range(getattr(p, key), f"config.preprocess.{key}", HU_RANGE, where)
    _in_range(p.window_width_hu, "config.preprocess.window_width_hu", POSITIVE_HU_RANGE, where)
    _in_range(p.std_hu, "config.preprocess.std_hu", POSITIVE_HU_RANGE, where)
    if p.clip_lower_hu >= p.clip_upper_hu:
        raise _fail(where, "config.preprocess.clip_lower_hu", p.clip_lower_hu, f"below clip_upper_hu {p.clip_upper_hu}")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model_files(folder: Path, state_dict: dict[str, Any], card: ModelCard | Mapping[str, Any]) -> Path:
    """Write ``model.pt`` and ``model.json`` (with the weights' sha256) into ``folder``, each atomically.

    ``card`` may be a :class:`ModelCard` or its JSON-object form; either is validated before anything is written.

    Raises
    ------
    ModelFileError
        If a value of the description is out of its range.
    """
    import torch

    if not isinstance(card, ModelCard):
        card = ModelCard.from_dict(card, where="model description")
    folder = Path(folder)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
    data = buffer.getvalue()
    meta = {**card.to_dict(), "format_version": FORMAT_VERSION, "sha256": hashlib.sha256(data).hexdigest()}
    write_bytes_atomic(folder / WEIGHTS_NAME, data)
    write_text_atomic(folder / META_NAME, json.dumps(meta, indent=2))
    return folder


def read_model_card(path: Path) -> ModelCard:
    """Read and validate ``model.json`` (``path`` is the file or its model folder); the weights are not read.

    Raises
    ------
    CheckpointError
        If the file is missing or not JSON (:class:`ModelFileError`, a subclass, if a value is invalid).
    """
    path = Path(path)
    meta_path = path / META_NAME if path.is_dir() else path
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path} is missing; a model folder holds {WEIGHTS_NAME} and {META_NAME}")
    try:
        data = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON: {exc}") from exc
    return ModelCard.from_dict(data, where=str(meta_path))


def load_model_files(folder: Path) -> tuple[dict[str, Any], ModelCard]:
    """Read and verify a model folder; return ``(state_dict, card)``.

    Raises
    ------
    CheckpointError
        If a file is missing or unreadable, or ``model.pt``'s sha256 differs from the one in ``model.json``.
    ModelFileError
        If a value of ``model.json`` is missing or out of its range.
    """
    import torch

    folder = Path(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing; a model folder holds {WEIGHTS_NAME} and {META_NAME}")
    card = read_model_card(folder / META_NAME)
    digest = sha256_file(weights)
    if digest != card.sha256:
        raise CheckpointError(
            f"{weights} has sha256 {digest[:12]}..., but {META_NAME} records {card.sha256[:12] or 'none'}...; "
            "the weights were changed or belong to another model. Re-copy the whole model folder"
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or non-tensor files
        raise CheckpointError(f"{weights} cannot be loaded as a state dict: {exc}") from exc
    return state, card
