"""The status page at ``/`` rendered by headless Chromium: it shows the queue, recent jobs and latencies."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from skimage.io import imread

from ctseg.io.images import write_image
from ctseg.phantom import make_phantom
from ctseg.serve.config import ServeConfig
from ctseg.volume import Geometry
from tests.serve_support import in_process, screenshot, wait_for
from tests.stand_in import threshold_model

SPACING = (2.0, 2.0, 2.0)


def populate(srv_http: str, tmp_path: Path, n_ok: int = 3) -> None:
    """Run ``n_ok`` good jobs and one that fails (a normalised image the input check refuses)."""
    import httpx

    ct, _ = make_phantom(Geometry((10, 32, 32), SPACING, (0.0, 0.0, 0.0)), seed=3)
    write_image(ct, tmp_path / "ct.nii.gz")
    write_image(ct.with_array(ct.array.astype(np.float32) / 4000.0), tmp_path / "normalised.nii.gz")
    with httpx.Client(base_url=srv_http, timeout=30) as client:
        names = ["ct.nii.gz"] * n_ok + ["normalised.nii.gz"]
        ids = [client.post("/v1/jobs", files={"files": (n, (tmp_path / n).read_bytes())}).json()["id"] for n in names]
        wait_for(
            lambda: all(client.get(f"/v1/jobs/{i}").json()["state"] in ("done", "failed") for i in ids), 120, "jobs"
        )


def test_status_page_in_chromium(tmp_path: Path) -> None:
    config = ServeConfig(store=tmp_path / "store", min_free_disk_bytes=0, insecure_local=True)
    with in_process(config, {"abdomen": threshold_model(SPACING)}, token=None) as srv:
        populate(srv.http, tmp_path)
        time.sleep(0.2)
        png = screenshot(srv.http + "/", tmp_path / "status.png")
        with srv.client(token=None) as client:
            page = client.get("/").text
    image = imread(png)
    assert image.shape[:2] == (720, 1280)
    assert image[..., :3].std() > 10  # text and tables, not a blank or error page
    assert "Recent jobs" in page and page.count('class="ok">done') == 3 and page.count('class="bad">failed') == 1
