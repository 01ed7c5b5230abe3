"""``ctseg inspect``: every DICOM series under a path, which one would be read and why, as text or JSON.

Registered on the group in :mod:`ctseg.cli.main`; this module imports nothing from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ctseg.cli.options import dicom_options, read_options, user_errors

if TYPE_CHECKING:
    from ctseg.io.dicom import DicomInspection, ReadOptions, SeriesCheck


def series_dict(plan: SeriesCheck, chosen: bool) -> dict[str, Any]:
    """One series of the report: what it is, its grid, whether it is usable, its warnings and error."""
    return {
        "series_uid": plan.series_uid,
        "label": plan.label,
        "modality": plan.modality,
        "description": plan.description,
        "files": plan.n_files,
        "slices": len(plan.slices),
        "shape_zyx": list(plan.shape) if plan.shape else None,
        "spacing_zyx_mm": [round(v, 4) for v in plan.spacing_mm] if plan.spacing_mm else None,
        "orientation": "axial" if plan.usable and plan.is_axial else ("other" if plan.usable else None),
        "usable": plan.usable,
        "chosen": chosen,
        "warnings": [f"{r.value}: {m}" for r, m in plan.warnings],
        "skipped": list(plan.skipped),
        "error": str(plan.error) if plan.error else None,
        "error_reason": plan.error.reason.value if plan.error else None,
    }


def inspection_report(path: Path, found: DicomInspection) -> dict[str, Any]:
    """The JSON report of ``ctseg inspect --json``."""
    return {
        "path": str(path),
        "series": [series_dict(p, p is found.picked) for p in found.plans],
        "chosen": found.picked.series_uid if found.picked else None,
        "reason": found.reason,
        "ignored": [{"file": str(i.path), "reason": i.reason} for i in found.ignored],
    }


def _series_lines(s: dict[str, Any]) -> list[str]:
    mark = "*" if s["chosen"] else " "
    status = "usable" if s["usable"] else "NOT usable"
    geo = ""
    if s["shape_zyx"]:
        shape = "x".join(map(str, s["shape_zyx"]))
        geo = f"  shape {shape}  spacing {'x'.join(f'{v:g}' for v in s['spacing_zyx_mm'])} mm"
    lines = [f"[{mark}] {s['label']}  {s['modality'] or '?'}  {s['files']} files{geo}  {status}"]
    lines.append(f"      uid {s['series_uid']}")
    lines.extend(f"      warning {w}" for w in s["warnings"])
    if s["skipped"]:
        more = " ..." if len(s["skipped"]) > 1 else ""
        lines.append(f"      skipped {len(s['skipped'])} file(s): {s['skipped'][0]}{more}")
    if s["error"]:
        lines.append(f"      error {s['error']}")
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
    if found.picked:
        lines.append(f"chosen: {found.picked.label} ({found.reason})")
    else:
        lines.append("chosen: none (no usable series)")
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
    allow_gaps: bool,
    no_tilt_correction: bool,
    allow_non_ct: bool,
    keep_padding: bool,
) -> None:
    """List every DICOM series under PATH and say which one would be read, and why.

    For each series: modality, description, file count, shape and spacing (z, y, x), whether it is usable, and its
    warnings and errors. Selection rule: the usable axial CT series with the most slices, then the thinnest.

    \b
    Examples:
      ctseg inspect /data/study1
      ctseg inspect /data/study1 --json > series.json
      ctseg inspect /data/cohort --cases     # one case per study: names, folders, series
    """
    from ctseg.io.dicom import inspect_dicom

    options = read_options(allow_gaps, no_tilt_correction, allow_non_ct, keep_padding)
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
