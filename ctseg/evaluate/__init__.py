"""Evaluation of predicted label maps against references: per-class metrics and folder reports."""

from ctseg.evaluate.metrics import (
    ClassMetrics,
    EvaluationError,
    compute_class_metrics,
    dice,
    evaluate_case,
    hd95,
    nsd,
    surface_distances,
    volume_difference_ml,
)
from ctseg.evaluate.report import ClassSummary, MetricRow, Report, evaluate_folders, format_summary, read_label_names

__all__ = [
    "ClassMetrics",
    "ClassSummary",
    "EvaluationError",
    "MetricRow",
    "Report",
    "compute_class_metrics",
    "dice",
    "evaluate_case",
    "evaluate_folders",
    "format_summary",
    "hd95",
    "nsd",
    "read_label_names",
    "surface_distances",
    "volume_difference_ml",
]
