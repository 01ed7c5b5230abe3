"""Evaluate a folder of predictions against a folder of references: per-case rows, a per-class summary, CSV files.

Matching: a case's name is its file name without the image suffix (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``,
``.mha``, ``.mhd``) and without a trailing ``_0000`` (nnU-Net channel) or ``_mask``; a sub-folder holding
``mask.<suffix>`` (the ``ctseg predict`` layout ``PRED/<case>/mask.nii.gz``) is named after the folder. So
``REF/case1.nii.gz`` matches ``PRED/case1.nii.gz``, ``PRED/case1_0000.nrrd`` or ``PRED/case1/mask.nii.gz``. A
single file (or a single ``<case>/`` folder) is one case; two single files are compared whatever their names.

A reference without a prediction is a failure: one row per class with status ``missing_prediction``, Dice 0,
NSD 0, HD95 inf (its volumes: reference measured, prediction NaN). Predictions without a reference are listed in
:attr:`Report.unmatched_predictions` and not scored.

Summary per class: the mean and a 95% confidence interval of the mean from the t-distribution
(``mean +- t(0.975, n-1) * sd / sqrt(n)``; deterministic, no resampling seed; NaN for n < 2; not clipped to
[0, 1], so a bound outside it flags too few cases) of Dice, HD95 and NSD
over the rows where the class is in the reference or the prediction: ``both_empty`` rows are counted but not
averaged (they say nothing about the class's quality). HD95 averages finite values only; the number of excluded
``inf`` values is reported (``hd95_n_excluded``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ctseg.evaluate.metrics import MM3_PER_ML, ClassMetrics, EvaluationError, as_label_map, evaluate_case
from ctseg.io.atomic import full_suffix, write_text_atomic
from ctseg.io.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

#: Name endings that are conventions, not part of the case name.
CASE_SUFFIXES = ("_0000", "_mask")
#: File name (before the suffix) of a prediction inside ``PRED/<case>/``.
MASK_STEM = "mask"
CONFIDENCE = 0.95
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
        """Per case and class rows, columns :data:`ROW_COLUMNS`."""
        table = [
            [r.case, r.class_value, r.label]
            + [_fmt(getattr(r.metrics, f.name)) for f in fields(ClassMetrics) if f.name != "status"]
            + [r.metrics.status]
            for r in self.rows
        ]
        return _csv(ROW_COLUMNS, table)

    def summary_csv(self) -> str:
        """One row per class: counts, means and CI bounds."""
        header = (
            "class,label,n_cases,n_scored,dice_mean,dice_ci_low,dice_ci_high,hd95_mean_mm,hd95_ci_low_mm,"
            "hd95_ci_high_mm,hd95_n_excluded,nsd_mean,nsd_ci_low,nsd_ci_high"
        ).split(",")
        table = [
            [s.class_value, s.label, s.n_cases, s.n_scored]
            + [_fmt(v) for v in (s.dice_mean, *s.dice_ci, s.hd95_mean_mm, *s.hd95_ci_mm)]
            + [s.hd95_n_excluded]
            + [_fmt(v) for v in (s.nsd_mean, *s.nsd_ci)]
            for s in self.summary
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


def read_label_names(path: Path) -> dict[int, str]:
    """Class value -> name from an nnU-Net ``dataset.json`` (``labels``: name -> value) or a ctseg ``model.json``
    (``labels``: value -> name); a folder holding either file works too. Background (0) is left out.

    Raises
    ------
    EvaluationError
        If the file is missing, not JSON, or has no usable ``labels`` mapping.
    """
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in ("model.json", "dataset.json") if (path / n).is_file()]
        if not found:
            raise EvaluationError(f"{path} holds neither model.json nor dataset.json; pass one of those files")
        path = found[0]
    try:
        entries = json.loads(path.read_text())["labels"].items()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise EvaluationError(
            f"{path}: cannot read a 'labels' mapping ({exc}); expected dataset.json "
            '({"labels": {"liver": 1}}) or model.json ({"labels": {"1": "liver"}})'
        ) from exc
    names: dict[int, str] = {}
    for key, value in entries:
        if isinstance(value, int) and not isinstance(value, bool):
            names[value] = str(key)  # dataset.json: name -> value
        elif str(key).isdigit() and isinstance(value, str):
            names[int(key)] = value  # model.json: value -> name
        else:
            raise EvaluationError(
                f"{path}: label entry {key!r}: {value!r} is neither name -> integer value nor value -> name "
                "(region-based labels, lists of values, are not supported)"
            )
    names.pop(0, None)
    if not names:
        raise EvaluationError(f"{path}: 'labels' has no foreground class (values other than 0)")
    return names


def case_name(path: Path) -> str:
    """The case a label file or ``<case>/`` prediction folder belongs to (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return path.name
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)]
    if stem == MASK_STEM:
        return path.parent.name
    for ending in CASE_SUFFIXES:
        if stem.endswith(ending) and len(stem) > len(ending):
            return stem[: -len(ending)]
    return stem


