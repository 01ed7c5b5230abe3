"""Run every benchmark and write ``benchmarks/RESULTS.md`` (ratios, machine, date, versions).

Each benchmark runs as its own process, one after another (never two at once: they would share the CPU). The
README's benchmark table is taken from the file this writes.

Usage: ``python benchmarks/run_all.py [--quick] [--skip NAME ...]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "ingest": ["ingest.py"],
    "tilt": ["tilt_vs_dcm2niix.py"],
    "predict": ["predict.py"],
    "train": ["train.py"],
    "train_real_ct": ["train_real_ct.py"],
}
QUICK = {"ingest": ["--quick"], "predict": ["--quick"], "train": ["--steps", "10"],
         "train_real_ct": ["--epochs", "2", "--steps", "10"]}


def machine() -> str:
    import numpy
    import torch

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} CPU cores ({cpu or platform.processor()}), "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
            f"GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}; Python "
            f"{platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    sections = [f"# Benchmark results\n\n{datetime.date.today().isoformat()}, {machine()}.\n",
                "Each section is the benchmark's own printed output (`python benchmarks/<script>`).\n"]
    for name, script in BENCHMARKS.items():
        if name in args.skip:
            continue
        cmd = [sys.executable, str(HERE / script[0]), *(QUICK.get(name, []) if args.quick else [])]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        took = time.perf_counter() - t
        text = proc.stdout.strip() if proc.returncode == 0 else f"FAILED (exit {proc.returncode})\n{proc.stderr[-3000:]}"
        sections.append(f"## {name} (`{' '.join(Path(c).name if c.endswith('.py') else c for c in cmd[1:])}`, "
                        f"{took:.0f} s)\n\n```\n{text}\n```\n")
        print(f"{name}: {'ok' if proc.returncode == 0 else 'FAILED'} in {took:.0f} s", flush=True)
    args.out.write_text("\n".join(sections))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
