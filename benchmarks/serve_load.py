#!/usr/bin/env python
"""Load test of ``ctseg serve`` against the batch CLI (``ctseg predict``) over the same studies, on loopback only.

Run from the repository root (bounded: ``--studies`` studies, at most ``--timeout`` seconds per phase)::

    python benchmarks/serve_load.py                     # 20 phantom studies, a tiny seeded model
    python benchmarks/serve_load.py --model models/abdomen --studies 20 --out serve_load.json

Steps
-----
1. Write ``--studies`` phantom CT series (``ctseg.phantom``; 24x96x96 voxels, 3x2x2 mm) and, unless ``--model`` is
   given, a tiny seeded U-Net model folder.
2. Batch: ``ctseg predict`` over all studies in one process (wall time includes start-up and model loading, as a
   user sees it). Throughput = studies / wall time; latency per case = its ``total_s`` in the manifest.
3. Service: ``ctseg serve`` (started and its model loaded before timing), with dcmtk's storescp as the PACS. Half
   the studies are sent concurrently over C-STORE (one ``storescu`` per study), the other half concurrently over
   HTTP (zip uploads). Throughput = studies / (last job finished - first send started); latency per job = finished -
   first instance received (DICOM: includes the quiet time ``--quiet-seconds``) or - upload received (HTTP).
   "Lost" counts jobs that did not finish ``done`` plus DICOM studies whose SEG did not reach the PACS once.
Goal: service throughput >= 0.9x the batch CLI, zero jobs lost.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "benchmark-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def make_inputs(work: Path, studies: int) -> tuple[list[Path], Path]:
    """Phantom DICOM studies and a tiny seeded model folder."""
    import torch

    from ctseg.config import InferConfig, ModelConfig, PreprocessConfig, to_dict
    from ctseg.io.dicom.write import write_ct_series
    from ctseg.io.model_files import save_model_files
    from ctseg.model import build_model
    from ctseg.phantom import make_phantom
    from ctseg.volume import Geometry

    folders = []
    for k in range(studies):
        ct, _ = make_phantom(Geometry((24, 96, 96), (3.0, 2.0, 2.0), (0.0, 0.0, 5.0 * k)), seed=k)
        folders.append(work / "studies" / f"study{k:02d}")
        write_ct_series(ct, folders[-1], description=f"phantom {k}")
    torch.manual_seed(0)
    model_cfg = ModelConfig(channels=(8, 16), strides=((2, 2, 2),))
    pre = PreprocessConfig(target_spacing_mm=(3.0, 2.0, 2.0), window_level_hu=0.0, window_width_hu=2000.0)
    meta = {
        "config": {"model": to_dict(model_cfg), "preprocess": to_dict(pre), "infer": to_dict(InferConfig(amp=False))},
        "labels": {"0": "background", "1": "liver"},
        "colors": {"1": [255, 0, 0]},
        "patch_size": [16, 64, 64],
        "in_channels": 1,
    }
    return folders, save_model_files(work / "model", build_model(model_cfg, 1, 2).state_dict(), meta)


def run_batch(folders: list[Path], model: Path, out: Path, timeout_s: float) -> dict[str, float]:
    """``ctseg predict`` over every study; wall time, throughput and per-case latencies."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "ctseg", "predict", *map(str, folders), "--model", str(model), "--out", str(out)]
    subprocess.run(cmd, check=True, env=_env(), timeout=timeout_s, capture_output=True)
    wall = time.perf_counter() - t0
    with open(out / "manifest.csv", newline="") as fp:
        rows = list(csv.DictReader(fp))
    latencies = [float(r["total_s"]) for r in rows if r["status"] == "ok"]
    return {
        "wall_s": wall,
        "ok": len(latencies),
        "throughput_per_min": 60 * len(latencies) / wall,
        **_quantiles(latencies),
    }


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_s": float("nan"), "p99_s": float("nan")}
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50_s": float(p50), "p99_s": float(p99)}


def _zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for f in sorted(folder.iterdir()):
            archive.write(f, f"{folder.name}/{f.name}")
    return buffer.getvalue()


def _start_server(work: Path, model: Path, pacs_port: int, quiet_s: float) -> tuple[subprocess.Popen[bytes], str, int]:
    http_port, dicom_port = _free_port(), _free_port()
    (work / "token").write_text(TOKEN)
    (work / "serve.yaml").write_text(
        f"destinations: [{{ae_title: PACS, host: 127.0.0.1, port: {pacs_port}}}]\nmin_free_disk_bytes: 0\n"
        "max_queue: 1000\nsend_backoff_s: 1.0\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "ctseg",
        "serve",
        "--model",
        str(model),
        "--store",
        str(work / "store"),
        "--http",
        f"127.0.0.1:{http_port}",
        "--dicom-port",
        str(dicom_port),
        "--config",
        str(work / "serve.yaml"),
        "--token-file",
        str(work / "token"),
        "--quiet-seconds",
        str(quiet_s),
    ]
    log = open(work / "serve.log", "wb")  # noqa: SIM115  (kept open for the server's lifetime)
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())
    base = f"http://127.0.0.1:{http_port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base, dicom_port
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"ctseg serve did not start; see {work / 'serve.log'}")


