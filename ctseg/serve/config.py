"""Settings of ``ctseg serve``: one frozen dataclass, 1:1 with the YAML file given by ``--config``.

Every value is range-checked at construction; an unknown key raises :class:`~ctseg.errors.ConfigError` listing the
valid ones. Paths and the token are arguments (the CLI reads ``CTSEG_SERVE_TOKEN``; nothing here reads the
environment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ctseg.errors import ConfigError

#: DICOM AE titles are 1-16 characters of the default character repertoire, no backslash or control characters.
AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
MAX_PORT = 65535
MiB = 1 << 20
GiB = 1 << 30


def check_ae_title(value: str, where: str) -> str:
    """``value`` stripped, if it is a valid AE title; else :class:`ConfigError`."""
    if not isinstance(value, str) or not AE_TITLE.match(value) or not value.strip():
        raise ConfigError(f"{where}: {value!r} is not an AE title (1-16 printable ASCII characters, no backslash)")
    return value.strip()


def check_port(value: int, where: str, *, allow_zero: bool = False) -> int:
    """``value`` if it is a TCP port (0 = any free port, where allowed)."""
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or not low <= value <= MAX_PORT:
        raise ConfigError(f"{where}: port {value!r} is outside {low}..{MAX_PORT}")
    return value


@dataclass(frozen=True)
class Destination:
    """A DICOM node that receives the SEG of every study that came in over DICOM (C-STORE SCP)."""

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title, "destinations.ae_title")
        check_port(self.port, "destinations.port")
        if not self.host:
            raise ConfigError("destinations.host is empty; give a host name or IP address")


@dataclass(frozen=True)
class Route:
    """A routing rule: a series whose description and body part match (regular expressions, case-insensitive,
    an empty pattern matches anything) goes to ``model``. The first matching rule wins."""

    model: str
    series_description: str = ""
    body_part: str = ""

    def __post_init__(self) -> None:
        for name in ("series_description", "body_part"):
            try:
                re.compile(getattr(self, name))
            except re.error as exc:
                raise ConfigError(
                    f"routes.{name}: {getattr(self, name)!r} is not a regular expression: {exc}"
                ) from None


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``ctseg serve`` needs besides the model folders.

    Sizes are bytes, times seconds. ``quiet_s``: a series is complete when its association ended and no instance
    arrived for this long. ``max_queue``: queued jobs above which HTTP answers 429 and DICOM a failure status.
    ``min_free_disk_bytes``: below this free space in the store new studies are refused.
    """

    store: Path = Path("ctseg_store")
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    dicom_port: int = 11112
    ae_title: str = "CTSEG"
    allowed_aes: tuple[str, ...] = ()
    destinations: tuple[Destination, ...] = ()
    routes: tuple[Route, ...] = ()
    default_model: str = ""
    quiet_s: float = 5.0
    max_queue: int = 100
    max_upload_bytes: int = 2 * GiB
    min_free_disk_bytes: int = 1 * GiB
    send_retries: int = 5
    send_backoff_s: float = 10.0
    devices: tuple[str, ...] = ("auto",)
    token_file: Path | None = None
    insecure_local: bool = False
    recent_jobs: int = 20

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title, "ae_title")
        check_port(self.http_port, "http_port", allow_zero=True)
        check_port(self.dicom_port, "dicom_port", allow_zero=True)
        for aet in self.allowed_aes:
            check_ae_title(aet, "allowed_aes")
        positive = {"quiet_s": self.quiet_s, "max_queue": self.max_queue, "max_upload_bytes": self.max_upload_bytes}
        positive |= {"send_backoff_s": self.send_backoff_s, "recent_jobs": self.recent_jobs}
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} = {value!r}; expected a positive number")
        for name, value in {"min_free_disk_bytes": self.min_free_disk_bytes, "send_retries": self.send_retries}.items():
            if value < 0:
                raise ConfigError(f"{name} = {value!r}; expected 0 or more")
        if not self.devices:
            raise ConfigError("devices is empty; give at least one, e.g. [auto] or [cuda:0, cuda:1]")


def load_serve_config(path: Path | None, **overrides: Any) -> ServeConfig:
    """The settings of the YAML file ``path`` (or the defaults), then ``overrides`` (options given on the command
    line; ``None`` values are ignored).

    Raises
    ------
    ConfigError
        For unreadable YAML, unknown keys, wrong types or values out of range.
    """
    from ctseg.config import from_dict

    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the serve settings: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
        data = loaded
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    for key in ("store", "token_file"):
        if isinstance(data.get(key), str):
            data[key] = Path(data[key])
    return from_dict(ServeConfig, data, where=str(path or "serve settings"))
