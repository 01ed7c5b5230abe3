"""The Dockerfile installs ctseg the way the Makefile does (no Docker engine runs in CI, so this checks the text)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().replace("\\\n", " ").splitlines()]


def test_dockerfile_copies_what_pip_install_needs() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    copied = set()
    for line in _lines(ROOT / "docker" / "Dockerfile"):
        if line.startswith("COPY "):
            copied.update(line.split()[1:-1])
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "pyproject.toml" in copied and pyproject["project"]["readme"] in copied
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} <= copied
    assert re.search(r"pip install \.\s*$", text, re.M), "the image must install the project itself"


def test_torch_pin_matches_the_makefile() -> None:
    make_pin = re.search(r"pip install --quiet (torch==[\d.]+)", (ROOT / "Makefile").read_text())
    docker_pin = re.search(r'TORCH_SPEC="(torch==[\d.]+)"', (ROOT / "docker" / "Dockerfile").read_text())
    assert make_pin and docker_pin and make_pin.group(1) == docker_pin.group(1)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.replace(" ", "").startswith("torch>=") for d in deps)  # a range, so the CUDA image's torch is kept


def test_entrypoint_is_the_cli() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["ctseg"]' in text and "FROM ${BASE}" in text and "pytorch/pytorch" in text
