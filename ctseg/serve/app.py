"""``ctseg serve`` assembled: models loaded once per device, the queue, workers, the DICOM node, the HTTP API.

:class:`Service` owns the parts and their threads; :func:`run_service` loads the models, starts the service and
runs uvicorn until SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctseg.errors import ServeError
from ctseg.infer.model import LoadedModel
from ctseg.serve.config import ServeConfig
from ctseg.serve.dicom_node import DicomNode, SeriesTracker
from ctseg.serve.jobs import JobQueue
from ctseg.serve.metrics import ServeMetrics
from ctseg.serve.worker import Sender, Worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    """Whether the service should get traffic, and each check's state."""

    ready: bool
    checks: dict[str, Any]


class Service:
    """The running parts of ``ctseg serve``.

    Parameters
    ----------
    config
        Settings (store, ports, limits, destinations, routes).
    models
        Device -> model name -> model loaded on that device; one worker runs per device.
    token
        The bearer token every HTTP endpoint but ``/healthz`` requires; ``None`` only with ``insecure_local``.
    """

    def __init__(
        self, config: ServeConfig, models: Mapping[str, Mapping[str, LoadedModel]], *, token: str | None
    ) -> None:
        if not models or not all(models.values()):
            raise ServeError("no model loaded; pass --model DIR (a folder with model.pt and model.json)")
        if token is None and not config.insecure_local:
            raise ServeError(
                "no API token: write one to a file and pass --token-file (or set CTSEG_SERVE_TOKEN); "
                "--insecure-local serves loopback clients without one"
            )
        if token is None and config.http_host not in ("127.0.0.1", "::1", "localhost"):
            raise ServeError(f"--insecure-local serves loopback only, but the HTTP host is {config.http_host}")
        names = list(next(iter(models.values())))
        if config.default_model and config.default_model not in names:
            raise ServeError(f"default_model {config.default_model!r} is not loaded; loaded: {', '.join(names)}")
        for route in config.routes:
            if route.model not in names:
                raise ServeError(f"routes: model {route.model!r} is not loaded; loaded: {', '.join(names)}")
        self.config, self.models, self.token, self.model_names = config, models, token, names
        for sub in ("received", "inputs", "results", "uploads"):
            (config.store / sub).mkdir(parents=True, exist_ok=True)
        self.queue = JobQueue(config.store / "queue.sqlite3", max_queue=config.max_queue)
        self.metrics = ServeMetrics()
        self.metrics.queue_length.set_function(lambda: self.queue.counts().get("queued", 0))
        self.metrics.disk_free.set_function(self.free_bytes)
        self.metrics.models_loaded.set(sum(len(m) for m in models.values()))
        self.metrics.start_series(names)
        self.tracker = SeriesTracker(
            config.store / "received", quiet_s=config.quiet_s, on_complete=self.series_complete
        )
        self.node = DicomNode(
            config, self.tracker, admit_new_series=self.refusal, on_instance=self.metrics.instances.inc
        )
        self.workers = [Worker(dev, m, self.queue, config, self.metrics) for dev, m in models.items()]
        self.sender = Sender(self.queue, config, self.metrics)
        self.dicom_port = 0
        self.started_at = time.time()

    def start(self) -> None:
        """Recover what a previous process left, then start the workers, the sender and the DICOM node."""
        requeued = self.queue.recover()
        orphans = self._recover_inputs()
        pending = self.tracker.recover()
        if requeued or orphans or pending:
            log.info("resumed %d running job(s), %d unqueued input(s), %d arriving series", requeued, orphans, pending)
        for worker in self.workers:
            worker.start()
        self.sender.start()
        self.tracker.start()
        self.dicom_port = self.node.start()

    def stop(self) -> None:
        """Stop accepting, let the running jobs' threads end, close the queue (pending work stays queued)."""
        self.node.stop()
        self.tracker.stop()
        threads: list[Worker | Sender] = [*self.workers, self.sender]
        for thread in threads:
            thread.stop_event.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=60)
        self.queue.close()

    def free_bytes(self) -> float:
        """Free bytes in the store's file system."""
        return float(shutil.disk_usage(self.config.store).free)

    def refusal(self) -> str:
        """Why a new study would be refused now (``""``: it would be accepted)."""
        if self.queue.is_full():
            return f"the queue is full (max_queue = {self.config.max_queue})"
        free = self.free_bytes()
        if free < self.config.min_free_disk_bytes:
            return f"{free / 2**30:.1f} GiB free in the store, below the floor min_free_disk_bytes"
        return ""

    def readiness(self) -> Readiness:
        """Models loaded, queue below its limit, disk above its floor."""
        checks = {
            "models_loaded": sum(len(m) for m in self.models.values()),
            "queue": self.queue.counts().get("queued", 0),
            "queue_limit": self.config.max_queue,
            "free_bytes": int(self.free_bytes()),
            "free_bytes_floor": self.config.min_free_disk_bytes,
        }
        ready = (
            checks["models_loaded"] > 0
            and checks["queue"] < checks["queue_limit"]
            and checks["free_bytes"] >= checks["free_bytes_floor"]
        )
        return Readiness(ready, checks)

    def route(self, folder: Path) -> str:
        """The model for the series in ``folder``: the first routing rule its description and body part match."""
        headers = {"series_description": "", "body_part": ""}
        first = next((p for p in sorted(folder.glob("*.dcm"))), None)
        if first is not None and self.config.routes:
            from pydicom import dcmread
            from pydicom.errors import InvalidDicomError

            try:
                ds = dcmread(first, stop_before_pixels=True, specific_tags=["SeriesDescription", "BodyPartExamined"])
                headers = {
                    "series_description": str(ds.get("SeriesDescription", "")),
                    "body_part": str(ds.get("BodyPartExamined", "")),
                }
            except (OSError, ValueError, InvalidDicomError) as exc:  # the job itself will report the bad file
                log.warning("series in %s: header unreadable for routing (%s); default model", folder.name, exc)
        for rule in self.config.routes:
            if all(re.search(getattr(rule, k), v, re.IGNORECASE) for k, v in headers.items()):
                return rule.model
        return self.config.default_model or self.model_names[0]

    def series_complete(self, folder: Path, received: float) -> None:
        """Move a completed series to ``inputs/<job id>`` and queue it (the rename comes first: a crash between
        the two leaves an input that :meth:`_recover_inputs` queues)."""
        job_id = uuid.uuid4().hex
        target = self.config.store / "inputs" / job_id
        os.replace(folder, target)
        try:
            folder.parent.rmdir()  # the study folder, when this was its last series
        except OSError:
            pass
        self._enqueue_input(target, received)

    def _enqueue_input(self, target: Path, received: float) -> None:
        model = self.route(target)
        job_id = self.queue.enqueue(
            source="dicom",
            input_path=target,
            model=model,
            received=received,
            key=target.name,
            job_id=target.name,
            bounded=False,
        )
        log.info(
            "job %s: queued a DICOM series of %d instance(s) for model %s",
            job_id,
            sum(1 for _ in target.glob("*.dcm")),
            model,
        )

    def _recover_inputs(self) -> int:
        """Queue the input folders a killed process moved but did not queue."""
        orphans = [d for d in (self.config.store / "inputs").iterdir() if d.is_dir() and not self.queue.has_key(d.name)]
        for folder in orphans:
            self._enqueue_input(folder, folder.stat().st_mtime)
        return len(orphans)


