"""The DICOM side of ``ctseg serve`` (pynetdicom): a storage SCP for CT, C-ECHO, and the SCU that sends SEGs.

Received instances are written to ``STORE/received/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``
(UIDs checked to be UIDs, so no path can be formed from other header text). A series is complete when every
association that delivered to it has closed and no instance arrived for ``quiet_s``; its folder is then renamed to
``STORE/inputs/<job id>`` and queued. Both steps are recoverable: :meth:`SeriesTracker.recover` requeues folders
a killed process left behind. Nothing identifying (no UID, no header value) is logged.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctseg.errors import ServeError
from ctseg.serve.config import Destination, ServeConfig

log = logging.getLogger(__name__)

#: A DICOM UID: dot-separated decimal components, at most 64 characters.
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_UID_CHARS = 64
STATUS_SUCCESS = 0x0000
#: "Refused: out of resources" (queue full or disk low) and "cannot understand" (bad UIDs), PS3.4 Annex B.
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
#: Seconds between checks for completed series.
POLL_S = 0.2


def is_uid(value: object) -> bool:
    """Whether ``value`` is a well-formed DICOM UID (safe as a file or folder name)."""
    return isinstance(value, str) and len(value) <= MAX_UID_CHARS and UID.match(value) is not None


@dataclass
class _Series:
    folder: Path
    first_at: float
    last_at: float
    associations: set[int] = field(default_factory=set)


class SeriesTracker:
    """Knows which series are still arriving and hands each completed one to ``on_complete(folder, received)``.

    Parameters
    ----------
    received_dir
        ``STORE/received``.
    quiet_s
        Seconds without a new instance (and with no open association) after which a series is complete.
    on_complete
        Called with the series folder and the time its first instance arrived; it must move the folder away.
    """

    def __init__(self, received_dir: Path, *, quiet_s: float, on_complete: Callable[[Path, float], None]) -> None:
        self.received_dir = received_dir
        self.quiet_s = quiet_s
        self.on_complete = on_complete
        self._series: dict[Path, _Series] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ctseg-series", daemon=True)

    def recover(self) -> int:
        """Track the series folders a previous process left under ``received_dir`` (their quiet time restarts)."""
        now = time.time()
        found = [s for s in self.received_dir.glob("*/*") if s.is_dir()] if self.received_dir.is_dir() else []
        with self._lock:
            for folder in found:
                self._series.setdefault(folder, _Series(folder, now, now))
        return len(found)

    def is_known(self, folder: Path) -> bool:
        """Whether instances of this series are being received."""
        with self._lock:
            return folder in self._series

    def arrived(self, folder: Path, association: int) -> None:
        """Record one stored instance of the series in ``folder``."""
        now = time.time()
        with self._lock:
            entry = self._series.setdefault(folder, _Series(folder, now, now))
            entry.last_at = now
            entry.associations.add(association)

    def closed(self, association: int) -> None:
        """An association ended (released, aborted or dropped)."""
        with self._lock:
            for entry in self._series.values():
                entry.associations.discard(association)

    def start(self) -> None:
        """Start the completion thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the completion thread (series still arriving stay on disk for the next start)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            now = time.time()
            with self._lock:
                done = [s for s in self._series.values() if not s.associations and now - s.last_at >= self.quiet_s]
            for entry in done:
                try:
                    self.on_complete(entry.folder, entry.first_at)
                except Exception:  # keep tracking it: the next poll retries (e.g. a full queue drains)
                    log.exception("could not queue a completed series; retrying")
                    continue
                with self._lock:
                    self._series.pop(entry.folder, None)


class DicomNode:
    """The C-STORE / C-ECHO SCP.

    Parameters
    ----------
    config
        AE title, port, allowed calling AE titles, store.
    tracker
        Told about every stored instance and closed association.
    admit_new_series
        Returns ``""`` when a new series may start, else why not (queue full, disk low): its instances are refused
        with status 0xA700 so the sender retries later.
    on_instance
        Called once per stored instance (metrics).
    """

    def __init__(
        self,
        config: ServeConfig,
        tracker: SeriesTracker,
        *,
        admit_new_series: Callable[[], str],
        on_instance: Callable[[], None],
    ) -> None:
        self.config = config
        self.tracker = tracker
        self.admit_new_series = admit_new_series
        self.on_instance = on_instance
        self._server: Any = None

    def start(self, host: str = "") -> int:
        """Start listening (in background threads); return the port (useful with ``dicom_port: 0``)."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt, sop_class

        ae = AE(ae_title=self.config.ae_title)
        for storage in (sop_class.CTImageStorage, sop_class.EnhancedCTImageStorage):  # type: ignore[attr-defined]
            ae.add_supported_context(storage, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(sop_class.Verification)  # type: ignore[attr-defined]
        ae.require_called_aet = True
        ae.require_calling_aet = list(self.config.allowed_aes)  # empty: any calling AE title
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
        try:
            self._server = ae.start_server((host, self.config.dicom_port), block=False, evt_handlers=handlers)
        except OSError as exc:
            raise ServeError(f"cannot listen for DICOM on port {self.config.dicom_port}: {exc}") from exc
        port = int(self._server.server_address[1])
        log.info("DICOM node %s listening on port %d", self.config.ae_title, port)
        return port

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_echo(self, event: Any) -> int:
        return STATUS_SUCCESS

    def _on_close(self, event: Any) -> None:
        self.tracker.closed(id(event.assoc))

    def _on_store(self, event: Any) -> int:
        ds = event.dataset
        uids = [getattr(ds, name, None) for name in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
        if not all(is_uid(u) for u in uids):
            log.warning("refused an instance whose study, series or instance UID is missing or malformed")
            return STATUS_CANNOT_UNDERSTAND
        study, series, sop = (str(u) for u in uids)
        folder = self.tracker.received_dir / study / series
        if not self.tracker.is_known(folder):
            refusal = self.admit_new_series()
            if refusal:
                log.warning("refused a new series: %s", refusal)
                return STATUS_OUT_OF_RESOURCES
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{sop}.{uuid.uuid4().hex[:8]}.partial"
        tmp.write_bytes(event.encoded_dataset())
        os.replace(tmp, folder / f"{sop}.dcm")
        self.tracker.arrived(folder, id(event.assoc))
        self.on_instance()
        return STATUS_SUCCESS


def send_file(path: Path, destination: Destination, *, calling_ae: str, timeout_s: float = 30.0) -> str:
    """C-STORE one DICOM file (a SEG) to ``destination``; return ``""`` on success, else why it failed."""
    from pydicom import dcmread
    from pynetdicom import AE

    ds = dcmread(path)
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        return f"association with {destination.ae_title}@{destination.host}:{destination.port} was not established"
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        return "no C-STORE response (connection lost or timed out)"
    return "" if code in (0x0000, 0xB000, 0xB007, 0xB006) else f"C-STORE status 0x{code:04X}"


def destination_name(destination: Destination) -> str:
    """``AET@host:port``: the key of a send in the queue."""
    return f"{destination.ae_title}@{destination.host}:{destination.port}"
