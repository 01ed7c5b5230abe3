"""Per-class summary over cases: means and 95% confidence intervals.

Summary per class: the mean and a 95% confidence interval of the mean of Dice, HD95 and NSD over the rows where
the class is in the reference or the prediction: ``both_empty`` rows are counted but not averaged (they say nothing
about the class's quality). HD95 averages finite values only; the number of excluded ``inf`` values is reported
(``hd95_n_excluded``).

The interval is a **bootstrap percentile interval** (:data:`CI_METHOD`): the 2.5th and 97.5th percentiles of the
means of :data:`BOOTSTRAP_RESAMPLES` resamples of the cases with replacement, from a fixed seed, so a rerun gives the
same numbers. Every resampled mean lies between the smallest and largest value, so the interval of a bounded score
stays inside its bounds (Dice and NSD in [0, 1], HD95 >= 0); a t-interval (``mean +- t * sd / sqrt(n)``) does not,
e.g. a Dice interval of [-0.206, 0.863] over three cases. With few cases the percentile interval is too narrow
(it cannot be wider than the values themselves): read it with ``n_scored``. NaN for fewer than two values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ctseg.evaluate.metrics import ClassMetrics

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
#: How the intervals are computed, as written in the reports.
CI_METHOD = f"bootstrap percentile, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}"
#: Resampled values held at once (bounds the memory of the bootstrap for many cases).
_BOOTSTRAP_CHUNK = 4_000_000


@dataclass(frozen=True)
class MetricRow:
    """One case and class: its metrics (``metrics.status`` says which empty/missing rule applied)."""

    case: str
    class_value: int
    label: str
    metrics: ClassMetrics


@dataclass(frozen=True)
class ClassSummary:
    """Per class, over cases: means and bootstrap 95% CIs (``(low, high)``, NaN for fewer than two values)."""

    class_value: int
    label: str
    n_cases: int
    n_scored: int
    dice_mean: float
    dice_ci: tuple[float, float]
    hd95_mean_mm: float
    hd95_ci_mm: tuple[float, float]
    hd95_n_excluded: int
    nsd_mean: float
    nsd_ci: tuple[float, float]


def mean_ci(values: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """The mean and its bootstrap percentile interval at :data:`CONFIDENCE` (NaN bounds for fewer than two values).

    Examples
    --------
    >>> mean, (low, high) = mean_ci([0.0, 0.75, 1.0])
    >>> round(mean, 4), 0.0 <= low <= mean <= high <= 1.0
    (0.5833, True)
    """
    n = len(values)
    if n == 0:
        return float("nan"), (float("nan"), float("nan"))
    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean())
    if n < 2:
        return mean, (float("nan"), float("nan"))
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    rows = max(1, _BOOTSTRAP_CHUNK // n)
    means = np.concatenate(
        [
            data[rng.integers(0, n, size=(min(rows, BOOTSTRAP_RESAMPLES - start), n))].mean(axis=1)
            for start in range(0, BOOTSTRAP_RESAMPLES, rows)
        ]
    )
    tail = (1.0 - CONFIDENCE) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    # Rounding in the means can put a bound an ulp outside the data: clip to the values' range.
    return mean, (float(max(low, data.min())), float(min(high, data.max())))


def summarize(rows: Sequence[MetricRow], labels: dict[int, str]) -> list[ClassSummary]:
    """Per class of ``labels``: means and 95% bootstrap intervals over the rows (rules in the module docstring)."""
    out = []
    for value, label in sorted(labels.items()):
        mine = [r.metrics for r in rows if r.class_value == value]
        scored = [m for m in mine if m.status != "both_empty"]
        hd = [m.hd95_mm for m in scored if math.isfinite(m.hd95_mm)]
        dice_mean, dice_ci = mean_ci([m.dice for m in scored])
        hd_mean, hd_ci = mean_ci(hd)
        nsd_mean, nsd_ci = mean_ci([m.nsd for m in scored])
        out.append(
            ClassSummary(
                class_value=value,
                label=label,
                n_cases=len(mine),
                n_scored=len(scored),
                dice_mean=dice_mean,
                dice_ci=dice_ci,
                hd95_mean_mm=hd_mean,
                hd95_ci_mm=hd_ci,
                hd95_n_excluded=len(scored) - len(hd),
                nsd_mean=nsd_mean,
                nsd_ci=nsd_ci,
            )
        )
    return out
