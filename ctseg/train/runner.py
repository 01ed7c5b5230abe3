"""``train()``: plan, cache, train with checkpoints and validation, and write the model artefact.

One straight loop (nanoGPT style), read top to bottom in :func:`train`: set up (:mod:`ctseg.train.setup`), resume
from a :class:`~ctseg.train.checkpoint.TrainState`, run epochs (:func:`_train_epoch`, then :func:`_end_epoch` for
validation, metrics and the checkpoint) and finish (:func:`_finish`). A run with ``train.time_budget_minutes``
fits its schedule to the budget as it goes (:mod:`ctseg.train.budget`; :func:`_fit`). The run folder holds ``plan.yaml``,
``fingerprint.json``, ``split.json``, ``checkpoint.pt``, ``metrics.csv``/``.jsonl``, ``progress.png`` and
``manifest.json``; the model artefact (``model.pt`` + ``model.json``) goes to ``models/<name>/`` (or
``--model-dir``).
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ctseg._version import __version__
from ctseg.colors import label_colors
from ctseg.config import RunConfig, to_dict
from ctseg.device import resolve_device
from ctseg.distributed import (
    DistInfo,
    barrier,
    broadcast_flag,
    broadcast_ints,
    dist_info_from_env,
    init_distributed,
    shutdown,
)
from ctseg.io.model_files import ModelCard, TrainingSummary, save_model_files
from ctseg.preprocess.pipeline import background_value
from ctseg.train.budget import (
    FINISH_RESERVE_S,
    GROW_SLACK,
    OPEN_EPOCHS,
    BudgetClock,
    bounded_growth,
    fit_schedule,
    format_seconds,
    validation_estimate_s,
)
from ctseg.train.cache import build_cache, open_case
from ctseg.train.checkpoint import CHECKPOINT_NAME, TrainState, load_checkpoint, save_checkpoint
from ctseg.train.dataset import DatasetFolder, load_dataset, require_valid_dataset
from ctseg.train.loop import train_step, validate
from ctseg.train.patches import PatchDataset, StepSampler
from ctseg.train.records import append_metrics, plot_progress, truncate_metrics, write_manifest
from ctseg.train.setup import (
    RunPlan,
    Trainer,
    TrainOptions,
    build_trainer,
    check_run_config,
    explicit_schedule,
    lr_factor,
    plan_run,
    read_run_plan,
    update_plan,
)

__all__ = ["TrainOptions", "TrainResult", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """Where the outputs are and how the run ended."""

    run_dir: Path
    model_dir: Path
    best_dice: list[float]
    epochs: int
    steps: int
    interrupted: bool
    seconds: float = 0.0


@dataclass
class Progress:
    """The loop's counters and schedule: what a checkpoint saves besides the weights and optimiser states.

    ``epochs_total`` is :data:`~ctseg.train.budget.OPEN_EPOCHS` while a budgeted run is still measuring its step time.
    """

    epoch: int = 0
    step: int = 0
    best: float = -1.0  # best mean validation Dice; -1 before the first validation
    best_dice: list[float] = field(default_factory=list)
    epochs_total: int = 0
    val_every: int = 1


@dataclass
class _Epoch:
    """Per-epoch bookkeeping: losses, skipped steps and time spent in steps (validation and saving excluded)."""

    losses: list[float] = field(default_factory=list)
    skipped: int = 0
    step_seconds: float = 0.0
    last_tick: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class _Run:
    """What stays fixed during the loop."""

    options: TrainOptions
    info: DistInfo
    device: torch.device
    plan: RunPlan
    dataset: DatasetFolder
    model_dir: Path
    val_cases: list[tuple[np.ndarray, np.ndarray]]
    class_names: list[str]
    clock: BudgetClock | None

    @property
    def run_dir(self) -> Path:
        """The run folder (plan, checkpoint, metrics, manifest)."""
        return Path(self.options.run_dir)


class _Stop:
    """Set by SIGTERM/SIGINT; the loop checkpoints and exits at the next step."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True


