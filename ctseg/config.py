"""Configuration: frozen dataclasses, 1:1 with YAML, strict keys.

An unknown key anywhere raises :class:`~ctseg.errors.ConfigError` listing the valid keys, so a typo never silently
falls back to a default. Configs hold data only: no expressions, no code.

Naming: a ``*Config`` (here: :class:`ModelConfig`, :class:`PreprocessConfig`, :class:`TrainConfig`,
:class:`InferConfig`, :class:`RunConfig`) is a persisted setting: it is written to ``plan.yaml`` or ``model.json``
and a later run or another machine reads it back. An ``*Options`` (``TrainOptions``, ``PredictOptions``,
``ReadOptions``) is a choice for one run only (paths, device, switches such as ``--resume`` or ``--allow-gaps``),
built by the command line and never persisted. So the same word can appear in both: ``TrainConfig`` is how a model
is trained (kept with the run), ``TrainOptions`` is what this invocation of ``ctseg train`` was asked to do.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from ctseg.errors import ConfigError

T = TypeVar("T")

#: The values ``ModelConfig.architecture`` may take.
ARCHITECTURES = ("unet", "dynunet")
#: The values ``PreprocessConfig.normalization`` may take.
NORMALIZATIONS = ("window", "zscore")
#: The values ``TrainConfig.optimizer`` and ``TrainConfig.loss`` may take.
OPTIMIZERS = ("adamw", "sgd")
LOSSES = ("dice_ce", "dice")
#: ``TrainConfig.time_budget_minutes`` range: 10 seconds (tests, smoke runs) to 30 days.
MIN_BUDGET_MINUTES, MAX_BUDGET_MINUTES = 10 / 60, 30 * 24 * 60.0
MAX_WORKERS = 256
MIN_PATCH_EDGE, MAX_PATCH_EDGE = 4, 1024


@dataclass(frozen=True)
class ModelConfig:
    """The network. ``channels`` per level; the deepest level's stride pattern follows ``strides``."""

    architecture: str = "unet"  # "unet" (MONAI UNet, residual units) or "dynunet" (nnU-Net-like, MONAI DynUNet)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[tuple[int, int, int], ...] = ((2, 2, 2), (2, 2, 2), (2, 2, 2))
    num_res_units: int = 1
    deep_supervision: bool = False
    dropout: float = 0.0


@dataclass(frozen=True)
class PreprocessConfig:
    """How a CT becomes the network's input."""

    target_spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5)
    reorient: bool = True  # permute/flip axes (lossless) so the network always sees S-P-L ordered arrays
    normalization: str = "window"  # "window" (fixed level/width -> [0, 1]) or "zscore" (percentile clip + z-score)
    window_level_hu: float = 40.0
    window_width_hu: float = 400.0
    clip_lower_hu: float = -1024.0
    clip_upper_hu: float = 3071.0
    mean_hu: float = 0.0
    std_hu: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and sampling. Ranges are checked at construction (:class:`ConfigError` naming the key).

    ``time_budget_minutes``: when set, ``ctseg train`` measures its step time and fits ``epochs`` and ``val_every``
    (and so the learning-rate horizon) to finish in that time; ``None`` trains exactly ``epochs`` epochs.
    """

    epochs: int = 50
    steps_per_epoch: int = 50
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (64, 64, 64)
    optimizer: str = "adamw"  # "adamw" (cosine annealing) or "sgd" (Nesterov, poly decay)
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    grad_clip: float = 12.0
    grad_accumulation: int = 1
    loss: str = "dice_ce"  # "dice_ce" or "dice"
    foreground_fraction: float = 0.33
    mirror_axes: tuple[int, ...] = ()  # mirroring augmentation axes; the plan says why (none for CT)
    augment: bool = True
    amp: bool = True
    num_workers: int = 1
    val_every: int = 5
    checkpoint_minutes: float = 10.0
    seed: int = 0
    deterministic: bool = False
    time_budget_minutes: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "batch_size", "grad_accumulation", "val_every"):
            _check_range(f"train.{name}", getattr(self, name), 1, None)
        _check_range("train.num_workers", self.num_workers, 0, MAX_WORKERS)
        _check_range("train.seed", self.seed, 0, None)
        for edge in self.patch_size:
            _check_range("train.patch_size", edge, MIN_PATCH_EDGE, MAX_PATCH_EDGE)
        _check_range("train.learning_rate", self.learning_rate, 0.0, 1.0, low_open=True)
        _check_range("train.weight_decay", self.weight_decay, 0.0, 1.0)
        _check_range("train.grad_clip", self.grad_clip, 0.0, None, low_open=True)
        _check_range("train.foreground_fraction", self.foreground_fraction, 0.0, 1.0)
        _check_range("train.checkpoint_minutes", self.checkpoint_minutes, 0.0, None, low_open=True)
        if self.time_budget_minutes is not None:
            _check_range("train.time_budget_minutes", self.time_budget_minutes, MIN_BUDGET_MINUTES, MAX_BUDGET_MINUTES)
        _check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("train.loss", self.loss, LOSSES)
        if len(set(self.mirror_axes)) != len(self.mirror_axes) or any(a not in (0, 1, 2) for a in self.mirror_axes):
            raise ConfigError(
                f"train.mirror_axes is {list(self.mirror_axes)}; expected distinct axes from 0, 1, 2 (or [] for none)"
            )


def _check_range(key: str, value: float, low: float, high: float | None, *, low_open: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is finite and in ``[low, high]`` (``(low, high]`` if low_open)."""
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or (high is not None and value > high):
        bounds = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise ConfigError(f"{key} is {value!r}; expected a number in {bounds}")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} is {value!r}; expected one of {', '.join(choices)}")


@dataclass(frozen=True)
class InferConfig:
    """Sliding-window inference."""

    overlap: float = 0.5
    batch_size: int = 1
    tta: bool = False
    amp: bool = True
    largest_component: bool = False
    fill_holes: bool = False


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs besides the data; what ``--config`` YAML files hold."""

    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where=where)  # type: ignore[arg-type]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(members[0], value, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads ``3e-3`` (no dot) as a string; a number written that way is still a number.
        try:
            return float(value.strip())
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is float:
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp in (int, str, bool) and type(value) is not tp:
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise :class:`ConfigError`."""
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    return cls(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()})


def to_dict(obj: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-ready dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(obj))  # type: ignore[no-any-return]


def read_config_mapping(path: Path) -> dict[str, Any]:
    """The keys a YAML run config holds (any subset of sections and keys), checked against :class:`RunConfig`.

    Use it to apply only what the user wrote on top of another config (``merge(base, read_config_mapping(p))``).

    Raises
    ------
    ConfigError
        For unreadable YAML, unknown keys or wrong types.
    """
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    from_dict(RunConfig, data, where=Path(path).name)
    return data


def load_run_config(path: Path) -> RunConfig:
    """Read a YAML run config (any subset of sections and keys; the rest keep their defaults).

    Raises
    ------
    ConfigError
        For unreadable YAML, unknown keys or wrong types.
    """
    return from_dict(RunConfig, read_config_mapping(path), where=Path(path).name)


def merge(base: T, overrides: dict[str, Any]) -> T:
    """``base`` with nested ``overrides`` applied (strict keys)."""
    merged = to_dict(base)

    def deep(dst: dict[str, Any], src: dict[str, Any]) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                deep(dst[k], v)
            else:
                dst[k] = v

    deep(merged, overrides)
    return from_dict(type(base), merged)


def dump_yaml(obj: Any) -> str:
    """YAML text of a config dataclass."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False)
