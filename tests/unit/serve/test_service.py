"""Service assembly: refusals at start, routing rules, the disk guard, and the DICOM port check."""

from __future__ import annotations

import socket
from pathlib import Path

import pydicom
import pytest

from ctseg.errors import ServeError
from ctseg.serve.app import Service, load_models
from ctseg.serve.config import Route, ServeConfig
from tests.serve_support import TOKEN, free_port, phantom_series, tiny_model
from tests.stand_in import threshold_model

MODELS = {"cpu": {"abdomen": threshold_model((2.0, 2.0, 2.0)), "chest": threshold_model((2.0, 2.0, 2.0))}}


def _config(tmp_path: Path, **kwargs: object) -> ServeConfig:
    return ServeConfig(store=tmp_path / "store", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "models", "token", "match"),
    [
        ({}, {}, TOKEN, "no model loaded"),
        ({}, MODELS, None, "no API token.*--token-file.*CTSEG_SERVE_TOKEN.*--insecure-local"),
        ({"insecure_local": True, "http_host": "0.0.0.0"}, MODELS, None, "loopback only, but the HTTP host is 0.0.0.0"),
        ({"default_model": "brain"}, MODELS, TOKEN, "default_model 'brain' is not loaded; loaded: abdomen, chest"),
        ({"routes": (Route("lung"),)}, MODELS, TOKEN, "routes: model 'lung' is not loaded"),
    ],
)
def test_refusals_at_start(tmp_path: Path, kwargs: dict, models: dict, token: str | None, match: str) -> None:
    with pytest.raises(ServeError, match=match):
        Service(_config(tmp_path, **kwargs), models, token=token)


def test_routes_pick_the_model(tmp_path: Path) -> None:
    rules = (Route("chest", series_description="thorax|chest"), Route("abdomen", body_part="abd"))
    service = Service(_config(tmp_path, routes=rules, default_model="abdomen"), MODELS, token=TOKEN)
    folder = tmp_path / "series"
    files = phantom_series(folder, shape=(2, 8, 8))
    for p in files:
        ds = pydicom.dcmread(p)
        ds.SeriesDescription = "CT THORAX 1mm"
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm")
    assert service.route(folder) == "chest"
    assert service.route(tmp_path) == "abdomen"  # nothing to read: the default
    service.queue.close()


def test_disk_floor_refuses_new_studies(tmp_path: Path) -> None:
    service = Service(_config(tmp_path, min_free_disk_bytes=2**62), MODELS, token=TOKEN)
    assert "below the floor min_free_disk_bytes" in service.refusal()
    assert not service.readiness().ready
    service.queue.close()


def test_busy_dicom_port_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("", port))
        taken.listen()
        service = Service(_config(tmp_path, dicom_port=port), MODELS, token=TOKEN)
        with pytest.raises(ServeError, match=f"cannot listen for DICOM on port {port}"):
            service.node.start()
        service.queue.close()


def test_model_names_must_differ(tmp_path: Path) -> None:
    a = tiny_model(tmp_path / "a" / "model")
    b = tiny_model(tmp_path / "b" / "model")
    with pytest.raises(ServeError, match="model folder names must differ"):
        load_models([a, b], ("cpu",))
    assert list(load_models([a], ("cpu",))["cpu"]) == ["model"]


def test_unreadable_header_routes_to_the_default(tmp_path: Path) -> None:
    rules = (Route("chest", series_description="chest"),)
    service = Service(_config(tmp_path, routes=rules, default_model="abdomen"), MODELS, token=TOKEN)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "1.2.3.dcm").write_bytes(b"not dicom at all")
    assert service.route(tmp_path / "bad") == "abdomen"
    service.queue.close()


def test_full_queue_refuses_new_series_with_a_dicom_failure_status(tmp_path: Path) -> None:
    from pynetdicom import AE

    service = Service(_config(tmp_path, max_queue=1, min_free_disk_bytes=0, dicom_port=0), MODELS, token=TOKEN)
    port = service.node.start()  # no worker: the queue does not drain
    try:
        service.queue.enqueue(source="http", input_path=tmp_path, model="abdomen", received=0.0)
        files = phantom_series(tmp_path / "series", shape=(2, 8, 8))
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", port, ae_title="CTSEG")
        assert assoc.is_established
        status = assoc.send_c_store(pydicom.dcmread(files[0]))
        assoc.release()
        assert status.Status == 0xA700  # "out of resources": the sender retries later
        assert not any((tmp_path / "store" / "received").iterdir())
        assert service.metrics.registry.get_sample_value("ctseg_dicom_instances_received_total") == 0
    finally:
        service.node.stop()
        service.queue.close()
