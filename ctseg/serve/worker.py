"""Workers of ``ctseg serve``: one per device runs jobs with the models it loaded once; one sender delivers SEGs.

The case itself is ctseg.infer's case function, reached through :func:`process_case` only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ctseg.infer.case import CaseResult
from ctseg.infer.model import LoadedModel
from ctseg.serve.config import Destination, ServeConfig
from ctseg.serve.dicom_node import destination_name, send_file
from ctseg.serve.jobs import Job, JobQueue, Send
from ctseg.serve.metrics import ServeMetrics

log = logging.getLogger(__name__)

#: Seconds a worker sleeps when the queue is empty.
IDLE_S = 0.1


def process_case(job_id: str, input_path: Path, model: LoadedModel, results_dir: Path, device: str) -> CaseResult:
    """Segment one job's input into ``results_dir/<job_id>/`` with ``ctseg predict``'s case function and defaults.

    A case whose outputs are already committed for the same input and model (a job resumed after a crash) is not
    redone: :func:`~ctseg.infer.case.run_case` returns it with status ``skipped``. This is the service's only call
    into ctseg.infer's case processing.
    """
    from ctseg.infer.case import CaseSpec, PredictOptions, run_case
    from ctseg.io.paths import safe_case_name

    spec = CaseSpec(safe_case_name(job_id), input_path)
    return run_case(spec, model, results_dir, PredictOptions(device=device, progress=False))


class Worker(threading.Thread):
    """Runs queued jobs one at a time on one device."""

    def __init__(
        self,
        device: str,
        models: Mapping[str, LoadedModel],
        queue: JobQueue,
        config: ServeConfig,
        metrics: ServeMetrics,
    ) -> None:
        super().__init__(name=f"ctseg-worker-{device}", daemon=True)
        self.device, self.models, self.queue, self.config, self.metrics = device, models, queue, config, metrics
        self.stop_event = threading.Event()

    def run(self) -> None:
        """Claim and run jobs until stopped."""
        while not self.stop_event.is_set():
            job = self.queue.claim()
            if job is None:
                self.stop_event.wait(IDLE_S)
                continue
            self.metrics.running.inc()
            try:
                self._run_job(job)
            except Exception as exc:  # a bug in one case must not stop the worker; the job records it
                log.exception("job %s: unexpected error", job.id)
                self.queue.finish(job.id, ok=False, result={}, error=f"internal error {type(exc).__name__}: {exc}")
                self.metrics.jobs.labels("failed").inc()
            finally:
                self.metrics.running.dec()

    def _run_job(self, job: Job) -> None:
        model = self.models.get(job.model)
        if model is None:
            self.queue.finish(job.id, ok=False, result={}, error=f"model {job.model!r} is not loaded")
            self.metrics.jobs.labels("failed").inc()
            return
        log.info("job %s: started on %s (attempt %d)", job.id, self.device, job.attempts)
        result = process_case(job.id, job.input, model, self.config.store / "results", self.device)
        ok = result.status in ("ok", "skipped")
        sends: tuple[str, ...] = ()
        if ok and job.source == "dicom" and "seg.dcm" in result.outputs:
            sends = tuple(destination_name(d) for d in self.config.destinations)
        payload: dict[str, Any] = {
            "seconds": result.seconds,
            "warnings": result.warnings,
            "outputs": result.outputs,
            "series_uid": result.series_uid,
        }
        self.queue.finish(job.id, ok=ok, result=payload, error=result.error, sends=sends)
        self.metrics.jobs.labels("done" if ok else "failed").inc()
        if result.status == "ok":
            hist = self.metrics.job_duration
            started = job.started or job.created
            hist.labels("receive", job.model).observe(max(0.0, job.created - job.received))
            hist.labels("queue", job.model).observe(max(0.0, started - job.created))
            for stage in ("read", "infer", "write"):
                hist.labels(stage, job.model).observe(result.seconds.get(stage, 0.0))
            hist.labels("total", job.model).observe(time.time() - job.received)
        log.info("job %s: %s", job.id, "done" if ok else f"failed: {result.error}")


class Sender(threading.Thread):
    """Delivers each pending SEG by C-STORE, with exponential back-off; state is in the queue, so it survives."""

    def __init__(self, queue: JobQueue, config: ServeConfig, metrics: ServeMetrics) -> None:
        super().__init__(name="ctseg-sender", daemon=True)
        self.queue, self.config, self.metrics = queue, config, metrics
        self.destinations: dict[str, Destination] = {destination_name(d): d for d in config.destinations}
        self.stop_event = threading.Event()

    def run(self) -> None:
        """Send what is due until stopped."""
        while not self.stop_event.wait(IDLE_S):
            for send in self.queue.due_sends(time.time()):
                if self.stop_event.is_set():
                    return
                self._attempt(send)

    def _attempt(self, send: Send) -> None:
        job = self.queue.get(send.job_id)
        destination = self.destinations.get(send.dest)
        if job is None or destination is None:
            self.queue.record_send(send, ok=False, error="destination no longer configured")
            self.metrics.sends.labels("failed").inc()
            return
        t0 = time.perf_counter()
        try:
            seg = self.config.store / "results" / job.id / "seg.dcm"
            error = send_file(seg, destination, calling_ae=self.config.ae_title)
        except Exception as exc:  # network, file or protocol errors: this attempt failed, the send is retried
            log.debug("job %s: send attempt raised", job.id, exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
        if not error:
            self.queue.record_send(send, ok=True)
            self.metrics.sends.labels("sent").inc()
            self.metrics.job_duration.labels("send", job.model).observe(time.perf_counter() - t0)
            log.info("job %s: SEG sent to %s", job.id, destination.ae_title)
            return
        if send.attempts + 1 > self.config.send_retries:
            self.queue.record_send(send, ok=False, error=error)
            self.metrics.sends.labels("failed").inc()
            log.warning("job %s: SEG not sent to %s after %d attempts: %s", job.id, send.dest, send.attempts + 1, error)
            return
        delay = self.config.send_backoff_s * 2**send.attempts
        self.queue.record_send(send, ok=False, error=error, retry_at=time.time() + delay)
        self.metrics.sends.labels("retry").inc()
        log.warning("job %s: SEG send to %s failed (%s); retrying in %.0f s", job.id, send.dest, error, delay)
