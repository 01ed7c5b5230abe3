"""What several commands share: turning user errors into one-line messages, and the DICOM read options.

Imports nothing from :mod:`ctseg.cli.main` (the commands defined beside it register there).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
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


def read_options(allow_gaps: bool, no_tilt_correction: bool, allow_non_ct: bool, keep_padding: bool) -> ReadOptions:
    """The :class:`~ctseg.io.dicom.ReadOptions` of the ``dicom_options`` flags."""
    from ctseg.io.dicom import ReadOptions

    return ReadOptions(
        correct_tilt=not no_tilt_correction,
        allow_gaps=allow_gaps,
        allow_non_ct=allow_non_ct,
        padding_hu=None if keep_padding else ReadOptions().padding_hu,
    )


def dicom_options(func: F) -> F:
    """Add ``--series``, ``--allow-gaps``, ``--no-tilt-correction``, ``--allow-non-ct`` and ``--keep-padding``."""
    for decorator in reversed(
        [
            click.option(
                "--series",
                "series_uid",
                metavar="UID",
                help="Read this SeriesInstanceUID instead of the one the selection rule picks (see `ctseg inspect`).",
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