def train(options: TrainOptions) -> TrainResult:
    """Train a model on a dataset (see :class:`TrainOptions`); resumable, DDP-aware under torchrun.

    Raises
    ------
    DatasetError, ConfigError, CheckpointError
        For a bad dataset, config or checkpoint.
    """
    started = time.monotonic()
    info = dist_info_from_env()
    device = resolve_device(options.device, local_rank=info.local_rank)
    init_distributed(info, device)
    dataset = load_dataset(options.dataset, label_subset=options.label_subset)
    require_valid_dataset(dataset)
    plan = read_run_plan(options) if options.resume else plan_run(options, dataset, info)
    check_run_config(plan.config, info)
    t = plan.config.train
    torch.manual_seed(t.seed)
    if t.deterministic:
        torch.use_deterministic_algorithms(True)
    cache_dir = build_cache(
        Path(options.run_dir).parent / ".ctseg_cache", dataset, plan.config.preprocess, write=info.is_main
    )
    barrier(info)

    trainer = build_trainer(plan.config, dataset.num_classes, device, info)
    progress = Progress(best_dice=[float("nan")] * (dataset.num_classes - 1))
    recorded = (0, 0)
    if options.resume:
        progress, recorded = _resume(trainer, Path(options.run_dir), info)
    clock = _start_schedule(plan, options, progress, recorded, started)
    trainer.horizon.steps = progress.epochs_total * t.steps_per_epoch
    run = _prepare_run(options, info, device, plan, dataset, cache_dir, clock)
    loader = _loader(plan.config, cache_dir, plan.split["train"], progress.step, trainer.horizon.steps, info)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=None if clock else trainer.horizon.steps,
        initial=progress.step,
        desc="training",
        unit="step",
        disable=not (info.is_main and options.progress),
    )
    batches = _batches(loader, device)
    interrupted = False
    with _stop_signals() as stop:
        try:
            while progress.step < progress.epochs_total * t.steps_per_epoch and not interrupted:
                epoch, interrupted = _train_epoch(run, trainer, progress, batches, bar, stop)
                if progress.step % t.steps_per_epoch == 0:
                    if clock is not None and clock.fitted:
                        _fit(run, trainer, progress, bar)  # first: if it ends the run here, this epoch validates
                    _end_epoch(run, trainer, progress, epoch)
                    if info.is_main:
                        _checkpoint(run, trainer, progress)
        finally:
            bar.close()
            batches.close()  # stops the DataLoader workers (a budgeted run's sampler is open-ended)
    _finish(run, trainer, progress, interrupted)
    seconds = time.monotonic() - started
    return TrainResult(
        run.run_dir, run.model_dir, progress.best_dice, progress.epoch, progress.step, interrupted, seconds
    )


def _start_schedule(
    plan: RunPlan, options: TrainOptions, progress: Progress, recorded: tuple[int, int], started: float
) -> BudgetClock | None:
    """Set ``progress``'s schedule: the checkpoint's on a plain resume, the config's, or open for a time budget.

    Returns the budget clock of a budgeted run, else None.
    """
    t = plan.config.train
    if options.resume and recorded[0] > 0 and not explicit_schedule(options.overrides):
        progress.epochs_total, progress.val_every = recorded  # continue the horizon the run was following
        return None
    if t.time_budget_minutes is None:
        progress.epochs_total, progress.val_every = t.epochs, t.val_every
        return None
    progress.epochs_total, progress.val_every = OPEN_EPOCHS, OPEN_EPOCHS
    log.info("time budget %.1f min: measuring the step time", t.time_budget_minutes)
    budget_s = t.time_budget_minutes * 60.0
    return BudgetClock(deadline=started + budget_s, budget_s=budget_s, start_step=progress.step)


