#!/usr/bin/env python
"""``ctseg inspect`` on a 2,000-file study: this tree against a baseline revision (goal: within 1.1x).

Choosing the series reads headers only, so ranking by kernel, image type, thickness and coverage must cost next to
nothing beside the folder scan. The study is written here with pydicom (no outside data): four series of small
(32x32) slices as a scanner exports them, so the scan is dominated by header parsing, not by pixel bytes:

- 800 axial ORIGINAL slices, soft kernel (B30f), 1 mm
- 800 axial ORIGINAL slices, bone kernel (B70f), 1 mm
- 300 coronal DERIVED/MPR slices, 2 mm
- 100 axial ORIGINAL slices, 5 mm

Each tree runs in its own process: the CLI is imported, one warm-up call fills the page cache, then
``ctseg inspect STUDY --json`` is invoked in-process (click's ``CliRunner``) ``--repeats`` times and the best and
median wall time and the median process CPU time are kept (CPU time is less disturbed by other load on a shared
machine). The baseline is ``git archive BASELINE ctseg`` unpacked to a temporary folder. Runs alternate
(baseline, this tree, baseline, this tree) so that machine load hits both alike.

Usage, from the repository root::

    python benchmarks/inspect_speed.py                      # baseline 21dda8b (before the series choice)
    python benchmarks/inspect_speed.py --baseline main --repeats 7 --keep /tmp/study2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (folder, count, kernel, image type, orientation (row, col cosines), thickness mm, description)
SERIES = (
    ("soft", 800, "B30f", ["ORIGINAL", "PRIMARY", "AXIAL"], ((1, 0, 0), (0, 1, 0)), 1.0, "ABD 1.0 B30f"),
    ("bone", 800, "B70f", ["ORIGINAL", "PRIMARY", "AXIAL"], ((1, 0, 0), (0, 1, 0)), 1.0, "ABD 1.0 B70f"),
    ("mpr", 300, "B30f", ["DERIVED", "SECONDARY", "MPR"], ((1, 0, 0), (0, 0, -1)), 2.0, "COR MPR 2.0"),
    ("thick", 100, "B30f", ["ORIGINAL", "PRIMARY", "AXIAL"], ((1, 0, 0), (0, 1, 0)), 5.0, "ABD 5.0 B30f"),
)

_TIMER = """
import json, statistics, sys, time
sys.path.insert(0, {tree!r})
from click.testing import CliRunner
from ctseg.cli.main import cli
import ctseg
assert ctseg.__file__.startswith({tree!r}), ctseg.__file__
runner = CliRunner()
args = ["inspect", {study!r}, "--json"]
first = runner.invoke(cli, args)
assert first.exit_code == 0, first.output
times, cpu = [], []
for _ in range({repeats}):
    t0, c0 = time.perf_counter(), time.process_time()
    runner.invoke(cli, args)
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
print(json.dumps({{"best": min(times), "median": statistics.median(times), "cpu": statistics.median(cpu),
                   "chosen": json.loads(first.output)["chosen"]}}))
"""


def write_study(folder: Path) -> int:
    """Write the 2,000-file study; return the file count."""
    from tests.synthetic import write_slices

    rng = np.random.default_rng(0)
    count = 0
    for number, (name, n, kernel, image_type, (row, col), thick, desc) in enumerate(SERIES, start=2):
        normal = np.cross(row, col)
        ipps = [tuple(k * thick * normal) for k in range(n)]
        pixels = [rng.integers(-1000, 1000, (32, 32)).astype(np.float64) for _ in range(n)]
        write_slices(
            folder / name,
            ipps,
            pixels,
            row_cos=row,
            col_cos=col,
            pixel_spacing=(0.7, 0.7),
            series_number=number,
            description=desc,
            extra={
                "ConvolutionKernel": kernel,
                "Manufacturer": "SIEMENS",
                "ImageType": image_type,
                "SliceThickness": f"{thick:g}",
            },
        )
        count += n
    return count


def unpack(rev: str, target: Path) -> Path:
    """``git archive REV ctseg`` unpacked into ``target``."""
    data = subprocess.run(["git", "archive", rev, "ctseg"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(target, filter="data")
    return target


def time_tree(tree: Path, study: Path, repeats: int) -> dict[str, float | str]:
    """Best and median seconds of ``ctseg inspect STUDY --json`` with ``tree``'s ctseg, in a fresh process."""
    code = _TIMER.format(tree=str(tree), study=str(study), repeats=repeats)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result: dict[str, float | str] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="21dda8b", help="git revision to compare with (default: 21dda8b)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per run (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per tree (default 2)")
    parser.add_argument("--keep", type=Path, help="write (or reuse) the study here instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        study = args.keep or Path(tmp) / "study"
        if not study.exists():
            t0 = time.perf_counter()
            n = write_study(study)
            print(f"wrote {n} files to {study} in {time.perf_counter() - t0:.1f} s")
        base = unpack(args.baseline, Path(tmp) / "baseline")
        runs: dict[str, list[dict[str, float | str]]] = {"baseline": [], "this tree": []}
        for _ in range(args.rounds):
            runs["baseline"].append(time_tree(base, study, args.repeats))
            runs["this tree"].append(time_tree(ROOT, study, args.repeats))
        medians, cpus = {}, {}
        for name, results in runs.items():
            best = min(float(r["best"]) for r in results)
            medians[name] = statistics.median(float(r["median"]) for r in results)
            cpus[name] = statistics.median(float(r["cpu"]) for r in results)
            print(
                f"{name:10s} best {best:.3f} s  median {medians[name]:.3f} s  median CPU {cpus[name]:.3f} s  "
                f"chosen {results[0]['chosen']}"
            )
        ratio = medians["this tree"] / medians["baseline"]
        cpu_ratio = cpus["this tree"] / cpus["baseline"]
        print(
            f"ratio this tree / {args.baseline}: wall (median) {ratio:.3f}, CPU (median) {cpu_ratio:.3f}; goal <= 1.1"
        )


if __name__ == "__main__":
    main()
