"""``ctseg serve`` settings, token and address parsing, and shard selection from scheduler variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctseg.cli.serve_cmd import _parse_http, read_token
from ctseg.cli.shard import shard_from_env
from ctseg.errors import ConfigError
from ctseg.serve.config import Destination, Route, ServeConfig, load_serve_config


def test_defaults_are_safe() -> None:
    config = ServeConfig()
    assert config.http_host == "127.0.0.1" and config.quiet_s == 5.0 and not config.insecure_local
    assert config.min_free_disk_bytes > 0 and config.max_queue > 0 and config.allowed_aes == ()


def test_yaml_with_destinations_and_routes(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(
        "allowed_aes: [SCANNER, PACS]\n"
        "destinations: [{ae_title: PACS, host: pacs.local, port: 104}]\n"
        "routes: [{model: chest, series_description: 'thorax|chest'}]\n"
        "store: /var/lib/ctseg\nquiet_s: 2\n"
    )
    config = load_serve_config(path, dicom_port=4242, ae_title=None)
    assert config.destinations == (Destination("PACS", "pacs.local", 104),)
    assert config.routes[0].model == "chest" and config.quiet_s == 2.0 and config.dicom_port == 4242
    assert config.store == Path("/var/lib/ctseg") and config.ae_title == "CTSEG"


@pytest.mark.parametrize(
    ("yaml_text", "match"),
    [
        ("quiet_seconds: 3\n", "unknown key.*quiet_seconds.*valid keys"),
        ("ae_title: 'A\\\\B'\n", "is not an AE title"),
        ("ae_title: THIS_TITLE_IS_TOO_LONG\n", "is not an AE title"),
        ("allowed_aes: ['']\n", "allowed_aes.*not an AE title"),
        ("dicom_port: 70000\n", "port 70000 is outside 0..65535"),
        ("destinations: [{ae_title: P, host: h, port: 0}]\n", "port 0 is outside 1..65535"),
        ("destinations: [{ae_title: P, host: '', port: 104}]\n", "destinations.host is empty"),
        ("routes: [{model: m, body_part: '('}]\n", "routes.body_part.*not a regular expression"),
        ("quiet_s: 0\n", "quiet_s = 0.0; expected a positive number"),
        ("max_queue: -1\n", "max_queue = -1; expected a positive number"),
        ("send_retries: -1\n", "send_retries = -1; expected 0 or more"),
        ("devices: []\n", "devices is empty"),
        ("- a list\n", "expected a mapping of settings"),
        ("quiet_s: [\n", "cannot read the serve settings"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, yaml_text: str, match: str) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=match):
        load_serve_config(path)


def test_route_rule_type() -> None:
    assert Route("m").series_description == ""


def test_parse_http() -> None:
    assert _parse_http("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert _parse_http("[::1]:8080") == ("::1", 8080)
    assert _parse_http(None) == (None, None)
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        _parse_http("localhost")


def test_token_from_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t").write_text("  abcdefghijklmnopqrstuvwxyz\nsecond line\n")
    assert read_token(tmp_path / "t") == "abcdefghijklmnopqrstuvwxyz"
    monkeypatch.setenv("CTSEG_SERVE_TOKEN", "0123456789abcdefXYZ")
    assert read_token(None) == "0123456789abcdefXYZ"
    monkeypatch.delenv("CTSEG_SERVE_TOKEN")
    assert read_token(None) is None
    (tmp_path / "short").write_text("secret\n")
    with pytest.raises(ConfigError, match="has 6 characters; use at least 16"):
        read_token(tmp_path / "short")
    with pytest.raises(ConfigError, match="cannot read the token file"):
        read_token(tmp_path / "missing")


def test_shard_from_env() -> None:
    assert shard_from_env({"JOB_COMPLETION_INDEX": "0", "JOB_COMPLETIONS": "3"}) == (0, 3)
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8"}) == (5, 8)
    assert shard_from_env({"HOME": "/root"}) is None
    with pytest.raises(ConfigError, match="JOB_COMPLETIONS is not"):
        shard_from_env({"JOB_COMPLETION_INDEX": "1"})
    with pytest.raises(ConfigError, match="expected integers"):
        shard_from_env({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"})
    with pytest.raises(ConfigError, match="shard 4, outside 0..3"):
        shard_from_env({"JOB_COMPLETION_INDEX": "4", "JOB_COMPLETIONS": "4"})
