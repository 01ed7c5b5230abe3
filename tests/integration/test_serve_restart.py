"""Jobs survive ``kill -9``: three studies queued, the server killed, restarted: all three complete, none is
queued twice, and each SEG reaches the PACS once. A send that failed (PACS down) is retried after a restart."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from tests.serve_support import (
    free_port,
    phantom_series,
    received_count,
    start_server,
    stop,
    storescp,
    storescu,
    tiny_model,
    wait_for,
)

STUDIES = 3


def _states(db: Path) -> dict[str, str]:
    if not db.is_file():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        return dict(con.execute("SELECT id, state FROM jobs").fetchall())


def _sends(db: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        return con.execute("SELECT state, attempts FROM sends").fetchall()


def _config(path: Path, pacs_port: int) -> Path:
    path.write_text(
        f"destinations:\n  - {{ae_title: PACS, host: 127.0.0.1, port: {pacs_port}}}\n"
        "min_free_disk_bytes: 0\nsend_backoff_s: 0.5\nsend_retries: 20\n"
    )
    return path


@pytest.mark.slow  # about 60 s on 2 cores: two server starts and three jobs
def test_kill_9_with_three_queued_studies(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "model")
    studies = tmp_path / "studies"
    for k in range(STUDIES):
        phantom_series(studies / f"s{k}", seed=k, shape=(24, 64, 64))
    store, pacs, db = tmp_path / "store", tmp_path / "pacs", tmp_path / "store" / "queue.sqlite3"
    with storescp(pacs) as pacs_port:
        config = _config(tmp_path / "serve.yaml", pacs_port)
        first = start_server(store, [model], config, quiet_s=0.3)
        try:
            assert storescu(studies, first.dicom_port) == 0  # one association, three series
            deadline = time.monotonic() + 60
            while len(_states(db)) < STUDIES and time.monotonic() < deadline:
                time.sleep(0.01)
            stop(first.process, kill=True)  # kill -9 as soon as the three jobs are queued
        finally:
            stop(first.process, kill=True)
        at_kill = _states(db)
        assert len(at_kill) == STUDIES and "done" not in at_kill.values(), at_kill
        assert received_count(pacs) == 0

        second = start_server(store, [model], config, quiet_s=0.3)
        try:
            wait_for(lambda: received_count(pacs) >= STUDIES, 180, "three SEGs at the PACS")
            time.sleep(1.5)  # a duplicate would arrive now
            with second.client() as client:
                jobs = client.get("/v1/jobs").json()
        finally:
            stop(second.process)
    assert received_count(pacs) == STUDIES
    assert sorted(j["state"] for j in jobs) == ["done"] * STUDIES and len(jobs) == STUDIES
    assert sorted(_sends(db)) == [("sent", 1)] * STUDIES
    referenced = {str(pydicom.dcmread(p).ReferencedSeriesSequence[0].SeriesInstanceUID) for p in pacs.iterdir()}
    sent = {str(pydicom.dcmread(next((studies / f"s{k}").iterdir())).SeriesInstanceUID) for k in range(STUDIES)}
    assert referenced == sent


@pytest.mark.slow  # about 30 s on 2 cores: two server starts
def test_failed_send_is_retried_after_restart(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "model")
    phantom_series(tmp_path / "study", shape=(8, 32, 32))
    store, pacs, db = tmp_path / "store", tmp_path / "pacs", tmp_path / "store" / "queue.sqlite3"
    pacs_port = free_port()  # nobody listens there yet
    config = _config(tmp_path / "serve.yaml", pacs_port)
    first = start_server(store, [model], config, quiet_s=0.3)
    try:
        assert storescu(tmp_path / "study", first.dicom_port) == 0
        wait_for(
            lambda: any(s == "pending" and n >= 1 for s, n in _sends(db)) if db.is_file() else False,
            120,
            "a failed send attempt",
        )
    finally:
        stop(first.process, kill=True)
    with storescp(pacs, port=pacs_port):
        second = start_server(store, [model], config, quiet_s=0.3)
        try:
            wait_for(lambda: received_count(pacs) == 1, 60, "the SEG after the restart")
        finally:
            stop(second.process)
    ((state, attempts),) = _sends(db)
    assert state == "sent" and attempts >= 2
    assert subprocess.run(["dcmdump", "-q", str(next(pacs.iterdir()))], capture_output=True).returncode == 0
