"""What several commands share: turning user errors into one-line messages, and the DICOM read options.

Imports nothing from :mod:`ctseg.cli.main` (the commands defined beside it register there).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from ctseg.io.dicom import ReadOptions

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn ctseg's input errors into click errors (one line, exit 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ctseg.errors import CtsegError

        try:
            return func(*args, **kwargs)
        except CtsegError as exc:
            raise click.ClickException(str(exc)) from None
        except MemoryError:
            raise click.ClickException("out of memory; try a machine with more RAM or a smaller input") from None

    return wrapper  # type: ignore[return-value]


def parse_band(text: str | None) -> tuple[float, float] | None:
    """``"0.5-5"`` -> ``(0.5, 5.0)``; ``None`` stays ``None``.

    Raises
    ------
    ConfigError
        When the text is not MIN-MAX in mm.
    """
    from ctseg.errors import ConfigError

    if text is None:
        return None
    lo, sep, hi = text.partition("-")
    try:
        if not sep:
            raise ValueError
        return (float(lo), float(hi))
    except ValueError:
        raise ConfigError(f"--thickness-band {text!r}: expected MIN-MAX in mm, e.g. 0.5-5") from None


@dataclass(frozen=True)
class ReadFlags:
    """The DICOM read flags of a command (``dicom_options``), as typed; ``None`` means the default."""

    prefer_kernel: str | None = None
    thickness_band: str | None = None
    allow_gaps: bool = False
    no_tilt_correction: bool = False
    allow_non_ct: bool = False
    keep_padding: bool = False

    def options(self, *, default_kernel: str | None = None) -> ReadOptions:
        """The :class:`~ctseg.io.dicom.ReadOptions` they ask for (``default_kernel``: when --prefer-kernel is absent).

        Raises
        ------
        ConfigError
            For a malformed --thickness-band (or a value ReadOptions refuses).
        """
        from ctseg.io.dicom import ReadOptions

        default = ReadOptions()
        return ReadOptions(
            correct_tilt=not self.no_tilt_correction,
            allow_gaps=self.allow_gaps,
            allow_non_ct=self.allow_non_ct,
            padding_hu=None if self.keep_padding else default.padding_hu,
            prefer_kernel=self.prefer_kernel or default_kernel or default.prefer_kernel,
            thickness_band_mm=parse_band(self.thickness_band) or default.thickness_band_mm,
        )


def _collect_read_flags(func: F) -> F:
    """Hand ``func`` the read flags as one ``read_flags: ReadFlags`` instead of six keyword arguments."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = ReadFlags(**{f.name: kwargs.pop(f.name) for f in fields(ReadFlags)})
        return func(*args, read_flags=flags, **kwargs)

    return wrapper  # type: ignore[return-value]


def dicom_options(func: F) -> F:
    """Add ``--series``, ``--prefer-kernel``, ``--thickness-band``, ``--allow-gaps``, ``--no-tilt-correction``,
    ``--allow-non-ct`` and ``--keep-padding``; the command receives ``series_uid`` and ``read_flags``."""
    func = _collect_read_flags(func)
    for decorator in reversed(
        [
            click.option(
                "--series",
                "series_uid",
                metavar="UID|NUMBER|GLOB",
                help="Read this series instead of the one the selection rule picks (see `ctseg inspect`): a "
                "SeriesInstanceUID, a SeriesNumber, or a description glob such as '*venous*' (case-insensitive).",
            ),
            click.option(
                "--prefer-kernel",
                type=click.Choice(["soft", "bone", "lung", "any"]),
                default=None,
                help="Kernel class the selection rule ranks first (default: soft; for predict, the model's).",
            ),
            click.option(
                "--thickness-band",
                metavar="MIN-MAX",
                default=None,
                help="Slice thickness in mm a series should have; one outside loses to one inside (default 0.5-5).",
            ),
            click.option("--allow-gaps", is_flag=True, help="Resample across missing slices instead of refusing."),
            click.option(
                "--no-tilt-correction",
                is_flag=True,
                help="Refuse gantry-tilted series instead of resampling them onto an orthogonal grid.",
            ),
            click.option("--allow-non-ct", is_flag=True, help="Read series whose Modality is not CT."),
            click.option(
                "--keep-padding",
                is_flag=True,
                help="Keep PixelPaddingValue voxels as stored (e.g. -3024) instead of setting them to air (-1024 HU).",
            ),
        ]
    ):
        func = decorator(func)
    return func
