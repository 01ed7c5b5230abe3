"""``ctseg serve`` with real DICOM tools (dcmtk): echo, store a real and a synthetic CT, receive the SEG, compare it
with ``ctseg predict``; a calling AE title outside the allow-list is rejected."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from ctseg.cli.main import cli
from ctseg.io import read_volume
from ctseg.io.dicom_seg import read_dicom_seg
from tests.serve_support import dcmtk, phantom_series, serving, storescp, storescu, tiny_model, wait_for


def _write_config(path: Path, pacs_port: int) -> Path:
    path.write_text(
        "allowed_aes: [SCANNER]\n"
        f"destinations:\n  - {{ae_title: PACS, host: 127.0.0.1, port: {pacs_port}}}\n"
        "min_free_disk_bytes: 0\nsend_backoff_s: 0.5\n"
    )
    return path


def _sop_uids(folder: Path) -> set[str]:
    return {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in sorted(folder.iterdir()) if p.is_file()
    }


@pytest.mark.slow  # about 40 s on 2 cores: two server jobs and two `ctseg predict` runs
def test_dicom_node_round_trip(tmp_path: Path, shared_data: Path) -> None:
    real = shared_data / "itkelastix_chest_ct10" / "dicom"
    synthetic = tmp_path / "synthetic"
    phantom_series(synthetic)
    model = tiny_model(tmp_path / "model")
    pacs = tmp_path / "pacs"
    with (
        storescp(pacs) as pacs_port,
        serving(tmp_path / "store", [model], _write_config(tmp_path / "s.yaml", pacs_port)) as server,
    ):
        port = str(server.dicom_port)
        echo = subprocess.run([dcmtk("echoscu"), "-aet", "SCANNER", "-aec", "CTSEG", "127.0.0.1", port], capture_output=True)
        assert echo.returncode == 0, echo.stderr
        # A calling AE title outside the allow-list: association rejected, nothing stored.
        bad = subprocess.run([dcmtk("echoscu"), "-aet", "INTRUDER", "-aec", "CTSEG", "127.0.0.1", port], capture_output=True)
        assert bad.returncode != 0 and b"Rejected" in bad.stderr + bad.stdout
        assert storescu(synthetic, server.dicom_port, calling="INTRUDER") != 0
        assert not any((tmp_path / "store" / "received").iterdir())
        # A wrong called AE title is rejected too.
        assert storescu(synthetic, server.dicom_port, called="OTHER") != 0

        assert storescu(real, server.dicom_port) == 0
        assert storescu(synthetic, server.dicom_port) == 0
        wait_for(lambda: len(list(pacs.glob("SG*"))) == 2, 180, "two SEGs at the PACS")
        with server.client() as client:
            jobs = client.get("/v1/jobs").json()
        assert sorted(j["state"] for j in jobs) == ["done", "done"]
        assert all(j["source"] == "dicom" and j["seconds"]["infer"] > 0 for j in jobs)
    # No identifying value in the server's log (it logs job ids and counts), even with -v.
    log = server.log.read_text()
    for folder in (real, synthetic):
        ds = pydicom.dcmread(min(p for p in folder.iterdir() if p.is_file()), stop_before_pixels=True)
        for value in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.get("PatientID")):
            assert not value or str(value) not in log
    assert "job " in log  # the log is not empty
    segs = {str(pydicom.dcmread(p).ReferencedSeriesSequence[0].SeriesInstanceUID): p for p in pacs.glob("SG*")}
    for folder in (real, synthetic):
        series_uid = str(
            pydicom.dcmread(min(p for p in folder.iterdir() if p.is_file()), stop_before_pixels=True).SeriesInstanceUID
        )
        seg_path = segs[series_uid]
        seg = pydicom.dcmread(seg_path)
        referenced = {
            str(i.ReferencedSOPInstanceUID) for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        }
        assert referenced == _sop_uids(folder)
        assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
        # `ctseg predict` of the same series with the same model: the SEG equals its mask voxel for voxel.
        out = tmp_path / f"predict_{folder.name}"
        result = CliRunner().invoke(cli, ["predict", str(folder), "--model", str(model), "--out", str(out)])
        assert result.exit_code == 0, result.output
        mask = read_volume(next(out.glob("*/mask.nii.gz")))
        assert 0 < mask.array.mean() < 1  # both classes: the comparison is not trivial
        received, names = read_dicom_seg(seg_path, mask.geometry)
        assert names[1] == "liver"
        np.testing.assert_array_equal(received.array, mask.array)
