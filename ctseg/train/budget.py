"""Training for a time budget: parse ``--time-budget``, measure the step time, fit the schedule to the time left.

How a budgeted run goes (``train.time_budget_minutes`` set):

1. The clock starts when ``ctseg train`` starts, so planning and caching count against the budget too.
2. The first :data:`WARMUP_STEPS` steps are not timed (worker start-up, first allocations); the next
   :data:`MEASURE_STEPS` are (fewer, at least :data:`MIN_MEASURE_STEPS`, once they take :data:`MEASURE_SHARE` of
   the budget; none once the budget is spent). Meanwhile the learning rate stays at its initial value (the horizon is
   open).
3. :func:`fit_schedule` then picks the number of epochs (a whole number, so the last epoch ends with a validation) and
   the validation cadence (:data:`VALIDATIONS` validations per run, at most :data:`MAX_VALIDATION_SHARE` of the
   budget) so that steps + validations + :data:`FINISH_RESERVE_S` fit in the time left. The cosine/poly horizon is
   that many steps.
4. After every epoch the fit is redone with what the run has measured so far (steps including data waits, metrics
   and checkpoints; validations timed separately). It shrinks the horizon whenever the run would overrun and grows
   it only with more than :data:`GROW_SLACK` to spare, so the learning-rate curve moves little; a growth never lifts
   the current learning rate by more than :data:`MAX_LR_RISE` of the initial one (late in a run of few long epochs,
   one more epoch would restart a rate that has decayed to zero: the run ends early instead).

The chosen horizon is saved in the checkpoint (and ``plan.yaml``), so ``--resume`` continues the same schedule.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ctseg.config import MAX_BUDGET_MINUTES, MIN_BUDGET_MINUTES
from ctseg.errors import ConfigError

WARMUP_STEPS = 2
MEASURE_STEPS = 8
MIN_MEASURE_STEPS = 2
MEASURE_SHARE = 0.05
VALIDATIONS = 10
MAX_VALIDATION_SHARE = 0.15
FINISH_RESERVE_S = 3.0
GROW_SLACK = 0.05
#: A growth of the horizon may lift the learning-rate multiplier at the current step by at most this much.
MAX_LR_RISE = 0.05
#: Forward pass + stitching of one validation window, as a fraction of one training step per sample.
FORWARD_SHARE = 0.5
#: A horizon no budget reaches, used while the step time is being measured.
OPEN_EPOCHS = 1 << 40

_UNITS = {"s": 1 / 60, "m": 1.0, "h": 60.0, "d": 24 * 60.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_duration(text: str) -> float:
    """``"90s"``, ``"20m"``, ``"1.5h"``, ``"1d"`` -> minutes.

    Raises
    ------
    ConfigError
        If ``text`` is not a number with one unit of s, m, h, d, or lies outside 10 s .. 30 d.

    Examples
    --------
    >>> parse_duration("2h"), parse_duration("90s")
    (120.0, 1.5)
    """
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"--time-budget {text!r}: expected a number and a unit s, m, h or d (e.g. 90s, 20m, 2h, 1d)")
    minutes = float(match.group(1)) * _UNITS[match.group(2)]
    if not MIN_BUDGET_MINUTES <= minutes <= MAX_BUDGET_MINUTES:
        raise ConfigError(f"--time-budget {text!r}: expected between 10s and 30d")
    return minutes


def format_seconds(seconds: float) -> str:
    """``754.2`` -> ``"12:34"`` (``h:mm:ss`` from an hour)."""
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@dataclass(frozen=True)
class Schedule:
    """How many epochs a run trains and how often it validates."""

    epochs: int
    val_every: int


def _validations(first_epoch: int, epochs: int, val_every: int) -> int:
    """Validations in epochs ``first_epoch..epochs``: every ``val_every``-th, and always the last."""
    if epochs < first_epoch:
        return 0
    regular = epochs // val_every - (first_epoch - 1) // val_every
    return regular + (0 if epochs % val_every == 0 else 1)


def fit_schedule(
    *,
    seconds_left: float,
    step_s: float,
    validation_s: float,
    steps_per_epoch: int,
    done_steps: int,
    val_every: int | None = None,
) -> Schedule:
    """The most epochs whose remaining steps and validations fit in ``seconds_left`` (at least the current epoch).

    ``val_every`` keeps a cadence chosen before; ``None`` chooses one: about :data:`VALIDATIONS` validations per
    run, fewer if they would take more than :data:`MAX_VALIDATION_SHARE` of the time.

    Examples
    --------
    >>> fit_schedule(seconds_left=100.0, step_s=0.1, validation_s=1.0, steps_per_epoch=10, done_steps=0)
    Schedule(epochs=90, val_every=10)
    """
    step_s, validation_s = max(step_s, 1e-6), max(validation_s, 0.0)
    current = max(1, math.ceil(done_steps / steps_per_epoch))  # the epoch under way (or just finished) counts
    upper = max(current, int((done_steps + max(seconds_left, 0.0) / step_s) // steps_per_epoch))
    if val_every is None:
        budget_validations = MAX_VALIDATION_SHARE * max(seconds_left, 0.0) / validation_s if validation_s else upper
        val_every = max(1, math.ceil(upper / VALIDATIONS), math.ceil(upper / max(budget_validations, 1.0)))
    first = done_steps // steps_per_epoch + 1  # the first epoch not yet validated-or-skipped

    def cost(epochs: int) -> float:
        return (epochs * steps_per_epoch - done_steps) * step_s + _validations(first, epochs, val_every) * validation_s

    lo, hi = current, upper  # cost grows with epochs: the largest that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= seconds_left:
            lo = mid
        else:
            hi = mid - 1
    return Schedule(lo, val_every)


def validation_estimate_s(
    shapes: list[tuple[int, ...]], patch: tuple[int, int, int], step_s: float, batch_size: int
) -> float:
    """Seconds one validation should take before one is timed: sliding windows (overlap 0.5) x a forward pass."""
    windows = 0
    for shape in shapes:
        n = 1
        for size, p in zip(shape, patch, strict=True):
            n *= 1 if size <= p else math.ceil((size - p) / (p / 2)) + 1
        windows += n
    return windows * FORWARD_SHARE * step_s / max(batch_size, 1)


@dataclass
class BudgetClock:
    """The measurements and the fitted schedule of a budgeted run (one per process, never saved).

    ``deadline`` is a :func:`time.monotonic` time, ``budget_s`` the whole budget; ``fitted`` becomes True once the
    runner has fitted the schedule.
    """

    deadline: float
    budget_s: float
    start_step: int
    measure_from: float | None = None  # monotonic time at which timing starts (after the warm-up steps)
    measured_steps: int = 0
    validation_seconds: list[float] = field(default_factory=list)
    fitted: bool = False

    def seconds_left(self) -> float:
        """Seconds until the deadline (negative once past it)."""
        return self.deadline - time.monotonic()

    def after_step(self, step: int) -> bool:
        """Count a finished step; True when the measurement is complete and the first fit is due."""
        if step - self.start_step == WARMUP_STEPS:
            self.measure_from = time.monotonic()
        elif self.measure_from is not None:
            self.measured_steps += 1
        if self.fitted:
            return False
        if self.seconds_left() <= 0:
            return True  # already out of time (slow set-up, or a busy CPU): fit now, which ends the current epoch
        if self.measure_from is None:
            return False
        long_enough = time.monotonic() - self.measure_from >= MEASURE_SHARE * self.budget_s
        return self.measured_steps >= MEASURE_STEPS or (self.measured_steps >= MIN_MEASURE_STEPS and long_enough)

    def step_seconds(self) -> float:
        """Mean wall time of a timed step, validations excluded (data waits, metrics and checkpoints included)."""
        if self.measure_from is None or self.measured_steps == 0:
            return 0.0
        elapsed = time.monotonic() - self.measure_from - sum(self.validation_seconds)
        return max(elapsed, 0.0) / self.measured_steps


def bounded_growth(epochs_now: int, epochs_fitted: int, rise: Callable[[int], float]) -> int:
    """The most epochs, between ``epochs_now`` and ``epochs_fitted``, whose horizon lifts the learning rate at the
    current step by at most :data:`MAX_LR_RISE` (``rise(epochs)`` gives that lift); ``epochs_now`` if none does.

    Examples
    --------
    >>> bounded_growth(3, 6, lambda e: 0.03 * (e - 3))  # 4 and 5 epochs lift it by 0.03 and 0.06
    4
    """
    for epochs in range(epochs_fitted, epochs_now, -1):
        if rise(epochs) <= MAX_LR_RISE:
            return epochs
    return epochs_now
