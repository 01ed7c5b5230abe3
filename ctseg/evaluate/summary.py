"""Per-class summary over cases: means and 95% confidence intervals.

Summary per class: the mean and a 95% confidence interval of the mean from the t-distribution
(``mean +- t(0.975, n-1) * sd / sqrt(n)``; deterministic, no resampling seed; NaN for n < 2; not clipped to
[0, 1], so a bound outside it flags too few cases) of Dice, HD95 and NSD
over the rows where the class is in the reference or the prediction: ``both_empty`` rows are counted but not
averaged (they say nothing about the class's quality). HD95 averages finite values only; the number of excluded
``inf`` values is reported (``hd95_n_excluded``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ctseg.evaluate.metrics import ClassMetrics

CONFIDENCE = 0.95


@dataclass(frozen=True)
class MetricRow:
    """One case and class: its metrics (``metrics.status`` says which empty/missing rule applied)."""

    case: str
    class_value: int
    label: str
    metrics: ClassMetrics


@dataclass(frozen=True)
class ClassSummary:
    """Per class, over cases: means and t-based 95% CIs (``(low, high)``, NaN for fewer than two values)."""

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
    """The mean and its two-sided t-interval at :data:`CONFIDENCE` (NaN bounds for fewer than two values)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        return float("nan"), (float("nan"), float("nan"))
    mean = float(np.mean(values))
    if n < 2:
        return mean, (float("nan"), float("nan"))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return mean, (mean - half, mean + half)


def summarize(rows: Sequence[MetricRow], labels: dict[int, str]) -> list[ClassSummary]:
    """Per class of ``labels``: means and 95% t-intervals over the rows (rules in the module docstring)."""
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
