"""Deployment files (deploy/): they parse, use only options and metrics that exist, and Prometheus accepts them."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from ctseg.cli.serve_cmd import serve
from ctseg.cli.shard import shard_from_env
from ctseg.serve.config import load_serve_config
from ctseg.serve.metrics import ServeMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _serve_options() -> set[str]:
    return {opt for p in serve.params for opt in p.opts}


def _flag_names(args: list[str]) -> set[str]:
    return {a.split("=")[0] for a in args if a.startswith("--")}


def test_example_settings_load() -> None:
    config = load_serve_config(DEPLOY / "serve.yaml")
    assert config.destinations and config.routes and config.default_model == "abdomen"


def test_compose_runs_serve_with_prometheus_and_grafana() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"ctseg", "prometheus", "grafana"}
    command = compose["services"]["ctseg"]["command"]
    assert command[0] == "serve" and _flag_names(command[1:]) <= _serve_options()
    for volume in compose["services"]["grafana"]["volumes"] + compose["services"]["prometheus"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./") and "token" not in source:
            assert (DEPLOY / source).exists(), source


def test_kubernetes_serve_probes_and_scrape_annotations() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "k8s" / "serve.yaml").read_text())}
    pod = docs["Deployment"]["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    (container,) = pod["spec"]["containers"]
    assert "/readyz" in " ".join(container["readinessProbe"]["exec"]["command"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["args"][0] == "serve" and _flag_names(container["args"][1:]) <= _serve_options()
    assert {p["name"] for p in docs["Service"]["spec"]["ports"]} == {"http", "dicom"}


def test_indexed_job_shards_the_cohort() -> None:
    job = yaml.safe_load((DEPLOY / "k8s" / "predict-indexed-job.yaml").read_text())
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["JOB_COMPLETIONS"]) == spec["completions"]
    assert "--shard=$(JOB_COMPLETION_INDEX)/$(JOB_COMPLETIONS)" in container["args"]
    last = {"JOB_COMPLETION_INDEX": str(spec["completions"] - 1), **env}
    assert shard_from_env(last) == (spec["completions"] - 1, spec["completions"])


def test_dashboard_queries_use_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "ctseg.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    metrics = ServeMetrics()
    metrics.job_duration.labels("infer", "m").observe(1.0)
    metrics.jobs.labels("failed").inc()
    metrics.sends.labels("sent").inc()
    metrics.http_requests.labels("/", "200").inc()
    exported = set(re.findall(r"^([a-z_]+)", metrics.render().decode(), re.M))
    gpu = {"ctseg_gpu_utilization_ratio", "ctseg_gpu_memory_used_bytes", "ctseg_gpu_memory_total_bytes"}
    used = {m for e in exprs for m in re.findall(r"\b((?:ctseg|process)_[a-z_]+)", e)}
    assert used <= exported | gpu, used - exported - gpu
    text = " ".join(exprs)
    for needed in ("histogram_quantile(0.5", "histogram_quantile(0.99", "ctseg_queue_length", "status=\\\"failed\\\""):
        assert needed.replace("\\", "") in text
    assert used & gpu and "process_resident_memory_bytes" in used


def test_prometheus_accepts_config_and_rules(tmp_path: Path) -> None:
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    (tmp_path / "alerts.yml").write_text((DEPLOY / "prometheus" / "alerts.yml").read_text())
    (tmp_path / "ctseg_token").write_text("t" * 32)
    config = config.replace("/etc/prometheus/", f"{tmp_path}/")
    (tmp_path / "prometheus.yml").write_text(config)
    result = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert b"5 rules found" in result.stdout
