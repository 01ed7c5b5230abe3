"""Whole-process start-up: ``ctseg convert`` of a DICOM series vs ``dcm2niix``, and what ctseg's imports cost.

Hyperfine-style: the two commands alternate, ``--runs`` times each after one warm-up (page cache warm for both;
ctseg's bytecode compiled, as an installed package's is; the output folder emptied before each run), and the median and minimum wall times are printed with their ratio (issue goal: ctseg <= 2x dcm2niix). The series
is written here (``--slices`` slices of 512x512 int16, uncompressed, as most scanners export) unless ``--series``
names one. Both write uncompressed ``.nii`` unless ``--gzip`` (deflating noise-filled synthetic slices would
dominate both). Then ``python -X importtime`` of the same ``ctseg convert`` lists the modules that cost most.

Usage: ``python benchmarks/startup.py [--slices 140] [--runs 10] [--series DIR]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_series(folder: Path, slices: int) -> Path:
    from ctseg.io.dicom.write import write_ct_series
    from ctseg.volume import Geometry, Volume

    g = Geometry((slices, 512, 512), (2.5, 0.7, 0.7))
    hu = np.random.default_rng(0).normal(0.0, 50.0, g.shape).astype(np.float32)
    write_ct_series(Volume(hu, g), folder)
    return folder


def _clear(folder: Path) -> None:
    """Empty the output folder (untimed): each command writes a new file, as on a first conversion. Replacing an
    existing output would time the file system freeing the old one (tens of ms for 70 MB), and dcm2niix would not
    replace it but add a suffixed file."""
    for p in folder.iterdir():
        p.unlink()


def timed_runs(commands: dict[str, list[str]], runs: int, out: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in commands}
    for cmd in commands.values():  # warm-up: page cache
        subprocess.run(cmd, check=True, capture_output=True)
    for _ in range(runs):
        for name, cmd in commands.items():
            _clear(out)
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t)
    return times


def import_costs(cmd: list[str], top: int) -> list[tuple[float, str]]:
    """The ``top`` top-level imports by cumulative seconds (``-X importtime``)."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], check=True, capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if cumulative.strip().isdigit() and not name.startswith("  "):  # top level only (no indent after the bar)
            rows.append((int(cumulative) / 1e6, name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=140)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--series", type=Path, help="A DICOM series folder to convert instead of a synthetic one.")
    parser.add_argument(
        "--gzip", action="store_true", help="Both write .nii.gz (default .nii: start-up and reading, not deflate)."
    )
    args = parser.parse_args()
    compare(args.slices, args.runs, args.series, gzip=args.gzip)


def compare(slices: int, runs: int, series: Path | None = None, *, gzip: bool = False) -> float:
    """Print the whole-process comparison and the import costs; return ctseg's median ratio to dcm2niix."""
    dcm2niix = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
    # An installed package has its bytecode compiled (pip does it at install); an editable install run with
    # PYTHONDONTWRITEBYTECODE set (as on this project's machines) would compile ctseg's modules on every start.
    import ctseg

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(ctseg.__file__).parent)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        series = series or write_series(work / "series", slices)
        out = work / "out"
        out.mkdir()
        suffix = "nii.gz" if gzip else "nii"
        commands = {
            "ctseg convert": [
                sys.executable,
                "-m",
                "ctseg",
                "convert",
                str(series),
                str(out / f"ct.{suffix}"),
                "--overwrite",
            ],
            "dcm2niix": [
                dcm2niix,
                "-z",
                "y" if gzip else "n",
                "-b",
                "n",
                "-o",
                str(out),
                "-f",
                "ref",
                str(series),
            ],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        times = timed_runs(commands, runs, out)
        print(f"{series}: {len(os.listdir(series))} files; {runs} runs each, alternating, after one warm-up")
        ref = statistics.median(times["dcm2niix"])
        for name, t in times.items():
            print(
                f"  {name:15s} median {statistics.median(t):6.3f} s  min {min(t):6.3f} s  "
                f"ratio to dcm2niix (median) {statistics.median(t) / ref:5.2f}x"
            )
        print("top-level imports of `ctseg convert` (cumulative s):")
        for seconds, name in import_costs(commands["ctseg convert"], 8):
            print(f"  {seconds:6.3f}  {name}")

        return statistics.median(times["ctseg convert"]) / ref

if __name__ == "__main__":
    main()
