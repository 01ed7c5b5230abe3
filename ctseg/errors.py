"""Exception types raised by ctseg.

Every error for bad input is a subclass of :class:`CtsegError`; its message says what was found, what was
expected and how to fix it. The command-line interface prints such an error as one line and exits non-zero.
"""

from __future__ import annotations

from enum import StrEnum


class CtsegError(Exception):
    """Base class of every error ctseg raises for bad input or a bad state the user can fix."""


class GeometryError(CtsegError, ValueError):
    """A spacing, origin, direction or shape that does not describe a valid image grid."""


class ConfigError(CtsegError, ValueError):
    """A configuration file or option with an unknown key or an invalid value."""


class CheckpointError(CtsegError):
    """A model file that is missing, damaged, or does not match its description."""


class ModelFileError(CheckpointError, ValueError):
    """A ``model.json`` whose content is missing a key, has a wrong type, or holds a value out of its range."""


class ImageFormatError(CtsegError, ValueError):
    """A file that is not an image ctseg can read, or an output path whose format is unknown."""


class UnsupportedTransferSyntaxError(CtsegError):
    """Compressed pixel data that no installed decoder can decode."""


class DatasetError(CtsegError, ValueError):
    """A dataset that does not follow the layout, or a case that fails a check."""


class InputQAError(CtsegError, ValueError):
    """Input that does not look like raw HU CT."""


class EvaluationError(CtsegError, ValueError):
    """Inputs that cannot be compared: not a label map, mismatched shapes, no matching cases."""


class SeriesReason(StrEnum):
    """Why a DICOM series cannot be turned into a volume (or what was corrected on the way)."""

    NO_DICOM = "NO_DICOM"
    NO_SERIES = "NO_SERIES"
    SERIES_NOT_FOUND = "SERIES_NOT_FOUND"
    AMBIGUOUS_SERIES = "AMBIGUOUS_SERIES"
    MIXED_SERIES = "MIXED_SERIES"
    NOT_CT = "NOT_CT"
    NOT_IMAGE = "NOT_IMAGE"
    COLOUR_IMAGE = "COLOUR_IMAGE"
    TOO_FEW_SLICES = "TOO_FEW_SLICES"
    DUPLICATE_POSITION = "DUPLICATE_POSITION"
    MISSING_SLICE = "MISSING_SLICE"
    INCONSISTENT_SPACING = "INCONSISTENT_SPACING"
    INCONSISTENT_ORIENTATION = "INCONSISTENT_ORIENTATION"
    INCONSISTENT_SIZE = "INCONSISTENT_SIZE"
    INCONSISTENT_PIXEL_SPACING = "INCONSISTENT_PIXEL_SPACING"
    GANTRY_TILT = "GANTRY_TILT"
    MISSING_TAG = "MISSING_TAG"
    UNREADABLE_FILE = "UNREADABLE_FILE"
    INVALID_TAG_VALUE = "INVALID_TAG_VALUE"
    PIXEL_DATA_LENGTH = "PIXEL_DATA_LENGTH"
    UNREADABLE_PATH = "UNREADABLE_PATH"
    HEADER_REPAIRED = "HEADER_REPAIRED"
    THICKNESS_BAND = "THICKNESS_BAND"


class DicomSeriesError(CtsegError, ValueError):
    """A DICOM series that cannot be read as one CT volume.

    Parameters
    ----------
    reason
        The machine-readable cause, one of :class:`SeriesReason`.
    message
        What was found, what was expected, and how to fix it.
    """

    def __init__(self, reason: SeriesReason, message: str) -> None:
        super().__init__(f"[{reason.value}] {message}")
        self.reason = reason


class DicomSegError(CtsegError, ValueError):
    """A DICOM SEG that cannot be written for this mask and series, or read onto the requested grid."""


class NoDicomSourceError(CtsegError, ValueError):
    """A DICOM SEG was asked for a mask that has no DICOM source series."""


class ServeError(CtsegError):
    """A service that cannot start or a request it refuses (bad settings, full queue, low disk, failed send)."""


class UploadError(CtsegError, ValueError):
    """An uploaded file the service refuses: not DICOM or NIfTI, too large, or a zip entry outside its folder."""


class OutputPathError(CtsegError, ValueError):
    """An output path that would modify an input or land outside the output folder the user named."""


class CaseConflictError(CtsegError):
    """An output case folder that holds the results of a different input, model, or something not made by ctseg."""
