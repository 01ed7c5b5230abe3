"""``train()``: plan, cache, train with checkpoints and validation, and write the model artefact.

One straight loop (nanoGPT style): the run folder holds ``plan.yaml`` (resolved config), ``fingerprint.json``,
``split.json``, ``checkpoint.pt``, ``metrics.csv``/``.jsonl``, ``progress.png`` and ``manifest.json``; the model
artefact (``model.pt`` + ``model.json``) goes to ``models/<name>/`` (or ``--model-dir``).
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ctseg import __version__
from ctseg.colors import label_colors
from ctseg.config import RunConfig, from_dict, load_run_config, merge, to_dict
from ctseg.errors import CheckpointError, ConfigError
from ctseg.infer.pipeline import amp_dtype
from ctseg.io.atomic import write_text_atomic
from ctseg.io.model_files import save_model_files
from ctseg.model import build_loss, build_model
from ctseg.model.unet import divisor
from ctseg.preprocess.intensity import compute_intensity_stats
from ctseg.preprocess.pipeline import background_value
from ctseg.train import distributed as ddp
from ctseg.train.cache import build_cache, open_case
from ctseg.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ctseg.train.data import PatchDataset, StepSampler
from ctseg.train.dataset import Dataset, load_dataset, read_case
from ctseg.train.loop import Amp, train_step, validate
from ctseg.train.plan import fingerprint, make_plan
from ctseg.train.records import append_metrics, plot_progress, truncate_metrics, write_manifest

log = logging.getLogger(__name__)

VAL_FRACTION = 0.2


@dataclass(frozen=True)
class TrainOptions:
    """What ``ctseg train`` was asked to do (paths and switches; hyperparameters live in :class:`RunConfig`)."""

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
class TrainResult:
    """Where the outputs are and how the run ended."""

    run_dir: Path
    model_dir: Path
    best_dice: list[float]
    epochs: int
    steps: int
    interrupted: bool


class _Stop:
    """Set by SIGTERM/SIGINT; the loop checkpoints and exits at the next step."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True


def _split(dataset: Dataset, seed: int) -> dict[str, list[str]]:
    names = [c.name for c in dataset.cases]
    if len(names) == 1:  # a single case: validate on it (an overfit check of the pipeline)
        return {"train": names, "val": names}
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    n_val = max(1, int(round(VAL_FRACTION * len(names))))
    return {"train": sorted(order[n_val:]), "val": sorted(order[:n_val])}


def _plan(options: TrainOptions, dataset: Dataset) -> tuple[RunConfig, dict[str, Any]]:
    images, masks = [], []
    for case in dataset.cases:
        image, labels = read_case(case)
        images.append(image.to_closest_canonical(copy=False))  # plan in the orientation the network sees
        masks.append(dataset.remap(np.asarray(labels.to_closest_canonical(copy=False).array)))  # same orientation
    stats = compute_intensity_stats(images, masks)
    fp = fingerprint(images, stats, dataset.num_classes)
    config = make_plan(fp, budget=options.budget)
    if options.config_path is not None:
        # Keys in the YAML replace planned values; strict keys (a typo is an error).
        yaml_cfg = load_run_config(options.config_path)
        config = merge(config, _changed(yaml_cfg, options.config_path))
    return config, fp.to_dict()


