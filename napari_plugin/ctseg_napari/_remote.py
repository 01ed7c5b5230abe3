"""Segmentation on a ``ctseg serve`` server instead of a local model (for workstations without a GPU).

The image is uploaded as NIfTI (HU, its own grid), the job is polled, and the mask is downloaded and put back on
the image's grid. Cancelling stops waiting (the server finishes the job; nothing is added to the viewer).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ctseg.volume import Volume
from ctseg_napari._labels import complete_colors
from ctseg_napari._segment import SegmentationCancelled, SegmentationResult

#: Seconds between polls of the job, and the longest wait for one job.
POLL_S = 0.5
TIMEOUT_S = 3600.0
#: Geometry agreement (mm) between the uploaded image and the returned mask (NIfTI stores float32 affines).
ATOL_MM = 1e-3


def is_server_url(text: str) -> bool:
    """Whether the widget's model field holds a server URL rather than a model folder."""
    return text.strip().lower().startswith(("http://", "https://"))


def _check(response: Any, what: str) -> Any:
    from ctseg.errors import ServeError

    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        hint = " (set CTSEG_SERVE_TOKEN to the server's token)" if response.status_code == 401 else ""
        raise ServeError(f"{what}: the server answered {response.status_code}: {detail}{hint}")
    return response


def run_remote_segmentation(
    image: Volume,
    url: str,
    *,
    token: str | None = None,
    model: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> SegmentationResult:
    """Segment ``image`` (HU) on the ``ctseg serve`` at ``url``; the label map comes back on ``image``'s grid.

    Raises
    ------
    SegmentationCancelled
        When ``cancel`` is set while waiting.
    ServeError
        When the server refuses the upload, the job fails, or the mask is not on the image's grid.
    ImportError
        When httpx is not installed.
    """
    try:
        import httpx
    except ImportError:
        raise ImportError("pip install 'ctseg[serve]' (httpx) to segment on a server") from None
    from ctseg.errors import ServeError
    from ctseg.io.images import read_image, write_image

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with (
        tempfile.TemporaryDirectory(prefix="ctseg_remote_") as tmp,
        httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=60.0) as client,
    ):
        upload = Path(tmp) / "image.nii.gz"
        write_image(image, upload)
        models = _check(client.get("/v1/models"), "listing models").json()
        chosen = next((m for m in models if m["name"] == model), models[0]) if models else None
        if chosen is None:
            raise ServeError(f"the server at {url} has no model loaded")
        data = {"model": chosen["name"]}
        submitted = _check(
            client.post("/v1/jobs", files={"files": ("image.nii.gz", upload.read_bytes())}, data=data),
            "uploading the image",
        ).json()
        job = _wait(client, submitted["id"], progress, cancel)
        if job["state"] != "done":
            raise ServeError(f"the server's job {job['id']} failed: {job['error']}")
        mask_path = Path(tmp) / "mask.nii.gz"
        mask_path.write_bytes(_check(client.get(f"/v1/jobs/{job['id']}/mask"), "downloading the mask").content)
        mask = read_image(mask_path)
    if mask.geometry.shape != image.geometry.shape or not mask.geometry.is_close(image.geometry, atol_mm=ATOL_MM):
        raise ServeError(f"the server's mask has grid {mask.geometry}, not the image's {image.geometry}")
    names = {int(k): str(v) for k, v in chosen["labels"].items() if int(k)}
    colors = {int(k): (int(v[0]), int(v[1]), int(v[2])) for k, v in chosen.get("colors", {}).items()}
    labels = image.with_array(mask.array.astype("uint8"))
    return SegmentationResult(labels, names, complete_colors(names, colors, None))


def _wait(
    client: Any, job_id: str, progress: Callable[[int, int], None] | None, cancel: threading.Event | None
) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if cancel is not None and cancel.is_set():
            raise SegmentationCancelled
        job: dict[str, Any] = _check(client.get(f"/v1/jobs/{job_id}"), "polling the job").json()
        if job["state"] in ("done", "failed"):
            if progress is not None:
                progress(1, 1)
            return job
        if progress is not None:
            progress(0, 1)
        time.sleep(POLL_S)
    from ctseg.errors import ServeError

    raise ServeError(f"the server's job {job_id} did not finish within {TIMEOUT_S:.0f} s")