def run_service(folders: list[Path], model: Path, work: Path, quiet_s: float, timeout_s: float) -> dict[str, float]:
    """Send half the studies by C-STORE and half by HTTP, all at once; wait for every job and SEG."""
    sys.path.insert(0, str(ROOT))
    from tests.serve_support import dcmtk  # dcmtk's tools, not pynetdicom's apps of the same names

    pacs, pacs_port = work / "pacs", _free_port()
    pacs.mkdir(parents=True)
    scp_log = open(work / "storescp.log", "wb")  # noqa: SIM115
    scp = subprocess.Popen(
        [dcmtk("storescp"), "-v", "--aetitle", "PACS", "--output-directory", str(pacs), "+xa", str(pacs_port)],
        stdout=scp_log,
        stderr=subprocess.STDOUT,
    )
    server, base, dicom_port = _start_server(work, model, pacs_port, quiet_s)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    half = len(folders) // 2
    dicom, http = folders[:half], folders[half:]
    try:
        t0 = time.time()

        def send_dicom(folder: Path) -> int:
            cmd = [dcmtk("storescu"), "-aet", "BENCH", "-aec", "CTSEG", "+sd", "127.0.0.1", str(dicom_port), str(folder)]
            return subprocess.run(cmd, capture_output=True, timeout=timeout_s).returncode

        def send_http(folder: Path) -> int:
            data = _zip(folder)
            r = httpx.post(f"{base}/v1/jobs", files={"files": ("s.zip", data)}, headers=headers, timeout=timeout_s)
            return 0 if r.status_code == 202 else r.status_code

        with cf.ThreadPoolExecutor(len(folders)) as pool:
            codes = list(pool.map(send_dicom, dicom)) + list(pool.map(send_http, http))
        deadline = time.time() + timeout_s
        jobs: list[dict] = []
        while time.time() < deadline:
            jobs = httpx.get(f"{base}/v1/jobs", params={"limit": 1000}, headers=headers, timeout=30).json()
            seg_count = (work / "storescp.log").read_text().count("Received Store Request")
            if len(jobs) == len(folders) and all(j["state"] in ("done", "failed") for j in jobs) and seg_count >= half:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # a duplicate SEG would arrive now
        seg_count = (work / "storescp.log").read_text().count("Received Store Request")
    finally:
        server.terminate()
        server.wait(timeout=60)
        scp.terminate()
    done = [j for j in jobs if j["state"] == "done"]
    end = max((j["finished"] for j in done), default=time.time())
    latencies = [j["finished"] - j["received"] for j in done]
    by_source = {
        s: _quantiles([j["finished"] - j["received"] for j in done if j["source"] == s]) for s in ("dicom", "http")
    }
    return {
        "wall_s": end - t0,
        "ok": len(done),
        "send_failures": sum(c != 0 for c in codes),
        "lost": len(folders) - len(done) + abs(seg_count - half),
        "segs_received": seg_count,
        "throughput_per_min": 60 * len(done) / (end - t0),
        **_quantiles(latencies),
        "dicom_p50_s": by_source["dicom"]["p50_s"],
        "dicom_p99_s": by_source["dicom"]["p99_s"],
        "http_p50_s": by_source["http"]["p50_s"],
        "http_p99_s": by_source["http"]["p99_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=20, help="number of studies (2-100)")
    parser.add_argument("--model", type=Path, help="model folder (default: a tiny seeded U-Net)")
    parser.add_argument("--quiet-seconds", type=float, default=1.0, help="the service's series quiet time")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per phase")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    if not 2 <= args.studies <= 100:
        parser.error("--studies must be 2..100")
    print(
        f"{platform.node()}  {platform.processor() or platform.machine()}  {os.cpu_count()} CPUs  "
        f"python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="ctseg_serve_load_") as tmp:
        work = Path(tmp)
        folders, model = make_inputs(work, args.studies)
        model = args.model or model
        batch = run_batch(folders, model, work / "batch", args.timeout)
        service = run_service(folders, model, work / "service", args.quiet_seconds, args.timeout)
    print(f"{args.studies} studies (24x96x96 phantoms), quiet time {args.quiet_seconds} s")
    print(f"{'':24}{'done':>6}{'wall s':>9}{'per min':>9}{'P50 s':>8}{'P99 s':>8}")
    for name, r in (("ctseg predict (batch)", batch), ("ctseg serve (DICOM+HTTP)", service)):
        print(
            f"{name:24}{r['ok']:>6}{r['wall_s']:>9.1f}{r['throughput_per_min']:>9.1f}{r['p50_s']:>8.2f}{r['p99_s']:>8.2f}"
        )
    print(
        f"service latency P50/P99: DICOM {service['dicom_p50_s']:.2f}/{service['dicom_p99_s']:.2f} s, "
        f"HTTP {service['http_p50_s']:.2f}/{service['http_p99_s']:.2f} s"
    )
    ratio = service["throughput_per_min"] / batch["throughput_per_min"]
    print(
        f"throughput serve/batch: {ratio:.2f}x (goal >= 0.9x); jobs lost: {service['lost']} (goal 0); "
        f"SEGs received: {service['segs_received']}"
    )
    if args.out:
        args.out.write_text(json.dumps({"batch": batch, "service": service, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