def _changed(cfg: RunConfig, path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(Path(path).read_text()) or {}  # the keys the user wrote, already validated by cfg


def _schedule(config: RunConfig, total_steps: int) -> Any:
    t = config.train

    def factor(step: int) -> float:
        progress = min(step / max(total_steps, 1), 1.0)
        if t.optimizer == "sgd":
            return float((1.0 - progress) ** 0.9)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _optimizer(config: RunConfig, params: Any) -> torch.optim.Optimizer:
    t = config.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.learning_rate, momentum=0.99, nesterov=True, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    raise ConfigError(f"unknown train.optimizer {t.optimizer!r}; expected adamw or sgd")


def _validate_patch(config: RunConfig) -> None:
    div = divisor(config.model)
    bad = [p for p, d in zip(config.train.patch_size, div, strict=True) if p % d]
    if bad:
        raise ConfigError(f"train.patch_size {config.train.patch_size} must be a multiple of {div} on every axis")


def train(options: TrainOptions) -> TrainResult:
    """Train a model on a dataset (see :class:`TrainOptions`); resumable, DDP-aware under torchrun.

    Raises
    ------
    DatasetError, ConfigError, CheckpointError
        For a bad dataset, config or checkpoint.
    """
    info = ddp.dist_info_from_env()
    device = (
        torch.device("cuda", info.local_rank)
        if options.device == "auto" and torch.cuda.is_available()
        else (torch.device("cpu") if options.device == "auto" else torch.device(options.device))
    )
    ddp.init_distributed(info, device)
    run_dir = Path(options.run_dir)
    dataset = load_dataset(options.dataset, label_subset=options.label_subset)
    plan_path = run_dir / "plan.yaml"
    if options.resume:
        import yaml

        if not (run_dir / CHECKPOINT_NAME).is_file() or not plan_path.is_file():
            raise CheckpointError(
                f"nothing to resume in {run_dir} (no {CHECKPOINT_NAME} or plan.yaml); start without --resume"
            )
        config = from_dict(RunConfig, yaml.safe_load(plan_path.read_text()), where="plan.yaml")
        if options.overrides:
            config = merge(config, options.overrides)
        split = json.loads((run_dir / "split.json").read_text())
        fp = json.loads((run_dir / "fingerprint.json").read_text())
    else:
        config, fp = _plan(options, dataset)
        if options.overrides:
            config = merge(config, options.overrides)
        split = _split(dataset, config.train.seed)
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            import yaml

            write_text_atomic(plan_path, yaml.safe_dump(to_dict(config), sort_keys=False))
            write_text_atomic(run_dir / "fingerprint.json", json.dumps(fp, indent=2))
            write_text_atomic(run_dir / "split.json", json.dumps(split, indent=2))
            for name in ("metrics.csv", "metrics.jsonl"):
                (run_dir / name).unlink(missing_ok=True)
    _validate_patch(config)
    t = config.train
    if t.batch_size % info.world_size:
        raise ConfigError(f"train.batch_size {t.batch_size} must be divisible by the {info.world_size} processes")
    torch.manual_seed(t.seed)
    if t.deterministic:
        torch.use_deterministic_algorithms(True)
    cache_dir = build_cache(run_dir.parent / ".ctseg_cache", dataset, config.preprocess, write=info.is_main)
    ddp.barrier(info)

    net = build_model(config.model, 1, dataset.num_classes).to(device)
    model: torch.nn.Module = DistributedDataParallel(net) if info.enabled else net
    loss_fn = build_loss(t.loss)
    optimizer = _optimizer(config, net.parameters())
    total_steps = t.epochs * t.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total_steps))
    dtype = amp_dtype(device) if t.amp else None
    amp = Amp(dtype is not None, dtype or torch.float32, device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=amp.enabled and amp.dtype == torch.float16)
    step, epoch, best, best_dice = 0, 0, -1.0, [float("nan")] * (dataset.num_classes - 1)
    if options.resume:
        state = load_checkpoint(run_dir / CHECKPOINT_NAME)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, best = int(state["step"]), int(state["epoch"]), float(state["best"])
        best_dice = [float(v) for v in state["best_dice"]]
        torch.set_rng_state(state["torch_rng"])
        if info.is_main:
            truncate_metrics(run_dir, epoch)
        log.info("resumed at epoch %d, step %d", epoch, step)

    pad = background_value(config.preprocess)
    local_batch = t.batch_size // info.world_size
    data = PatchDataset(
        cache_dir,
        split["train"],
        t.patch_size,
        seed=t.seed,
        foreground_fraction=t.foreground_fraction,
        augment=t.augment,
        pad_value=pad,
        mirror_axes=t.mirror_axes,
    )
    loader = DataLoader(
        data,
        batch_size=local_batch,
        sampler=StepSampler(step, total_steps, local_batch, info.rank, info.world_size),
        num_workers=t.num_workers,
        persistent_workers=False,
        prefetch_factor=4 if t.num_workers else None,
    )
    val_cases = [(np.asarray(c.image), np.asarray(c.labels)) for c in (open_case(cache_dir, n) for n in split["val"])]
    class_names = [dataset.labels[i] for i in range(1, dataset.num_classes)]
    model_dir = Path(options.model_dir) if options.model_dir else Path("models") / run_dir.name
    meta = _model_meta(config, dataset, fp, t.patch_size)

    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps, initial=step, desc="training", unit="step", disable=not (info.is_main and options.progress)
    )
    last_save, epoch_losses, skipped = time.monotonic(), [], 0
    epoch_start, step_seconds = time.perf_counter(), 0.0
    interrupted = False

    def checkpoint() -> None:
        save_checkpoint(
            run_dir / CHECKPOINT_NAME,
            {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "epoch": epoch,
                "best": best,
                "best_dice": best_dice,
                "torch_rng": torch.get_rng_state(),
                "ctseg_version": __version__,
            },
        )

    model.train()
    try:
        for batch in _batches(loader, device):
            result = train_step(
                model, batch, loss_fn, optimizer, scaler, amp, grad_clip=t.grad_clip, accumulation=t.grad_accumulation
            )
            scheduler.step()
            step += 1
            now = time.perf_counter()
            step_seconds += now - epoch_start  # data wait + step; validation and checkpoints excluded
            epoch_start = now
            if result.skipped:
                skipped += 1
                log.warning("step %d skipped: non-finite loss or gradient", step)
            else:
                epoch_losses.append(result.loss)
            bar.update(1)
            bar.set_postfix(loss=f"{result.loss:.4f}", epoch=epoch + 1, lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if step % t.steps_per_epoch == 0:
                epoch += 1
                dice: list[float] | None = None
                if info.is_main and (epoch % t.val_every == 0 or epoch == t.epochs):
                    dice = validate(net, val_cases, t.patch_size, dataset.num_classes, device, amp=t.amp, pad_value=pad)
                    mean = float(np.nanmean(dice)) if not all(math.isnan(d) for d in dice) else 0.0
                    if mean > best:
                        best, best_dice = mean, dice
                        save_model_files(
                            model_dir, net.state_dict(), {**meta, "training": _summary(epoch, step, dice, class_names)}
                        )
                if info.is_main:
                    row: dict[str, Any] = {
                        "epoch": epoch,
                        "step": step,
                        "train_loss": float(np.mean(epoch_losses)) if epoch_losses else float("nan"),
                        "lr": scheduler.get_last_lr()[0],
                        "skipped_steps": skipped,
                        "train_seconds": round(step_seconds, 3),
                    }
                    row.update(
                        {
                            f"dice_{n}": (round(d, 4) if dice else "")
                            for n, d in zip(class_names, dice or [0.0] * len(class_names), strict=True)
                        }
                    )
                    append_metrics(run_dir, row)
                    plot_progress(run_dir, class_names)
                    checkpoint()
                    last_save = time.monotonic()
                epoch_losses, skipped, step_seconds = [], 0, 0.0
                epoch_start = time.perf_counter()
            elif info.is_main and time.monotonic() - last_save > t.checkpoint_minutes * 60:
                checkpoint()  # mid-epoch safety net; resuming repeats the epoch from its start step
                last_save = time.monotonic()
                epoch_start = time.perf_counter()
            if ddp.broadcast_flag(info, stop.requested):
                interrupted = True
                break
    finally:
        bar.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if info.is_main:
        if interrupted:
            checkpoint()  # SIGTERM/SIGINT: keep every finished step
            log.warning("interrupted at step %d; resume with --resume", step)
        elif best < 0:  # no validation ran (e.g. epochs < val_every): keep the final weights
            save_model_files(model_dir, net.state_dict(), {**meta, "training": _summary(epoch, step, [], class_names)})
        write_manifest(
            run_dir,
            {
                "config": to_dict(config),
                "dataset": str(options.dataset),
                "split": split,
                "seed": t.seed,
                "epochs": epoch,
                "steps": step,
                "world_size": info.world_size,
                "best_dice": dict(zip(class_names, best_dice, strict=True)),
                "model_dir": str(model_dir),
            },
        )
    ddp.barrier(info)
    ddp.shutdown(info)
    return TrainResult(run_dir, model_dir, best_dice, epoch, step, interrupted)


def _batches(loader: DataLoader, device: torch.device) -> Any:
    for images, labels in loader:
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def _summary(epoch: int, step: int, dice: list[float], names: list[str]) -> dict[str, Any]:
    return {"epoch": epoch, "step": step, "val_dice": dict(zip(names, dice, strict=False))}


def _model_meta(config: RunConfig, dataset: Dataset, fp: dict[str, Any], patch: tuple[int, int, int]) -> dict[str, Any]:
    labels = {0: "background", **dataset.labels}
    return {
        "ctseg_version": __version__,
        "torch_version": torch.__version__,
        "config": {
            "model": to_dict(config.model),
            "preprocess": to_dict(config.preprocess),
            "infer": to_dict(config.infer),
        },
        "in_channels": 1,
        "labels": {str(k): v for k, v in labels.items()},
        "source_values": {str(k): v for k, v in dataset.source_values.items()},
        "colors": {str(k): list(c) for k, c in label_colors(dataset.labels).items()},
        "patch_size": list(patch),
        "fingerprint": fp,
    }
