"""The HTTP API of ``ctseg serve`` (FastAPI; OpenAPI docs at ``/docs``).

Every endpoint but ``/healthz`` needs ``Authorization: Bearer <token>`` (or, with ``insecure_local`` and no token,
a loopback client). Uploads above ``max_upload_bytes`` get 413 before their body is read; a full queue gets 429
with ``Retry-After``; low disk 507.
"""

from __future__ import annotations

import hmac
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Match

from ctseg.errors import UploadError
from ctseg.serve.app import Service
from ctseg.serve.jobs import QueueFullError
from ctseg.serve.status_page import render_status
from ctseg.serve.uploads import save_upload

OPEN_PATHS = frozenset({"/healthz"})
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
#: Seconds a client told "queue full" should wait before retrying.
RETRY_AFTER_S = 30
MAX_LIST = 1000
OUTPUTS = {"mask": "mask.nii.gz", "seg": "seg.dcm", "stats": "stats.json", "preview": "preview.png"}
MEDIA = {"mask": "application/gzip", "seg": "application/dicom", "stats": "application/json", "preview": "image/png"}


def _route_of(app: FastAPI, request: Request) -> str:
    """The route template (``/v1/jobs/{job_id}``), never the raw path: metric labels stay bounded and id-free."""
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "other"))
    return "other"


def _authorised(service: Service, request: Request) -> bool:
    if service.token is None:
        return request.client is not None and request.client.host in LOOPBACK
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), service.token.encode())


def _install_middleware(app: FastAPI, service: Service) -> None:
    Handler = Callable[[Request], Awaitable[Response]]

    @app.middleware("http")
    async def guard(request: Request, call_next: Handler) -> Response:
        route = _route_of(app, request)
        if request.url.path not in OPEN_PATHS and not _authorised(service, request):
            response: Response = JSONResponse(
                {"detail": "missing or wrong bearer token"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        elif request.method == "POST" and request.url.path == "/v1/jobs":
            length = request.headers.get("content-length")
            if length is None:
                response = JSONResponse({"detail": "uploads need a Content-Length header"}, status_code=411)
            elif not length.isdigit() or int(length) > service.config.max_upload_bytes:
                response = JSONResponse(
                    {"detail": f"upload of {length} bytes exceeds the limit of {service.config.max_upload_bytes}"},
                    status_code=413,
                )
            else:
                response = await call_next(request)
        else:
            response = await call_next(request)
        service.metrics.http_requests.labels(route, str(response.status_code)).inc()
        return response


def _job_or_404(service: Service, job_id: str) -> Any:
    job = service.queue.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


def _submit(service: Service, files: list[UploadFile], model: str | None) -> dict[str, str]:
    model = model or service.config.default_model or service.model_names[0]
    if model not in service.model_names:
        raise HTTPException(422, f"unknown model {model!r}; loaded: {', '.join(service.model_names)}")
    refusal = service.refusal()
    if refusal:
        full = service.queue.is_full()
        raise HTTPException(429 if full else 507, refusal, headers={"Retry-After": str(RETRY_AFTER_S)})
    job_id = uuid.uuid4().hex
    folder = service.config.store / "uploads" / job_id
    try:
        path = save_upload(
            ((f.filename or "", f.file) for f in files), folder, limit_bytes=service.config.max_upload_bytes
        )
        service.queue.enqueue(source="http", input_path=path, model=model, received=time.time(), job_id=job_id)
    except UploadError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise HTTPException(400, str(exc)) from None
    except QueueFullError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise HTTPException(429, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    return {"id": job_id, "state": "queued", "url": f"/v1/jobs/{job_id}"}


def create_app(service: Service) -> FastAPI:
    """The FastAPI application of a started :class:`Service`."""
    app = FastAPI(title="ctseg serve", version="1", description="CT segmentation as a service (DICOM and HTTP).")
    _install_middleware(app, service)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Alive (no token needed)."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Ready for work: models loaded, queue below its limit, disk above its floor (else 503)."""
        state = service.readiness()
        return JSONResponse({"ready": state.ready, **state.checks}, status_code=200 if state.ready else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus text exposition."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    def models() -> list[dict[str, Any]]:
        """The loaded models: name, labels, display colours, patch size, weights' sha256."""
        first = next(iter(service.models.values()))
        return [
            {
                "name": n,
                "labels": m.labels,
                "colors": {k: list(v) for k, v in m.colors.items()},
                "patch_size": list(m.patch_size),
                "sha256": m.meta.get("sha256"),
            }
            for n, m in first.items()
        ]

    @app.post("/v1/jobs", status_code=202)
    def submit(files: list[UploadFile] = File(...), model: str | None = Form(None)) -> dict[str, str]:
        """Queue one case: DICOM files of one series, a zip of a study, or one NIfTI image."""
        return _submit(service, files, model)

    @app.get("/v1/jobs")
    def jobs(limit: int = 100) -> list[dict[str, Any]]:
        """The most recent jobs, newest first (at most ``limit``, 1-1000)."""
        if not 1 <= limit <= MAX_LIST:
            raise HTTPException(422, f"limit={limit}; expected 1..{MAX_LIST}")
        return [j.as_dict() for j in service.queue.recent(limit)]

    @app.get("/v1/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        """State, timings (seconds per stage), error, warnings and outputs of a job; its SEG sends."""
        found = _job_or_404(service, job_id)
        sends = [{"dest": s.dest, "state": s.state, "attempts": s.attempts} for s in service.queue.sends_of(job_id)]
        return {**found.as_dict(), "sends": sends}

    @app.get("/v1/jobs/{job_id}/{output}")
    def output(job_id: str, output: str) -> FileResponse:
        """One output of a finished job: ``mask`` (NIfTI), ``seg`` (DICOM SEG), ``stats`` (JSON), ``preview``."""
        found = _job_or_404(service, job_id)
        if output not in OUTPUTS:
            raise HTTPException(404, f"unknown output {output!r}; one of {', '.join(OUTPUTS)}")
        if found.state != "done":
            raise HTTPException(409, f"job {job_id} is {found.state}, not done")
        path = service.config.store / "results" / job_id / OUTPUTS[output]
        if OUTPUTS[output] not in (found.result.get("outputs") or []) or not path.is_file():
            raise HTTPException(404, f"job {job_id} has no {output} (e.g. no DICOM SEG for NIfTI input)")
        return FileResponse(Path(path), media_type=MEDIA[output], filename=f"{job_id}_{OUTPUTS[output]}")

    @app.get("/", response_class=HTMLResponse)
    def status() -> HTMLResponse:
        """A status page for a person: readiness, queue, recent jobs, latencies."""
        return HTMLResponse(render_status(service))

    return app