def _fit(run: _Run, trainer: Trainer, progress: Progress, bar: Any) -> None:
    """Fit (or refit) the schedule to the budget left, from rank 0's timings; records it in ``plan.yaml``."""
    clock, t = run.clock, run.plan.config.train
    if clock is None:
        return
    step_s = clock.step_seconds()
    if clock.validation_seconds:
        val_s = float(np.mean(clock.validation_seconds))
    else:
        val_s = validation_estimate_s([c[0].shape for c in run.val_cases], t.patch_size, step_s, t.batch_size)
    fitted = fit_schedule(
        seconds_left=clock.seconds_left() - FINISH_RESERVE_S,
        step_s=step_s,
        validation_s=val_s,
        steps_per_epoch=t.steps_per_epoch,
        done_steps=progress.step,
        val_every=progress.val_every if clock.fitted else None,
    )
    epochs, val_every = broadcast_ints(run.info, [fitted.epochs, fitted.val_every])
    if clock.fitted and epochs > progress.epochs_total:
        now, spe, opt = progress.epochs_total, t.steps_per_epoch, t.optimizer
        step = progress.step

        def rise(e: int) -> float:
            return lr_factor(opt, step, e * spe) - lr_factor(opt, step, now * spe)

        epochs = bounded_growth(now, epochs, rise)  # the same on every rank: a function of broadcast values
    if clock.fitted and progress.epochs_total <= epochs <= progress.epochs_total * (1 + GROW_SLACK):
        return  # on course: keep the learning-rate curve where it is
    first = not clock.fitted
    clock.fitted = True
    progress.epochs_total, progress.val_every = epochs, val_every
    trainer.horizon.steps = epochs * t.steps_per_epoch
    bar.total = trainer.horizon.steps
    bar.refresh()
    if run.info.is_main:
        update_plan(run.run_dir, _followed_config(run, progress), run.plan.notes)
        log.log(
            logging.INFO if first else logging.DEBUG,
            "time budget: %.3f s/step, %.1f s/validation, %s left -> %d epochs x %d steps, validation every %d",
            step_s,
            val_s,
            format_seconds(clock.seconds_left()),
            epochs,
            t.steps_per_epoch,
            val_every,
        )


def _followed_config(run: _Run, progress: Progress) -> RunConfig:
    """The run's config with the schedule it follows (fitted to a budget, or recorded in the checkpoint)."""
    config = run.plan.config
    if progress.epochs_total == OPEN_EPOCHS:  # stopped before the budget was fitted
        return config
    train = replace(config.train, epochs=progress.epochs_total, val_every=progress.val_every)
    return replace(config, train=train)


def _resume(trainer: Trainer, run_dir: Path, info: DistInfo) -> tuple[Progress, tuple[int, int]]:
    """Load the checkpoint into the trainer's objects; the metrics of epochs after it are dropped.

    Returns the counters and the recorded schedule ``(epochs_total, val_every)`` ((0, 0) if none was fitted).
    """
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    trainer.net.load_state_dict(state.model)
    trainer.optimizer.load_state_dict(state.optimizer)
    trainer.scheduler.load_state_dict(state.scheduler)
    trainer.scaler.load_state_dict(state.scaler)
    torch.set_rng_state(state.torch_rng)
    if state.cuda_rng and torch.cuda.is_available() and len(state.cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(state.cuda_rng))
    if info.is_main:
        truncate_metrics(run_dir, state.epoch)
    log.info("resumed at epoch %d, step %d", state.epoch, state.step)
    return Progress(state.epoch, state.step, state.best, list(state.best_dice)), (state.epochs_total, state.val_every)


def _prepare_run(
    options: TrainOptions,
    info: DistInfo,
    device: torch.device,
    plan: RunPlan,
    dataset: DatasetFolder,
    cache_dir: Path,
    clock: BudgetClock | None,
) -> _Run:
    val_cases = [
        (np.asarray(c.image), np.asarray(c.labels)) for c in (open_case(cache_dir, n) for n in plan.split["val"])
    ]
    model_dir = Path(options.model_dir) if options.model_dir else Path("models") / Path(options.run_dir).name
    class_names = [dataset.labels[i] for i in range(1, dataset.num_classes)]
    return _Run(options, info, device, plan, dataset, model_dir, val_cases, class_names, clock)


