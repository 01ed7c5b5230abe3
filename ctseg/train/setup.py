"""Setting up a training run: the plan (fresh or read back for ``--resume``) and the objects the loop drives.

The run folder holds ``plan.yaml`` (resolved config, headed by comments that say why the plan chose what it chose),
``fingerprint.json`` and ``split.json``: written once by a fresh run (main rank only) and read back by a resumed one,
here. A budgeted run rewrites ``plan.yaml``'s ``epochs`` and ``val_every`` when it fits them (:func:`update_plan`).

An explicit epoch count (``--epochs``, ``--set train.epochs=...`` or ``epochs`` in ``--config``) without a time
budget next to it replaces the plan's time budget: the user asked for that many epochs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from ctseg.config import RunConfig, from_dict, merge, read_config_mapping, to_dict
from ctseg.device import amp_dtype
from ctseg.distributed import DistInfo
from ctseg.errors import CheckpointError, ConfigError, ModelFileError
from ctseg.io.atomic import write_text_atomic
from ctseg.io.model_files import check_settings
from ctseg.model import build_loss, build_model
from ctseg.model.unet import divisor
from ctseg.preprocess.intensity import compute_intensity_stats
from ctseg.train.checkpoint import CHECKPOINT_NAME
from ctseg.train.dataset import DatasetFolder, read_case
from ctseg.train.loop import Amp, LossFn
from ctseg.train.plan import fingerprint, make_plan

VAL_FRACTION = 0.2
PLAN_NAME, FINGERPRINT_NAME, SPLIT_NAME = "plan.yaml", "fingerprint.json", "split.json"


@dataclass(frozen=True)
class TrainOptions:
    """What ``ctseg train`` was asked to do this run (paths and switches); hyperparameters live in
    :class:`~ctseg.config.RunConfig` (see :mod:`ctseg.config` for the Options/Config naming)."""

    dataset: Path
    run_dir: Path
    model_dir: Path | None = None
    config_path: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    label_subset: dict[str, int] | None = None
    budget: str = "cpu"
    device: str = "auto"
    resume: bool = False
    progress: bool = True


@dataclass(frozen=True)
class RunPlan:
    """The resolved config, the data fingerprint, the train/validation split and the plan's notes of one run."""

    config: RunConfig
    fingerprint: dict[str, Any]
    split: dict[str, list[str]]
    notes: tuple[str, ...] = ()


class Horizon:
    """The learning-rate schedule's length in steps; a budgeted run sets it once it has measured its step time."""

    def __init__(self, steps: int) -> None:
        self.steps = steps


@dataclass(frozen=True)
class Trainer:
    """The objects one optimiser step touches. ``net`` is the bare network, ``model`` it or its DDP wrapper."""

    net: torch.nn.Module
    model: torch.nn.Module
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp: Amp
    horizon: Horizon


def plan_run(options: TrainOptions, dataset: DatasetFolder, info: DistInfo) -> RunPlan:
    """A fresh run's plan from the data (and ``--config``/``--set``); the main rank writes it to the run folder."""
    config, fp, notes = _plan(options, dataset)
    config = apply_overrides(config, options.overrides)
    run = RunPlan(config, fp, _split(dataset, config.train.seed), notes)
    run_dir = Path(options.run_dir)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / PLAN_NAME, _plan_text(run.config, notes))
        write_text_atomic(run_dir / FINGERPRINT_NAME, json.dumps(run.fingerprint, indent=2))
        write_text_atomic(run_dir / SPLIT_NAME, json.dumps(run.split, indent=2))
        for name in ("metrics.csv", "metrics.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
    return run


def read_run_plan(options: TrainOptions) -> RunPlan:
    """The plan a previous run wrote (``--resume``), with this run's ``--set`` overrides applied.

    Raises
    ------
    CheckpointError
        If the run folder holds no checkpoint or plan.
    """
    run_dir = Path(options.run_dir)
    if not (run_dir / CHECKPOINT_NAME).is_file() or not (run_dir / PLAN_NAME).is_file():
        raise CheckpointError(
            f"nothing to resume in {run_dir} (no {CHECKPOINT_NAME} or {PLAN_NAME}); start without --resume"
        )
    text = (run_dir / PLAN_NAME).read_text()
    config = apply_overrides(from_dict(RunConfig, yaml.safe_load(text), where=PLAN_NAME), options.overrides)
    split = json.loads((run_dir / SPLIT_NAME).read_text())
    fp = json.loads((run_dir / FINGERPRINT_NAME).read_text())
    return RunPlan(config, fp, split, _notes(text))


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """``config`` with ``overrides`` merged; an explicit ``train.epochs`` without a budget drops the time budget."""
    if not overrides:
        return config
    merged = merge(config, overrides)
    train = overrides.get("train") or {}
    if "epochs" in train and "time_budget_minutes" not in train:
        merged = replace(merged, train=replace(merged.train, time_budget_minutes=None))
    return merged


def explicit_schedule(overrides: dict[str, Any]) -> bool:
    """True if this run's overrides set the schedule (epochs or time budget) rather than continue a recorded one."""
    train = overrides.get("train") or {}
    return "epochs" in train or "time_budget_minutes" in train


def update_plan(run_dir: Path, config: RunConfig, notes: tuple[str, ...]) -> None:
    """Rewrite ``plan.yaml`` (e.g. with the epochs a time budget fitted), keeping its notes."""
    write_text_atomic(Path(run_dir) / PLAN_NAME, _plan_text(config, notes))


def _plan_text(config: RunConfig, notes: tuple[str, ...]) -> str:
    t = config.train
    if t.time_budget_minutes is None:
        now = (
            f"this run: {t.epochs} epochs x {t.steps_per_epoch} steps, validation every {t.val_every} (no time budget)"
        )
    else:
        now = (
            f"this run: time budget {t.time_budget_minutes:g} min; epochs and val_every below are fitted to it "
            "once the step time is measured"
        )
    header = "".join(f"# {n}\n" for n in ("Why the plan chose what it chose:", *notes, now)) if notes else ""
    return header + yaml.safe_dump(to_dict(config), sort_keys=False)


def _notes(text: str) -> tuple[str, ...]:
    lines = [ln[2:] for ln in text.splitlines() if ln.startswith("# ")]
    return tuple(ln for ln in lines[1:] if not ln.startswith("this run:"))


def check_run_config(config: RunConfig, info: DistInfo) -> None:
    """Refuse a patch the network cannot downsample, a batch the processes cannot share, or a setting the model
    artefact could not record (checked before the first step, not when the model is saved).

    Raises
    ------
    ConfigError
        For any of these.
    """
    try:
        check_settings(config.model, config.preprocess, config.infer, where="run config")
    except ModelFileError as exc:
        raise ConfigError(f"{exc} (set it with --set or --config)") from None
    div = divisor(config.model)
    bad = [p for p, d in zip(config.train.patch_size, div, strict=True) if p % d]
    if bad:
        raise ConfigError(f"train.patch_size {config.train.patch_size} must be a multiple of {div} on every axis")
    batch = config.train.batch_size
    if batch % info.world_size:
        raise ConfigError(f"train.batch_size {batch} must be divisible by the {info.world_size} processes")


def build_trainer(config: RunConfig, num_classes: int, device: torch.device, info: DistInfo) -> Trainer:
    """Network (DDP-wrapped for several processes), loss, optimiser, LR schedule and AMP scaler, freshly made."""
    t = config.train
    net = build_model(config.model, 1, num_classes).to(device)
    model: torch.nn.Module = DistributedDataParallel(net) if info.enabled else net
    optimizer = _optimizer(config, net.parameters())
    horizon = Horizon(t.epochs * t.steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, horizon))
    dtype = amp_dtype(device) if t.amp else None
    amp = Amp(dtype is not None, dtype or torch.float32, device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=amp.enabled and amp.dtype == torch.float16)
    return Trainer(net, model, build_loss(t.loss), optimizer, scheduler, scaler, amp, horizon)


