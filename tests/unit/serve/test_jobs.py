"""The persistent job queue: order, bounds, recovery after a crash, sends recorded with the job's completion."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ctseg.serve.jobs import MAX_ATTEMPTS, JobQueue, QueueFullError


def _add(queue: JobQueue, key: str | None = None, *, bounded: bool = True) -> str:
    return queue.enqueue(
        source="dicom", input_path=Path("in"), model="m", received=time.time(), key=key, bounded=bounded
    )


def test_fifo_claim_and_finish_with_sends(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "q.sqlite3", max_queue=10)
    ids = [_add(queue) for _ in range(3)]
    job = queue.claim()
    assert job is not None and job.id == ids[0] and job.state == "running" and job.attempts == 1
    queue.finish(job.id, ok=True, result={"outputs": ["seg.dcm"]}, sends=("PACS@h:104",))
    assert queue.get(job.id).state == "done"  # type: ignore[union-attr]
    (send,) = queue.due_sends(time.time())
    queue.record_send(send, ok=False, error="down", retry_at=time.time() + 60)
    assert queue.due_sends(time.time()) == []
    (send,) = queue.due_sends(time.time() + 61)
    queue.record_send(send, ok=True)
    assert [(s.state, s.attempts) for s in queue.sends_of(job.id)] == [("sent", 2)]
    assert queue.counts() == {"done": 1, "queued": 2}


def test_bounded_and_deduplicated(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "q.sqlite3", max_queue=2)
    first = _add(queue, "series-a")
    assert _add(queue, "series-a") == first  # same key: the same job, never a second one
    _add(queue)
    assert queue.is_full()
    with pytest.raises(QueueFullError, match="holds 2 jobs .limit max_queue = 2.; retry later"):
        _add(queue)
    _add(queue, bounded=False)  # a DICOM series admitted at its first instance is never dropped
    assert queue.counts()["queued"] == 3


def test_recover_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    queue = JobQueue(path, max_queue=10)
    ids = [_add(queue) for _ in range(2)]
    assert queue.claim() is not None  # running when the process "dies"
    del queue  # no close(): as after kill -9
    reopened = JobQueue(path, max_queue=10)
    assert reopened.recover() == 1
    assert reopened.counts() == {"queued": 2}
    assert [reopened.claim().id for _ in range(2)] == ids  # type: ignore[union-attr]


def test_a_job_that_keeps_killing_the_server_is_failed(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "q.sqlite3", max_queue=10)
    job_id = _add(queue)
    for _ in range(MAX_ATTEMPTS):
        assert queue.claim() is not None
        queue.recover()
    job = queue.get(job_id)
    assert job is not None and job.state == "failed" and "stopped while this job ran" in job.error
