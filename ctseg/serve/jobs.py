"""The persistent job queue of ``ctseg serve``: one SQLite file in the store, in WAL mode.

Survival rules (a ``kill -9`` at any instant loses nothing and repeats nothing that is visible):

* every state transition is committed *before* the side effect it allows (a job is ``running`` before the worker
  starts it; a send is recorded ``pending`` in the same transaction that marks the job ``done``);
* on start, :meth:`JobQueue.recover` puts ``running`` jobs back in the queue; the case function skips a case whose
  outputs are already committed, so a half-done job is finished, not redone twice;
* a SEG is sent from its file on disk, so a send repeated after a crash between the peer's acceptance and our
  ``sent`` record carries the same SOPInstanceUID, which the peer recognises as the same instance.

Job states: ``queued`` -> ``running`` -> ``done`` | ``failed``. Send states: ``pending`` -> ``sent`` | ``failed``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctseg.errors import ServeError

#: A job whose worker died this many times (e.g. the process was killed while it ran) is failed, not retried.
MAX_ATTEMPTS = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    source TEXT NOT NULL,
    input TEXT NOT NULL,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    key TEXT UNIQUE,
    attempts INTEGER NOT NULL DEFAULT 0,
    received REAL NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS sends (
    job_id TEXT NOT NULL,
    dest TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    sent_at REAL,
    error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, dest)
);
"""


@dataclass(frozen=True)
class Job:
    """One row of the queue (no patient data: paths are built from UIDs or job ids)."""

    id: str
    source: str
    input: Path
    model: str
    state: str
    attempts: int
    received: float
    created: float
    started: float | None
    finished: float | None
    error: str
    result: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON the HTTP API returns for this job."""
        return {
            "id": self.id,
            "source": self.source,
            "model": self.model,
            "state": self.state,
            "attempts": self.attempts,
            "received": self.received,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
            **{k: self.result.get(k) for k in ("seconds", "warnings", "outputs", "series_uid")},
        }


@dataclass(frozen=True)
class Send:
    """One SEG to deliver to one destination (``AET@host:port``)."""

    job_id: str
    dest: str
    state: str
    attempts: int
    next_at: float
    error: str


class QueueFullError(ServeError):
    """The queue holds ``max_queue`` waiting jobs; the caller should retry later (HTTP 429)."""


def _job(row: sqlite3.Row) -> Job:
    return Job(
        row["id"],
        row["source"],
        Path(row["input"]),
        row["model"],
        row["state"],
        row["attempts"],
        row["received"],
        row["created"],
        row["started"],
        row["finished"],
        row["error"],
        json.loads(row["result"]),
    )


class JobQueue:
    """A bounded, persistent FIFO of segmentation jobs and of the SEG sends they cause. Thread-safe.

    Parameters
    ----------
    path
        The SQLite file (created with its folder if absent).
    max_queue
        Queued jobs (not yet running) above which :meth:`enqueue` raises :class:`QueueFullError`.
    """

    def __init__(self, path: Path, *, max_queue: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction (``BEGIN IMMEDIATE``: writers never interleave)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database (pending work stays in it)."""
        with self._lock:
            self._db.close()

    def enqueue(
        self,
        *,
        source: str,
        input_path: Path,
        model: str,
        received: float,
        key: str | None = None,
        job_id: str = "",
        bounded: bool = True,
    ) -> str:
        """Add a job and return its id; a ``key`` already queued returns the existing job's id (no duplicate).
        ``bounded=False`` admits a job that was admitted earlier (a DICOM series accepted at its first instance).

        Raises
        ------
        QueueFullError
            If ``bounded`` and ``max_queue`` jobs are already waiting.
        """
        with self._tx() as db:
            if key is not None:
                row = db.execute("SELECT id FROM jobs WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    return str(row["id"])
            waiting = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0]
            if bounded and waiting >= self.max_queue:
                raise QueueFullError(
                    f"the queue holds {waiting} jobs (limit max_queue = {self.max_queue}); retry later"
                )
            job_id = job_id or uuid.uuid4().hex
            db.execute(
                "INSERT INTO jobs (id, source, input, model, state, key, received, created) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                (job_id, source, str(input_path), model, key, received, time.time()),
            )
        return job_id

    def is_full(self) -> bool:
        """Whether :meth:`enqueue` would refuse a new job now."""
        return self.counts().get("queued", 0) >= self.max_queue

    def has_key(self, key: str) -> bool:
        """Whether a job with this de-duplication key exists (in any state)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM jobs WHERE key = ?", (key,)).fetchone() is not None

    def recover(self) -> int:
        """Requeue the jobs a dead process left ``running``; fail those that died :data:`MAX_ATTEMPTS` times.

        Returns the number requeued.
        """
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = 'failed', finished = ?, error = 'the server stopped while this job ran, "
                f"{MAX_ATTEMPTS} times' WHERE state = 'running' AND attempts >= ?",
                (time.time(), MAX_ATTEMPTS),
            )
            return db.execute("UPDATE jobs SET state = 'queued' WHERE state = 'running'").rowcount

    def claim(self) -> Job | None:
        """The oldest queued job, now ``running`` (committed before the caller starts it); ``None`` if none."""
        with self._tx() as db:
            row = db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started = ? "
                "WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1) RETURNING *",
                (time.time(),),
            ).fetchone()
        return None if row is None else _job(row)

    def finish(
        self, job_id: str, *, ok: bool, result: dict[str, Any], error: str = "", sends: tuple[str, ...] = ()
    ) -> None:
        """Mark a job ``done`` (recording one ``pending`` send per destination) or ``failed``, in one transaction."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = ?, finished = ?, error = ?, result = ? WHERE id = ?",
                ("done" if ok else "failed", now, error, json.dumps(result), job_id),
            )
            for dest in sends if ok else ():
                db.execute(
                    "INSERT OR IGNORE INTO sends (job_id, dest, state, next_at) VALUES (?, ?, 'pending', ?)",
                    (job_id, dest, now),
                )

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def recent(self, limit: int) -> list[Job]:
        """The ``limit`` most recently created jobs, newest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [_job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of jobs per state."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        return {r["state"]: int(r["n"]) for r in rows}

    def due_sends(self, now: float) -> list[Send]:
        """Pending sends whose next attempt is due."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM sends WHERE state = 'pending' AND next_at <= ? ORDER BY next_at", (now,)
            ).fetchall()
        return [Send(r["job_id"], r["dest"], r["state"], r["attempts"], r["next_at"], r["error"]) for r in rows]

    def sends_of(self, job_id: str) -> list[Send]:
        """Every send of one job."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM sends WHERE job_id = ?", (job_id,)).fetchall()
        return [Send(r["job_id"], r["dest"], r["state"], r["attempts"], r["next_at"], r["error"]) for r in rows]

    def record_send(self, send: Send, *, ok: bool, error: str = "", retry_at: float | None = None) -> None:
        """Record one attempt: ``sent``, ``pending`` again (due at ``retry_at``) or ``failed`` (no ``retry_at``)."""
        state = "sent" if ok else ("pending" if retry_at is not None else "failed")
        with self._tx() as db:
            db.execute(
                "UPDATE sends SET state = ?, attempts = attempts + 1, next_at = ?, sent_at = ?, error = ? "
                "WHERE job_id = ? AND dest = ?",
                (state, retry_at or time.time(), time.time() if ok else None, error, send.job_id, send.dest),
            )
