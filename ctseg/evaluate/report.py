"""Evaluate a folder of predictions against a folder of references: per-case rows, a per-class summary, CSV files.

Cases are paired by name (:mod:`ctseg.evaluate.cases`), scored per class (:mod:`ctseg.evaluate.metrics`),
summarised with confidence intervals (:mod:`ctseg.evaluate.summary`) and written as tables
(:mod:`ctseg.evaluate.tables`).

A reference without a prediction is a failure: one row per class with status ``missing_prediction``, Dice 0,
NSD 0, HD95 inf (its volumes: reference measured, prediction NaN). Predictions without a reference are listed in
:attr:`Report.unmatched_predictions` and not scored.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctseg.errors import EvaluationError, OutputPathError
from ctseg.evaluate.cases import match_cases
from ctseg.evaluate.metrics import MM3_PER_ML, ClassMetrics, as_label_map, evaluate_case
from ctseg.evaluate.summary import ClassSummary, MetricRow, summarize
from ctseg.evaluate.tables import rows_csv, summary_csv
from ctseg.io.atomic import write_text_atomic
from ctseg.io.paths import refuse_output_over_inputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    """The result of :func:`evaluate_folders`; ``out``/``summary_out`` are the CSV files written (or None)."""

    rows: list[MetricRow]
    summary: list[ClassSummary]
    labels: dict[int, str]
    missing_predictions: list[str]
    unmatched_predictions: list[str]
    out: Path | None = None
    summary_out: Path | None = None

    def rows_csv(self) -> str:
        """Per case and class rows (CSV, columns :data:`~ctseg.evaluate.tables.ROW_COLUMNS`)."""
        return rows_csv(self.rows)

    def summary_csv(self) -> str:
        """One row per class: counts, means and CI bounds (CSV)."""
        return summary_csv(self.summary)


def _reference_volumes(ref_path: Path, labels: dict[int, str] | None) -> tuple[dict[int, float], set[int]]:
    """Volume (mL) per class of a reference whose prediction is missing, and the classes it holds."""
    from ctseg.io import read_image

    ref = read_image(ref_path)
    array = as_label_map(ref, f"reference {ref_path}")
    counts = np.bincount(array.ravel())
    voxel_ml = float(np.prod(ref.geometry.spacing_mm)) / MM3_PER_ML
    present = {int(v) for v in np.flatnonzero(counts) if v != 0}
    classes = present if labels is None else set(labels)
    return {c: float(counts[c]) * voxel_ml if c < len(counts) else 0.0 for c in classes}, present


def _check_out(out: Path, pred: Path, ref: Path) -> None:
    """Refuse CSV outputs that would overwrite an input (inputs are never modified)."""
    if out.is_dir():
        raise OutputPathError(f"--out {out} is a folder; --out names the CSV file to write, e.g. metrics.csv")
    for target in (out, out.with_name(f"{out.stem}_summary{out.suffix}")):
        refuse_output_over_inputs(target, [pred, ref])


def evaluate_folders(
    pred: Path,
    ref: Path,
    *,
    out: Path | None = None,
    labels: dict[int, str] | None = None,
    nsd_tolerance_mm: float = 2.0,
) -> Report:
    """Evaluate every reference case against its prediction; optionally write the CSV files.

    Parameters
    ----------
    pred, ref
        A label file, a ``<case>/mask.*`` folder, or a folder of either (matching: module docstring).
    out
        Per case and class rows go here (CSV, :data:`~ctseg.evaluate.tables.ROW_COLUMNS`), the per-class summary beside it as
        ``<stem>_summary.csv``; both written atomically. ``None``: nothing is written.
    labels
        Class value -> name; its keys are the classes evaluated. ``None``: every non-zero value found, named
        ``class_N``.
    nsd_tolerance_mm
        Tolerance of the normalised surface Dice, mm.

    Raises
    ------
    EvaluationError
        If no prediction matches any reference, or for files that are not label maps.
    OutputPathError
        If ``out`` (or its summary file) is or lies inside ``pred`` or ``ref``, or is a folder; checked first.
    """
    pred, ref = Path(pred), Path(ref)
    if out is not None:
        _check_out(Path(out), pred, ref)
    preds, refs = match_cases(pred, ref)
    matched = sorted(set(preds) & set(refs))
    missing = sorted(set(refs) - set(preds))
    unmatched = sorted(set(preds) - set(refs))
    if not matched:
        raise EvaluationError(
            f"no prediction in {pred} matches a reference in {ref} (references e.g. {missing[:3]}, predictions "
            f"e.g. {unmatched[:3]}); name predictions like the references (case1.nii.gz or case1/mask.nii.gz)"
        )
    if unmatched:
        log.warning("%d prediction(s) have no reference and are not scored: %s", len(unmatched), unmatched[:5])
    from ctseg.io import read_image

    results: dict[str, dict[int, ClassMetrics]] = {}
    missing_volumes: dict[str, dict[int, float]] = {}
    seen: set[int] = set(labels or {})
    for case in sorted(refs):
        if case in preds:
            log.info("evaluating %s", case)
            results[case] = evaluate_case(
                read_image(preds[case]), read_image(refs[case]), labels, nsd_tolerance_mm=nsd_tolerance_mm
            )
            seen |= set(results[case])
        else:
            missing_volumes[case], present = _reference_volumes(refs[case], labels)
            seen |= present if labels is None else set()
    names = dict(labels) if labels is not None else {c: f"class_{c}" for c in sorted(seen)}
    names.pop(0, None)
    rows: list[MetricRow] = []
    for case in sorted(refs):
        for value, label in sorted(names.items()):
            if case in results:
                # A class absent from both maps of this case was not computed: it is "both_empty" by definition.
                m = results[case].get(value, ClassMetrics(1.0, 0.0, 1.0, 0.0, 0.0, 0.0, "both_empty"))
            else:
                ref_ml = missing_volumes[case].get(value, 0.0)
                m = ClassMetrics(0.0, math.inf, 0.0, math.nan, ref_ml, math.nan, "missing_prediction")
            rows.append(MetricRow(case, value, label, m))
    report = Report(rows, summarize(rows, names), names, missing, unmatched)
    if out is None:
        return report
    out = Path(out)
    summary_out = out.with_name(f"{out.stem}_summary{out.suffix}")
    write_text_atomic(out, report.rows_csv())
    write_text_atomic(summary_out, report.summary_csv())
    return Report(rows, report.summary, names, missing, unmatched, out, summary_out)