def load_models(model_dirs: list[Path], devices: tuple[str, ...]) -> dict[str, dict[str, LoadedModel]]:
    """Every model folder loaded once on each device; names are the folder names.

    Raises
    ------
    ServeError
        If two folders have the same name.
    """
    from ctseg.infer.model import load_model
    from ctseg.infer.pipeline import resolve_device

    names = [Path(d).resolve().name for d in model_dirs]
    if len(set(names)) != len(names):
        raise ServeError(f"model folder names must differ (they name the models): {', '.join(names)}")
    out: dict[str, dict[str, LoadedModel]] = {}
    for device in devices:
        dev = str(resolve_device(device))
        out[dev] = {name: load_model(d, device=dev) for name, d in zip(names, model_dirs)}
    return out


def run_service(
    config: ServeConfig,
    model_dirs: list[Path],
    *,
    token: str | None,
    ssl_certfile: Path | None = None,
    ssl_keyfile: Path | None = None,
) -> None:
    """Load the models, start the service and serve HTTP until SIGINT/SIGTERM (then stop cleanly)."""
    import uvicorn

    from ctseg.serve.http_api import create_app

    service = Service(config, load_models(model_dirs, config.devices), token=token)
    service.start()
    app = create_app(service)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.http_host,
            port=config.http_port,
            log_level="warning",
            access_log=False,  # request paths are counted in metrics; access logs would repeat job ids only
            ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
            ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        )
    )
    log.info(
        "ctseg serve: HTTP on %s:%d, DICOM %s on port %d",
        config.http_host,
        config.http_port,
        config.ae_title,
        service.dicom_port,
    )
    try:
        server.run()
    finally:
        service.stop()
