"""Prometheus metrics of ``ctseg serve`` (prometheus_client), ``ctseg_`` prefix, base units (seconds, bytes).

Labels carry only bounded, non-identifying values (stage, model name, status, route template, HTTP code); never a
UID, a job id or any header value. Each service owns a registry, so several services (tests) can live in one
process.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: Stages of a job, in order; ``receive`` is first instance -> queued, ``send`` is one C-STORE of the SEG.
STAGES = ("receive", "queue", "read", "infer", "write", "send", "total")
#: Job latencies range from a second (small CT on a GPU) to tens of minutes (large CT on a CPU).
DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)


class GpuCollector(Collector):
    """GPU utilisation (ratio) and memory (bytes) per device through nvidia-ml-py; nothing when no GPU."""

    def __init__(self) -> None:
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception as exc:  # no library, no driver or no GPU: the gauges are simply absent
            log.debug("no GPU metrics: %s", exc)

    def collect(self) -> Any:
        """Yield the gauge families (called at every scrape)."""
        if self._nvml is None:
            return
        nv = self._nvml
        util = GaugeMetricFamily(
            "ctseg_gpu_utilization_ratio", "GPU busy fraction over the last sample", labels=["gpu"]
        )
        used = GaugeMetricFamily("ctseg_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        total = GaugeMetricFamily("ctseg_gpu_memory_total_bytes", "GPU memory installed", labels=["gpu"])
        for i in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(i)
            memory = nv.nvmlDeviceGetMemoryInfo(handle)
            util.add_metric([str(i)], nv.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
            used.add_metric([str(i)], float(memory.used))
            total.add_metric([str(i)], float(memory.total))
        yield from (util, used, total)


#: The stages a job's latency is recorded for (``ctseg_job_duration_seconds{stage=...}``).
STAGES = ("receive", "queue", "read", "infer", "write", "send", "total")


class ServeMetrics:
    """The service's metric objects, registered in their own :class:`CollectorRegistry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(GpuCollector())
        self.job_duration = Histogram(
            "ctseg_job_duration_seconds",
            "Seconds a job spent in each stage (receive, queue, read, infer, write, send, total)",
            ["stage", "model"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.jobs = Counter("ctseg_jobs", "Jobs finished, by status (done, failed)", ["status"], registry=self.registry)
        self.queue_length = Gauge("ctseg_queue_length", "Jobs waiting to run", registry=self.registry)
        self.running = Gauge("ctseg_jobs_running", "Jobs running now", registry=self.registry)
        self.instances = Counter(
            "ctseg_dicom_instances_received", "DICOM instances stored by the C-STORE SCP", registry=self.registry
        )
        self.sends = Counter(
            "ctseg_dicom_sends",
            "SEG C-STORE attempts, by status (sent, retry, failed)",
            ["status"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "ctseg_http_requests",
            "HTTP requests, by route template and status code",
            ["route", "code"],
            registry=self.registry,
        )
        self.disk_free = Gauge(
            "ctseg_store_free_bytes", "Free space in the store's file system", registry=self.registry
        )
        self.models_loaded = Gauge("ctseg_models_loaded", "Models held in memory", registry=self.registry)

    def start_series(self, model_names: list[str]) -> None:
        """Create every stage x model latency series and every status counter at zero.

        A series that first appears already holding its jobs gives ``rate()`` nothing to compare with, so the first
        jobs after a start would be invisible to latency queries; zeros from the start make them count.
        """
        for model in model_names:
            for stage in STAGES:
                self.job_duration.labels(stage, model)
        for status in ("done", "failed"):
            self.jobs.labels(status)

    def render(self) -> bytes:
        """The text exposition format of every metric."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
