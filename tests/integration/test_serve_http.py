"""The HTTP API of ``ctseg serve`` (httpx against uvicorn on loopback): upload, poll, download; token, size limit,
full queue and zip-slip refusals; metrics labels free of ids."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import time
import zipfile
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from ctseg.io.images import write_image
from ctseg.phantom import make_phantom
from ctseg.serve.config import ServeConfig
from ctseg.volume import Geometry
from tests.serve_support import in_process, phantom_series
from tests.stand_in import THRESHOLD_HU, threshold_model

SPACING = (2.0, 2.0, 2.0)


def _config(tmp_path: Path, **kwargs: object) -> ServeConfig:
    return ServeConfig(store=tmp_path / "store", min_free_disk_bytes=0, **kwargs)  # type: ignore[arg-type]


def _models() -> dict:
    return {"stand_in": threshold_model(SPACING)}


def _poll(client: httpx.Client, job_id: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished after {timeout_s} s")


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_upload_poll_download_nifti(tmp_path: Path) -> None:
    ct, _ = make_phantom(Geometry((12, 40, 40), SPACING, (0.0, 0.0, 0.0)), seed=1)
    path = tmp_path / "ct.nii.gz"
    write_image(ct, path)
    with in_process(_config(tmp_path), _models()) as srv, srv.client() as client:
        response = client.post("/v1/jobs", files={"files": ("ct.nii.gz", path.read_bytes())})
        assert response.status_code == 202, response.text
        job = _poll(client, response.json()["id"])
        assert job["state"] == "done", job["error"]
        assert set(job["seconds"]) >= {"read", "infer", "write", "total"} and job["source"] == "http"
        mask = client.get(f"/v1/jobs/{job['id']}/mask")
        assert mask.status_code == 200
        image = nib.Nifti1Image.from_bytes(gzip.decompress(mask.content))
        expected = (ct.array > THRESHOLD_HU).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), expected)
        stats = client.get(f"/v1/jobs/{job['id']}/stats").json()
        assert stats["structures"]["dense"]["voxels"] == int(expected.sum())
        assert client.get(f"/v1/jobs/{job['id']}/seg").status_code == 404  # NIfTI input: no DICOM SEG
        assert client.get("/v1/jobs/0123/mask").status_code == 404
        assert client.get("/v1/models").json()[0]["name"] == "stand_in"
        assert client.get("/readyz").json()["ready"] is True
        page = client.get("/")
        assert page.status_code == 200 and job["id"][:12] in page.text
        metrics = client.get("/metrics").text
    assert 'ctseg_http_requests_total{code="202",route="/v1/jobs"} 1.0' in metrics
    assert 'route="/v1/jobs/{job_id}/{output}"' in metrics
    assert job["id"] not in metrics  # no ids (or any header value) in labels
    assert 'ctseg_jobs_total{status="done"} 1.0' in metrics
    assert "process_resident_memory_bytes" in metrics


def test_zip_of_a_dicom_study_gives_a_seg(tmp_path: Path) -> None:
    files = phantom_series(tmp_path / "series", shape=(10, 32, 32))
    ct = pydicom.dcmread(files[0])
    spacing = (3.0, float(ct.PixelSpacing[0]), float(ct.PixelSpacing[1]))
    archive = _zip({f"study/series/{p.name}": p.read_bytes() for p in files})
    with in_process(_config(tmp_path), {"stand_in": threshold_model(spacing)}) as srv, srv.client() as client:
        response = client.post("/v1/jobs", files={"files": ("study.zip", archive)})
        job = _poll(client, response.json()["id"])
        assert job["state"] == "done", job["error"]
        seg = pydicom.dcmread(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/seg").content))
    assert seg.Modality == "SEG"
    assert {str(i.ReferencedSOPInstanceUID) for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == {
        str(pydicom.dcmread(p).SOPInstanceUID) for p in files
    }
    # Stored under SOPInstanceUIDs, never under the uploaded names.
    stored = sorted(p.name for p in (tmp_path / "store" / "uploads" / job["id"]).iterdir())
    assert stored == sorted(f"{pydicom.dcmread(p).SOPInstanceUID}.dcm" for p in files)


def test_token_required_except_healthz(tmp_path: Path) -> None:
    with in_process(_config(tmp_path), _models(), start=False) as srv:
        with srv.client(token=None) as anonymous:
            assert anonymous.get("/healthz").status_code == 200
            for path in ("/v1/jobs", "/v1/models", "/metrics", "/readyz", "/", "/docs", "/v1/jobs/abc"):
                response = anonymous.get(path)
                assert response.status_code == 401, path
                assert response.headers["www-authenticate"] == "Bearer"
            assert anonymous.post("/v1/jobs", files={"files": ("a.dcm", b"x")}).status_code == 401
        with srv.client(token="wrong-token-0123456789") as wrong:
            assert wrong.get("/v1/models").status_code == 401
        with srv.client() as client:
            assert client.get("/v1/models").status_code == 200
            assert client.get("/docs").status_code == 200


def test_insecure_local_serves_loopback_without_token(tmp_path: Path) -> None:
    config = _config(tmp_path, insecure_local=True)
    with in_process(config, _models(), token=None, start=False) as srv, srv.client(token=None) as client:
        assert client.get("/v1/models").status_code == 200


def test_upload_over_the_limit_is_413(tmp_path: Path) -> None:
    with in_process(_config(tmp_path, max_upload_bytes=10_000), _models(), start=False) as srv, srv.client() as c:
        response = c.post("/v1/jobs", files={"files": ("big.dcm", bytes(20_000))})
        assert response.status_code == 413 and "exceeds the limit" in response.json()["detail"]
    assert not any((tmp_path / "store" / "uploads").iterdir())


def test_full_queue_is_429(tmp_path: Path) -> None:
    files = phantom_series(tmp_path / "series", shape=(4, 16, 16))
    with in_process(_config(tmp_path, max_queue=2), _models(), start=False) as srv, srv.client() as client:
        upload = {"files": [("files", (p.name, p.read_bytes())) for p in files]}
        assert [client.post("/v1/jobs", **upload).status_code for _ in range(2)] == [202, 202]  # type: ignore[arg-type]
        refused = client.post("/v1/jobs", **upload)  # type: ignore[arg-type]
        assert refused.status_code == 429 and refused.headers["retry-after"] == "30"
        assert "queue is full" in refused.json()["detail"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["queue"] == 2
        metrics = client.get("/metrics").text
    assert "ctseg_queue_length 2.0" in metrics


@pytest.mark.parametrize("name", ["../evil.dcm", "/abs/evil.dcm", "a/../../evil.dcm", "..\\evil.dcm"])
def test_zip_slip_is_refused(tmp_path: Path, name: str) -> None:
    dicom = phantom_series(tmp_path / "series", shape=(4, 16, 16))[0].read_bytes()
    archive = _zip({"ok/one.dcm": dicom, name: dicom})
    with in_process(_config(tmp_path), _models(), start=False) as srv, srv.client() as client:
        response = client.post("/v1/jobs", files={"files": ("study.zip", archive)})
        assert response.status_code == 400, response.text
        assert "outside the upload folder" in response.json()["detail"]
        assert client.get("/v1/jobs").json() == []
    assert not list(tmp_path.rglob("evil.dcm"))
    assert not any((tmp_path / "store" / "uploads").iterdir())


def test_not_dicom_or_nifti_is_refused(tmp_path: Path) -> None:
    with in_process(_config(tmp_path), _models(), start=False) as srv, srv.client() as client:
        response = client.post("/v1/jobs", files={"files": ("notes.txt", b"hello " * 100)})
        assert response.status_code == 400 and "neither DICOM" in response.json()["detail"]
        unknown = client.post("/v1/jobs", files={"files": ("a.nii", b"x")}, data={"model": "nope"})
        assert unknown.status_code == 422 and "unknown model" in json.dumps(unknown.json())


class _Broken(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("simulated fault in the network")


def test_a_crashing_case_fails_its_job_and_the_worker_goes_on(tmp_path: Path) -> None:
    ct, _ = make_phantom(Geometry((8, 24, 24), SPACING, (0.0, 0.0, 0.0)), seed=4)
    path = tmp_path / "ct.nii.gz"
    write_image(ct, path)
    broken = dataclasses.replace(threshold_model(SPACING), network=_Broken())
    models = {"stand_in": threshold_model(SPACING), "broken": broken}
    with in_process(_config(tmp_path), models) as srv, srv.client() as client:
        bad = client.post("/v1/jobs", files={"files": ("ct.nii.gz", path.read_bytes())}, data={"model": "broken"})
        good = client.post("/v1/jobs", files={"files": ("ct.nii.gz", path.read_bytes())})
        failed = _poll(client, bad.json()["id"])
        assert failed["state"] == "failed" and "RuntimeError: simulated fault" in failed["error"]
        assert _poll(client, good.json()["id"])["state"] == "done"
