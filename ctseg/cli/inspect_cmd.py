"""``ctseg inspect``: every DICOM series under a path, which one would be read and why, as text or JSON.

Registered on the group in :mod:`ctseg.cli.main`; this module imports nothing from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ctseg.cli.options import ReadFlags, dicom_options, user_errors

if TYPE_CHECKING:
    from ctseg.io.dicom import DicomInspection, ReadOptions
    from ctseg.io.dicom.ranking import Candidate


def series_dict(c: Candidate, chosen: bool) -> dict[str, Any]:
    """One series of the report: what it is, its grid, kernel, image type, whether it is usable, why it lost."""
    plan = c.plan
    return {
        "series_uid": plan.series_uid,
        "series_number": c.series_number,
        "label": plan.label,
        "modality": plan.modality,
        "description": plan.description,
        "files": plan.n_files,
        "slices": c.slices,
        "kernel": c.facts.kernel,
        "kernel_class": c.kernel_class,
        "image_type": list(c.facts.image_type),
        "orientation": c.orientation or None,
        "thickness_mm": round(c.thickness_mm, 4) if c.thickness_mm is not None else None,
        "coverage_mm": round(c.coverage_mm, 1) if c.coverage_mm is not None else None,
        "contrast": c.facts.contrast,
        "shape_zyx": list(plan.shape) if plan.shape else None,
        "spacing_zyx_mm": [round(v, 4) for v in plan.spacing_mm] if plan.spacing_mm else None,
        "usable": plan.usable,
        "chosen": chosen,
        "verdict": c.verdict,
        "rule": c.rule,
        "warnings": [f"{r.value}: {m}" for r, m in plan.warnings],
        "skipped": list(plan.skipped),
        "error": str(plan.error) if plan.error else None,
        "error_reason": plan.error.reason.value if plan.error else None,
    }


def _order(c: Candidate) -> tuple[float, str]:
    """Series in SeriesNumber order (then UID), as a viewer lists them."""
    try:
        number = float(c.series_number)
    except ValueError:
        number = float("inf")
    return (number, c.series_uid)


def inspection_report(path: Path, found: DicomInspection) -> dict[str, Any]:
    """The JSON report of ``ctseg inspect --json``."""
    candidates = sorted(found.choice.candidates if found.choice else (), key=_order)
    return {
        "path": str(path),
        "series": [series_dict(c, c.plan is found.picked) for c in candidates],
        "chosen": found.picked.series_uid if found.picked else None,
        "reason": found.reason,
        "notes": [f"{r.value}: {m}" for r, m in found.notes],
        "ignored": [{"file": str(i.path), "reason": i.reason} for i in found.ignored],
    }


def _series_lines(s: dict[str, Any]) -> list[str]:
    mark = "*" if s["chosen"] else " "
    kernel = f"{s['kernel_class']}" + (f" ({s['kernel']})" if s["kernel"] else "")
    facts = [
        s["modality"] or "?",
        f"{s['files']} files",
        f"kernel {kernel}",
        "/".join(s["image_type"]) or "no ImageType",
    ]
    if s["orientation"]:
        facts.append(s["orientation"])
    if s["thickness_mm"] is not None:
        facts.append(f"{s['thickness_mm']:g} mm thick")
    if s["usable"]:
        facts.append(f"{s['slices']} slices over {s['coverage_mm']:g} mm")
    if s["contrast"]:
        facts.append(s["contrast"])
    lines = [f"[{mark}] {s['label']}: " + ", ".join(facts)]
    if s["shape_zyx"]:
        shape = "x".join(map(str, s["shape_zyx"]))
        lines.append(f"      shape {shape}  spacing {'x'.join(f'{v:g}' for v in s['spacing_zyx_mm'])} mm")
    lines.append(f"      uid {s['series_uid']}")
    lines.extend(f"      warning {w}" for w in s["warnings"])
    if s["skipped"]:
        more = " ..." if len(s["skipped"]) > 1 else ""
        lines.append(f"      skipped {len(s['skipped'])} file(s): {s['skipped'][0]}{more}")
    lines.append("      CHOSEN" if s["chosen"] else f"      lost: {s['verdict']}")
    return lines


def inspection_text(path: Path, found: DicomInspection, report: dict[str, Any]) -> list[str]:
    """The text report of ``ctseg inspect``, one line per entry."""
    lines = [f"{path}: {len(found.plans)} series, {len(found.ignored)} file(s) ignored"]
    for s in report["series"]:
        lines.extend(_series_lines(s))
    reasons: dict[str, int] = {}
    for item in found.ignored:
        reasons[item.reason] = reasons.get(item.reason, 0) + 1
    lines.extend(f"ignored {count} file(s): {reason}" for reason, count in sorted(reasons.items()))
    lines.extend(f"note {n}" for n in report["notes"])
    if found.picked:
        lines.append(f"chosen: {found.picked.label} ({found.reason})")
    else:
        lines.append(f"chosen: none ({found.reason})")
    return lines


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--cases", "show_cases", is_flag=True, help="List the cases `ctseg predict PATH` would make instead.")
@click.option("--all-series", is_flag=True, help="With --cases: as `ctseg predict --all-series` (one case per series).")
@dicom_options
@user_errors
def inspect(
    path: Path,
    as_json: bool,
    show_cases: bool,
    all_series: bool,
    series_uid: str | None,
    read_flags: ReadFlags,
) -> None:
    """List every DICOM series under PATH and say which one would be read, and why.

    For each series: modality, file count, kernel class, image type, orientation, slice thickness, slices and
    coverage, contrast phase, shape and spacing (z, y, x), warnings, and why it lost (or which rule removed it).
    Rule (docs/series_choice.md): localizers, projections and series failing their checks are removed; the rest
    rank by kernel class (soft first), axial, ORIGINAL before DERIVED/MPR, thickness in the band (0.5-5 mm), regular
    spacing, coverage, most slices, thinnest; ties go to the lower SeriesNumber, then UID.

    \b
    Examples:
      ctseg inspect /data/study1
      ctseg inspect /data/study1 --json > series.json
      ctseg inspect /data/study1 --prefer-kernel bone
      ctseg inspect /data/study1 --series "*venous*"
      ctseg inspect /data/cohort --cases     # one case per study: names, folders, series
    """
    from ctseg.io.dicom import inspect_dicom

    options = read_flags.options()
    if show_cases:
        _echo_cases(path, as_json, all_series, series_uid, options)
        return
    found = inspect_dicom(path, options=options, series_uid=series_uid)
    report = inspection_report(path, found)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for line in inspection_text(path, found, report):
        click.echo(line)


def _echo_cases(path: Path, as_json: bool, all_series: bool, series_uid: str | None, options: ReadOptions) -> None:
    """Print the cases ``ctseg predict PATH`` makes (same expansion and names), as text or JSON."""
    from ctseg.infer.batch import PredictOptions, expand_inputs
    from ctseg.io.paths import printable

    cases = expand_inputs([path], PredictOptions(series_uid=series_uid, read=options, all_series=all_series))
    rows = [{"case": c.name, "input": printable(c.path), "series_uid": c.series_uid, "reason": c.reason} for c in cases]
    if as_json:
        click.echo(json.dumps({"path": printable(path), "cases": rows}, indent=2))
        return
    click.echo(f"{printable(path)}: {len(rows)} case(s)")
    for row in rows:
        series = f"  [series {row['series_uid']}]" if row["series_uid"] else ""
        click.echo(f"  {row['case']} <- {row['input']}{series}")