def _split(dataset: DatasetFolder, seed: int) -> dict[str, list[str]]:
    names = [c.name for c in dataset.cases]
    if len(names) == 1:  # a single case: validate on it (an overfit check of the pipeline)
        return {"train": names, "val": names}
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    n_val = max(1, int(round(VAL_FRACTION * len(names))))
    return {"train": sorted(order[n_val:]), "val": sorted(order[:n_val])}


def _plan(options: TrainOptions, dataset: DatasetFolder) -> tuple[RunConfig, dict[str, Any], tuple[str, ...]]:
    images, masks = [], []
    for case in dataset.cases:
        image, labels = read_case(case)
        images.append(image.to_closest_canonical(copy=False))  # plan in the orientation the network sees
        masks.append(dataset.remap(np.asarray(labels.to_closest_canonical(copy=False).array)))  # same orientation
    stats = compute_intensity_stats(images, masks)
    fp = fingerprint(images, stats, dataset.num_classes)
    plan = make_plan(fp, budget=options.budget, labels=[dataset.labels[i] for i in range(1, dataset.num_classes)])
    config = plan.config
    if options.config_path is not None:
        # Keys the YAML holds replace planned values (strict keys: a typo is an error); keys it omits stay planned.
        config = apply_overrides(config, read_config_mapping(options.config_path))
    kernels = dicom_kernel_classes(dataset)
    return config, {**fp.to_dict(), **({"kernel_classes": kernels} if kernels else {})}, plan.notes


def dicom_kernel_classes(dataset: DatasetFolder) -> dict[str, int]:
    """How many DICOM-folder cases have each kernel class (soft, bone, lung, unknown); empty without DICOM cases.

    The series is the one :func:`~ctseg.train.dataset.read_case` reads (the default choice); headers only.
    """
    from ctseg.io.dicom import inspect_dicom

    counts: dict[str, int] = {}
    for case in dataset.cases:
        if case.image.is_dir():
            choice = inspect_dicom(case.image).choice
            if choice is not None and choice.chosen is not None:
                counts[choice.kernel_class] = counts.get(choice.kernel_class, 0) + 1
    return dict(sorted(counts.items()))


def lr_factor(optimizer: str, step: int, horizon_steps: int) -> float:
    """The learning rate's multiplier at ``step`` of a ``horizon_steps`` schedule: poly 0.9 for SGD, else cosine."""
    progress = min(step / max(horizon_steps, 1), 1.0)
    if optimizer == "sgd":
        return float((1.0 - progress) ** 0.9)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _schedule(config: RunConfig, horizon: Horizon) -> Callable[[int], float]:
    optimizer = config.train.optimizer

    def factor(step: int) -> float:
        return lr_factor(optimizer, step, horizon.steps)

    return factor


def _optimizer(config: RunConfig, params: Any) -> torch.optim.Optimizer:
    t = config.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.learning_rate, momentum=0.99, nesterov=True, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    raise ConfigError(f"unknown train.optimizer {t.optimizer!r}; expected adamw or sgd")
