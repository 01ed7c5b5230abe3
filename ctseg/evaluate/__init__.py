"""Evaluation of predicted label maps against references: per-class metrics and folder reports."""

from ctseg.evaluate.label_names import read_label_names
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
from ctseg.evaluate.report import Report, evaluate_folders
from ctseg.evaluate.summary import ClassSummary, MetricRow
from ctseg.evaluate.tables import format_summary

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
