"""A real Prometheus (Debian ``prometheus``) scrapes ``ctseg serve``'s /metrics; after some jobs the P99 job latency
query returns a number."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import httpx

from ctseg.io.images import write_image
from ctseg.phantom import make_phantom
from ctseg.serve.config import ServeConfig
from ctseg.volume import Geometry
from tests.serve_support import TOKEN, free_port, in_process, stop, wait_for
from tests.stand_in import threshold_model

P99 = "histogram_quantile(0.99, sum by (le) (rate(ctseg_job_duration_seconds_bucket[5m])))"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
JOBS = 3


def _query(base: str, promql: str) -> list[dict]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10)
    response.raise_for_status()
    return response.json()["data"]["result"]  # type: ignore[no-any-return]


def test_prometheus_scrapes_job_latency(tmp_path: Path) -> None:
    spacing = (2.0, 2.0, 2.0)
    ct, _ = make_phantom(Geometry((10, 32, 32), spacing, (0.0, 0.0, 0.0)), seed=2)
    write_image(ct, tmp_path / "ct.nii.gz")
    config = ServeConfig(store=tmp_path / "store", min_free_disk_bytes=0)
    with in_process(config, {"stand_in": threshold_model(spacing)}) as srv:
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        target = srv.http.removeprefix("http://")
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: ctseg\n"
            f"    authorization: {{credentials_file: {token_file}}}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115  (closed with the process)
        )
        try:
            wait_for(lambda: _ready(base), 60, "Prometheus to be ready")
            wait_for(lambda: [r["value"][1] for r in _query(base, 'up{job="ctseg"}')] == ["1"], 60, "a scrape")
            with srv.client() as client:
                ids = [
                    client.post(
                        "/v1/jobs", files={"files": ("ct.nii.gz", (tmp_path / "ct.nii.gz").read_bytes())}
                    ).json()["id"]
                    for _ in range(JOBS)
                ]
                wait_for(lambda: all(client.get(f"/v1/jobs/{i}").json()["state"] == "done" for i in ids), 120, "jobs")
            wait_for(lambda: _p99(base) is not None, 30, "the P99 query to return a number")
            p99 = _p99(base)
            assert p99 is not None and 0 < p99 < 3600
            done = _query(base, 'ctseg_jobs_total{status="done"}')
            assert float(done[0]["value"][1]) == JOBS
        finally:
            stop(process)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _p99(base: str) -> float | None:
    result = _query(base, P99)
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value
