"""Run records: metrics (CSV and JSONL), the ``progress.png`` plot, and the run manifest."""

from __future__ import annotations

import csv
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

from ctseg._version import __version__
from ctseg.io.atomic import atomic_path, write_text_atomic


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """Append one epoch's metrics to ``metrics.jsonl`` and ``metrics.csv`` (header written once)."""
    with open(run_dir / "metrics.jsonl", "a") as fp:
        fp.write(json.dumps(row) + "\n")
    path = run_dir / "metrics.csv"
    new = not path.exists()
    with open(path, "a", newline="") as fp:
        writer = csv.DictWriter(fp, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All rows of ``metrics.jsonl`` (empty when none)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Drop rows after ``last_epoch`` (a resumed run repeats the epochs after its checkpoint)."""
    rows = [r for r in read_metrics(run_dir) if int(r["epoch"]) <= last_epoch]
    for name in ("metrics.jsonl", "metrics.csv"):
        (run_dir / name).unlink(missing_ok=True)
    for row in rows:
        append_metrics(run_dir, row)


def plot_progress(run_dir: Path, class_names: list[str]) -> None:
    """``progress.png``: training loss and validation Dice per class against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot([r["epoch"] for r in rows], [r["train_loss"] for r in rows], color="black", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    for name in class_names:
        pts = [(r["epoch"], r[f"dice_{name}"]) for r in rows if r.get(f"dice_{name}") not in (None, "")]
        if pts:
            ax2.plot(*zip(*pts, strict=True), marker="o", ms=3, label=f"Dice {name}")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("validation Dice")
    fig.legend(loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    with atomic_path(run_dir / "progress.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def git_commit(path: Path) -> str | None:
    """The git commit of the code, if it runs from a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """``manifest.json``: resolved config, data hash, seeds, versions, git commit, host."""
    import numpy
    import torch

    full = {
        **manifest,
        "versions": {
            "ctseg": __version__,
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "python": platform.python_version(),
        },
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "host": {"machine": platform.machine(), "system": platform.system()},
    }
    write_text_atomic(run_dir / "manifest.json", json.dumps(full, indent=2, default=str))
