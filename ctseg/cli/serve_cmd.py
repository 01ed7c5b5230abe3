"""``ctseg serve``: a DICOM node and an HTTP service with a persistent queue, metrics and a status page.

Registered on the group in :mod:`ctseg.cli.main`; imports nothing from it. This is the only place the service's
environment variable (``CTSEG_SERVE_TOKEN``) is read.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

TOKEN_ENV = "CTSEG_SERVE_TOKEN"
MIN_TOKEN_CHARS = 16


def _parse_http(value: str | None) -> tuple[str | None, int | None]:
    from ctseg.errors import ConfigError

    if value is None:
        return None, None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--http {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8000 or 0.0.0.0:8000")
    return host.strip("[]") or "0.0.0.0", int(port)


def read_token(token_file: Path | None) -> str | None:
    """The API token: the first line of ``token_file``, else ``$CTSEG_SERVE_TOKEN``, else ``None``.

    The service logs what it does, never with the token or a patient value.

    Raises
    ------
    ConfigError
        If the file cannot be read or the token is shorter than 16 characters.
    """
    from ctseg.errors import ConfigError

    token = None
    if token_file is not None:
        try:
            text = token_file.read_text().strip()
            token = text.splitlines()[0].strip() if text else ""
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {token_file}: {exc}") from exc
    elif os.environ.get(TOKEN_ENV):
        token = os.environ[TOKEN_ENV].strip()
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"the API token has {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))' > token.txt`)"
        )
    return token


@click.command("serve")
@click.option(
    "--model",
    "model_dirs",
    multiple=True,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Model folder (repeat for several; each is named by its folder name). Loaded once at start.",
)
@click.option("--http", "http", metavar="HOST:PORT", help="HTTP address (default 127.0.0.1:8000).")
@click.option("--dicom-port", type=click.IntRange(0, 65535), help="DICOM port (default 11112; 0 = any free port).")
@click.option("--ae-title", help="This node's AE title (default CTSEG).")
@click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for received studies, results and the job queue (default ./ctseg_store).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML settings: allowed_aes, destinations, routes, limits, token_file, ... (see docs/serve.md).",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"File whose first line is the API bearer token (else ${TOKEN_ENV}).",
)
@click.option("--insecure-local", is_flag=True, default=None, help="Serve loopback HTTP clients without a token.")
@click.option(
    "--quiet-seconds",
    "quiet_s",
    type=click.FloatRange(min=0.0, min_open=True),
    help="Seconds without a new instance after which a series is complete (default 5).",
)
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="TLS certificate.")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="TLS private key.")
def serve(
    model_dirs: tuple[Path, ...],
    http: str | None,
    dicom_port: int | None,
    ae_title: str | None,
    store: Path | None,
    config_path: Path | None,
    token_file: Path | None,
    insecure_local: bool | None,
    quiet_s: float | None,
    ssl_certfile: Path | None,
    ssl_keyfile: Path | None,
) -> None:
    """Run a DICOM node and an HTTP service that segment every CT they receive.

    A PACS or scanner sends a CT series by C-STORE to AE title --ae-title on --dicom-port; once the series is
    complete (its association ended and nothing arrived for --quiet-seconds) it is queued, segmented with the
    model its routing rule picks, and the DICOM SEG is sent to each configured destination. Over HTTP, POST
    /v1/jobs takes DICOM files, a zip or a NIfTI; GET /v1/jobs/{id} reports it; /docs has the API, /metrics the
    Prometheus metrics and / a status page. Jobs live in a SQLite queue in --store and survive restarts.

    \b
    Examples:
      ctseg serve --model models/abdomen --token-file token.txt
      ctseg serve --model models/abdomen --model models/chest --config serve.yaml --store /var/lib/ctseg
      ctseg serve --model models/abdomen --http 127.0.0.1:8000 --dicom-port 11112 --insecure-local
    """
    from ctseg.errors import CtsegError

    try:
        import fastapi  # noqa: F401
        import pynetdicom  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(f"{exc.name} is not installed: pip install 'ctseg[serve]'") from None
    # These libraries log UIDs and, at debug level, header values: never patient data in the service's logs.
    for name in ("pynetdicom", "highdicom"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from ctseg.serve.app import run_service
        from ctseg.serve.config import load_serve_config

        host, port = _parse_http(http)
        config = load_serve_config(
            config_path,
            http_host=host,
            http_port=port,
            dicom_port=dicom_port,
            ae_title=ae_title,
            store=store,
            token_file=token_file,
            insecure_local=insecure_local,
            quiet_s=quiet_s,
        )
        token = read_token(config.token_file)
        run_service(config, list(model_dirs), token=token, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
    except CtsegError as exc:
        raise click.ClickException(str(exc)) from None