def _loader(
    config: RunConfig, cache_dir: Path, cases: list[str], start_step: int, total_steps: int, info: DistInfo
) -> DataLoader:
    """Patches for this rank from ``start_step`` to ``total_steps`` (sampling is a function of the step)."""
    t = config.train
    local_batch = t.batch_size // info.world_size
    data = PatchDataset(
        cache_dir,
        cases,
        t.patch_size,
        seed=t.seed,
        foreground_fraction=t.foreground_fraction,
        augment=t.augment,
        pad_value=background_value(config.preprocess),
        mirror_axes=t.mirror_axes,
    )
    sampler = StepSampler(start_step, total_steps, local_batch, info.rank, info.world_size)
    return DataLoader(
        data,
        batch_size=local_batch,
        sampler=sampler,
        num_workers=t.num_workers,
        persistent_workers=False,
        prefetch_factor=4 if t.num_workers else None,
    )


@contextmanager
def _stop_signals() -> Iterator[_Stop]:
    """SIGTERM and SIGINT set a flag instead of killing the process; the previous handlers come back on exit."""
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _train_epoch(
    run: _Run, trainer: Trainer, progress: Progress, batches: Iterator[Any], bar: Any, stop: _Stop
) -> tuple[_Epoch, bool]:
    """The steps left in the current epoch, with a timed mid-epoch checkpoint; True if a signal stopped the run."""
    t = run.plan.config.train
    epoch, last_save = _Epoch(), time.monotonic()
    trainer.model.train()
    while True:
        result = train_step(
            trainer.model,
            next(batches),
            trainer.loss_fn,
            trainer.optimizer,
            trainer.scaler,
            trainer.amp,
            grad_clip=t.grad_clip,
            accumulation=t.grad_accumulation,
        )
        trainer.scheduler.step()
        progress.step += 1
        now = time.perf_counter()
        epoch.step_seconds += now - epoch.last_tick  # data wait + step
        epoch.last_tick = now
        if result.skipped:
            epoch.skipped += 1
            log.warning("step %d skipped: non-finite loss or gradient", progress.step)
        else:
            epoch.losses.append(result.loss)
        bar.update(1)
        lr = trainer.scheduler.get_last_lr()[0]
        postfix = {"loss": f"{result.loss:.4f}", "epoch": progress.epoch + 1, "lr": f"{lr:.2e}"}
        if run.clock is not None:
            postfix["budget_left"] = format_seconds(run.clock.seconds_left())
            due = run.clock.after_step(progress.step)  # counts every step: refits divide the time by it
            # rank 0 decides when the first fit is due (its clock), so every rank joins the fit's broadcast
            if not run.clock.fitted and broadcast_flag(run.info, due):
                _fit(run, trainer, progress, bar)
        bar.set_postfix(postfix)
        epoch_done = progress.step % t.steps_per_epoch == 0
        if not epoch_done and run.info.is_main and time.monotonic() - last_save > t.checkpoint_minutes * 60:
            _checkpoint(run, trainer, progress)  # mid-epoch safety net; resuming repeats the epoch from its start step
            last_save, epoch.last_tick = time.monotonic(), time.perf_counter()
        stopped = broadcast_flag(run.info, stop.requested)
        if epoch_done or stopped:
            return epoch, stopped