def _mask_in(folder: Path) -> Path | None:
    hits = [folder / f"{MASK_STEM}{s}" for s in IMAGE_SUFFIXES if (folder / f"{MASK_STEM}{s}").is_file()]
    return hits[0] if hits else None


def find_cases(path: Path, *, role: str) -> dict[str, Path]:
    """Case name -> label file for a file, a ``<case>/mask.*`` folder, or a folder of either.

    Raises
    ------
    EvaluationError
        If nothing is found, a name appears twice, or a file is not an image format.
    """
    path = Path(path)
    if path.is_file():
        if full_suffix(path) not in IMAGE_SUFFIXES:
            raise EvaluationError(f"{role} {path} is not a label file; expected one of {', '.join(IMAGE_SUFFIXES)}")
        return {case_name(path): path}
    single = _mask_in(path)
    if single is not None:
        return {path.name: single}
    cases: dict[str, Path] = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        found = _mask_in(entry) if entry.is_dir() else entry if full_suffix(entry) in IMAGE_SUFFIXES else None
        if found is None:
            continue
        name = case_name(entry)
        if name in cases:
            raise EvaluationError(
                f"{role} folder {path}: case {name!r} appears twice ({cases[name].name}, {entry.name}); keep one"
            )
        cases[name] = found
    if not cases:
        hint = "; for an nnU-Net dataset pass its labelsTr folder" if (path / "labelsTr").is_dir() else ""
        raise EvaluationError(
            f"{role} folder {path} holds no label files ({', '.join(IMAGE_SUFFIXES)}) and no <case>/mask.* "
            f"folders{hint}"
        )
    return cases


def _match(pred: Path, ref: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    preds, refs = find_cases(pred, role="PRED"), find_cases(ref, role="REF")
    if len(preds) == 1 and len(refs) == 1 and (pred.is_file() or _mask_in(pred)) and ref.is_file():
        return {next(iter(refs)): next(iter(preds.values()))}, refs  # two single files: names need not agree
    return preds, refs


def _mean_ci(values: Sequence[float]) -> tuple[float, tuple[float, float]]:
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
        dice_mean, dice_ci = _mean_ci([m.dice for m in scored])
        hd_mean, hd_ci = _mean_ci(hd)
        nsd_mean, nsd_ci = _mean_ci([m.nsd for m in scored])
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
        Per case and class rows go here (CSV, :data:`ROW_COLUMNS`), the per-class summary beside it as
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
    """
    pred, ref = Path(pred), Path(ref)
    preds, refs = _match(pred, ref)
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


def format_summary(report: Report) -> str:
    """A compact text table of the per-class summary, plus the missing and unmatched cases."""

    def cell(mean: float, ci: tuple[float, float], digits: int) -> str:
        if math.isnan(mean):
            return "-"
        if math.isnan(ci[0]):
            return f"{mean:.{digits}f}"
        return f"{mean:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"

    cases = len({r.case for r in report.rows})
    lines = [f"{cases} case(s), {len(report.missing_predictions)} without prediction; mean [95% CI]"]
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
