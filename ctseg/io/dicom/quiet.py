"""Keep pydicom's own warnings and log messages off the user's terminal while ctseg reads DICOM.

pydicom warns (``warnings``) and logs (logger ``pydicom``) about recoverable header oddities of every file: a VR
that does not match the transfer syntax, an invalid UID, a value of the wrong length. Repeated for each of
thousands of files they drown ctseg's own messages, and they are not the user's to act on. :func:`quiet_pydicom`
silences both inside ctseg's read path and collects them, so that what matters is reported once as a ctseg warning
with the reason code ``HEADER_REPAIRED`` (quoted values are dropped from the text: no header value is echoed).
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from ctseg.errors import SeriesReason

#: Held around every change of the process-wide warning filters and of pydicom's logger (``catch_warnings`` is not
#: thread-safe: two overlapping uses can leave the filters of one behind). ``ctseg predict`` writes one case on a
#: second thread while it reads the next; re-entrant, so nested uses on one thread are fine.
WARNINGS_LOCK = threading.RLock()
#: The logger pydicom writes to.
PYDICOM_LOGGER = "pydicom"
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_URL = re.compile(r"\s*Please see <[^>]*>.*$")


class _Collector(logging.Handler):
    def __init__(self, notes: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.notes.append(record.getMessage())


def _clean(message: str) -> str:
    """A pydicom message without the values it quotes or the standard's URL."""
    return _URL.sub("", _QUOTED.sub("...", message)).strip()


class PydicomNotes:
    """What pydicom said inside :func:`quiet_pydicom`: its log records and warnings, in arrival order per kind."""

    def __init__(self) -> None:
        self.records: list[str] = []
        self.caught: list[warnings.WarningMessage] = []

    def mark(self) -> tuple[int, int]:
        """A position to :meth:`drop_since` (e.g. before reading a file that may turn out not to be DICOM)."""
        return len(self.records), len(self.caught)

    def drop_since(self, mark: tuple[int, int]) -> None:
        """Forget what was said since ``mark`` (about a file that is ignored anyway)."""
        del self.records[mark[0] :]
        del self.caught[mark[1] :]

    def texts(self) -> list[str]:
        """pydicom's messages, cleaned (no quoted values, no URL)."""
        said = self.records + [str(w.message) for w in self.caught if _from_pydicom(w)]
        return [_clean(t) for t in said]


def _from_pydicom(w: warnings.WarningMessage) -> bool:
    return "pydicom" in (w.filename or "") or "pydicom" in type(w.message).__module__


@contextmanager
def quiet_pydicom() -> Iterator[PydicomNotes]:
    """Silence pydicom's warnings and log records; yield the :class:`PydicomNotes` they go into.

    With the ``pydicom`` logger at DEBUG (``ctseg -vv``) its records still go through, for debugging. Warnings
    from other libraries are re-issued unchanged.
    """
    with WARNINGS_LOCK:
        with _quiet() as notes:
            yield notes


@contextmanager
def ignored_warnings(message: str = "", category: type[Warning] = Warning) -> Iterator[None]:
    """``warnings.catch_warnings`` ignoring ``category`` warnings whose text matches ``message`` (all by default),
    under :data:`WARNINGS_LOCK`."""
    with WARNINGS_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message, category=category)
        yield


@contextmanager
def _quiet() -> Iterator[PydicomNotes]:
    notes = PydicomNotes()
    logger = logging.getLogger(PYDICOM_LOGGER)
    debugging = logger.isEnabledFor(logging.DEBUG)
    level, propagate = logger.level, logger.propagate
    collector = _Collector(notes.records)
    logger.addHandler(collector)
    if not debugging:
        # pydicom's records reach the terminal through the root logger; the collector alone receives them here.
        logger.propagate = False
        logger.setLevel(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notes.caught = caught
        try:
            yield notes
        finally:
            logger.removeHandler(collector)
            logger.setLevel(level)
            logger.propagate = propagate
    for w in caught:
        if not _from_pydicom(w):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def header_notes(notes: PydicomNotes) -> tuple[tuple[SeriesReason, str], ...]:
    """One ``HEADER_REPAIRED`` warning per distinct pydicom message, with how often it appeared."""
    counts: dict[str, int] = {}
    for n in notes.texts():
        counts[n] = counts.get(n, 0) + 1
    return tuple(
        (SeriesReason.HEADER_REPAIRED, f"pydicom repaired a header oddity ({count}x): {text}")
        for text, count in counts.items()
    )