def _end_epoch(run: _Run, trainer: Trainer, progress: Progress, epoch: _Epoch) -> None:
    """Count the epoch; on the main rank validate (when due), keep the best model and log metrics."""
    t = run.plan.config.train
    progress.epoch += 1
    if not run.info.is_main:
        return
    dice: list[float] | None = None
    if progress.epoch % progress.val_every == 0 or progress.epoch == progress.epochs_total:
        pad = background_value(run.plan.config.preprocess)
        started = time.monotonic()
        dice = validate(
            trainer.net, run.val_cases, t.patch_size, run.dataset.num_classes, run.device, amp=t.amp, pad_value=pad
        )
        if run.clock is not None:
            run.clock.validation_seconds.append(time.monotonic() - started)
        mean = float(np.nanmean(dice)) if not all(math.isnan(d) for d in dice) else 0.0
        if mean > progress.best:
            progress.best, progress.best_dice = mean, dice
            _save_model(run, trainer, progress, dice)
    row: dict[str, Any] = {
        "epoch": progress.epoch,
        "step": progress.step,
        "train_loss": float(np.mean(epoch.losses)) if epoch.losses else float("nan"),
        "lr": trainer.scheduler.get_last_lr()[0],
        "skipped_steps": epoch.skipped,
        "train_seconds": round(epoch.step_seconds, 3),
    }
    scores = dice or [0.0] * len(run.class_names)
    row.update({f"dice_{n}": (round(d, 4) if dice else "") for n, d in zip(run.class_names, scores, strict=True)})
    append_metrics(run.run_dir, row)
    if dice is not None:  # redrawn with each validation (and so after the last epoch); drawing takes ~0.5 s
        plot_progress(run.run_dir, run.class_names)


def _finish(run: _Run, trainer: Trainer, progress: Progress, interrupted: bool) -> None:
    """Main rank: the final checkpoint (interrupted), the model (if no validation ever ran) and the manifest."""
    if run.info.is_main:
        if interrupted:
            _checkpoint(run, trainer, progress)  # SIGTERM/SIGINT: keep every finished step
            log.warning("interrupted at step %d; resume with --resume", progress.step)
        elif progress.best < 0:  # no validation ran (e.g. epochs < val_every): keep the final weights
            _save_model(run, trainer, progress, [])
        config = _followed_config(run, progress)
        write_manifest(
            run.run_dir,
            {
                "config": to_dict(config),
                "dataset": str(run.options.dataset),
                "split": run.plan.split,
                "seed": config.train.seed,
                "epochs": progress.epoch,
                "steps": progress.step,
                "world_size": run.info.world_size,
                "best_dice": dict(zip(run.class_names, progress.best_dice, strict=True)),
                "model_dir": str(run.model_dir),
            },
        )
    barrier(run.info)
    shutdown(run.info)


def _checkpoint(run: _Run, trainer: Trainer, progress: Progress) -> None:
    state = TrainState(
        model=trainer.net.state_dict(),
        optimizer=trainer.optimizer.state_dict(),
        scheduler=trainer.scheduler.state_dict(),
        scaler=trainer.scaler.state_dict(),
        epoch=progress.epoch,
        step=progress.step,
        best=progress.best,
        best_dice=tuple(progress.best_dice),
        torch_rng=torch.get_rng_state(),
        cuda_rng=tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else (),
        epochs_total=0 if progress.epochs_total == OPEN_EPOCHS else progress.epochs_total,
        val_every=0 if progress.epochs_total == OPEN_EPOCHS else progress.val_every,
    )
    save_checkpoint(run.run_dir / CHECKPOINT_NAME, state)


def _save_model(run: _Run, trainer: Trainer, progress: Progress, dice: list[float]) -> None:
    """The model artefact: the weights and a :class:`ModelCard` describing them."""
    config, dataset = _followed_config(run, progress), run.dataset
    card = ModelCard(
        model=config.model,
        preprocess=config.preprocess,
        infer=config.infer,
        labels={0: "background", **dataset.labels},
        patch_size=config.train.patch_size,
        colors=label_colors(dataset.labels),
        in_channels=1,
        source_values=dict(dataset.source_values),
        fingerprint=run.plan.fingerprint,
        training=TrainingSummary(progress.epoch, progress.step, dict(zip(run.class_names, dice, strict=False))),
        ctseg_version=__version__,
        torch_version=torch.__version__,
    )
    save_model_files(run.model_dir, trainer.net.state_dict(), card)


def _batches(loader: DataLoader, device: torch.device) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
    for images, labels in loader:
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
