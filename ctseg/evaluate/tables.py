"""The evaluation as tables: CSV text of the rows and of the summary, and a compact text table for the terminal."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING

from ctseg.evaluate.metrics import ClassMetrics
from ctseg.evaluate.summary import CI_METHOD, CONFIDENCE, ClassSummary, MetricRow

if TYPE_CHECKING:
    from ctseg.evaluate.report import Report

ROW_COLUMNS = (
    "case",
    "class",
    "label",
    "dice",
    "hd95_mm",
    "nsd",
    "volume_pred_ml",
    "volume_ref_ml",
    "volume_diff_ml",
    "status",
)


def rows_csv(rows: Sequence[MetricRow]) -> str:
    """Per case and class rows, columns :data:`ROW_COLUMNS`."""
    table = [
        [r.case, r.class_value, r.label]
        + [_fmt(getattr(r.metrics, f.name)) for f in fields(ClassMetrics) if f.name != "status"]
        + [r.metrics.status]
        for r in rows
    ]
    return _csv(ROW_COLUMNS, table)


def summary_csv(summary: Sequence[ClassSummary]) -> str:
    """One row per class: counts, means, CI bounds and how the CIs were computed (``ci_method``)."""
    header = (
        "class,label,n_cases,n_scored,dice_mean,dice_ci_low,dice_ci_high,hd95_mean_mm,hd95_ci_low_mm,"
        "hd95_ci_high_mm,hd95_n_excluded,nsd_mean,nsd_ci_low,nsd_ci_high,ci_method"
    ).split(",")
    table = [
        [s.class_value, s.label, s.n_cases, s.n_scored]
        + [_fmt(v) for v in (s.dice_mean, *s.dice_ci, s.hd95_mean_mm, *s.hd95_ci_mm)]
        + [s.hd95_n_excluded]
        + [_fmt(v) for v in (s.nsd_mean, *s.nsd_ci)]
        + [f"{CONFIDENCE:.0%} {CI_METHOD}"]
        for s in summary
    ]
    return _csv(header, table)


def _fmt(value: float) -> str:
    return format(float(value), ".10g")  # "inf" and "nan" stay readable by float() and pandas


def _csv(header: Sequence[str], table: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(table)
    return buffer.getvalue()


def format_summary(report: Report) -> str:
    """A compact text table of the per-class summary, plus the missing and unmatched cases."""

    def cell(mean: float, ci: tuple[float, float], digits: int) -> str:
        if math.isnan(mean):
            return "-"
        if math.isnan(ci[0]):
            return f"{mean:.{digits}f}"
        return f"{mean:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"

    cases = len({r.case for r in report.rows})
    lines = [
        f"{cases} case(s), {len(report.missing_predictions)} without prediction; "
        f"mean [{CONFIDENCE:.0%} CI: {CI_METHOD}]"
    ]
    header = ("class", "label", "n", "Dice", "HD95 mm", "NSD")
    table = [
        (
            str(s.class_value),
            s.label,
            f"{s.n_scored}/{s.n_cases}",
            cell(s.dice_mean, s.dice_ci, 3),
            cell(s.hd95_mean_mm, s.hd95_ci_mm, 2) + (f" ({s.hd95_n_excluded} inf)" if s.hd95_n_excluded else ""),
            cell(s.nsd_mean, s.nsd_ci, 3),
        )
        for s in report.summary
    ]
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    if report.missing_predictions:
        lines.append(f"missing predictions (scored as failures): {', '.join(report.missing_predictions)}")
    if report.unmatched_predictions:
        lines.append(f"predictions without reference (not scored): {', '.join(report.unmatched_predictions)}")
    return "\n".join(lines)
