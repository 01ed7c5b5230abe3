"""Helpers of the ``ctseg serve`` tests: a tiny real model folder, free ports, phantom CT series, and real
processes (the server, dcmtk's storescp) started and stopped around a test."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import torch

from ctseg.config import InferConfig, ModelConfig, PreprocessConfig, to_dict
from ctseg.infer.model import LoadedModel
from ctseg.io.model_files import save_model_files
from ctseg.model import build_model
from ctseg.phantom import make_phantom
from ctseg.serve.config import ServeConfig
from ctseg.volume import Geometry
from tests.synthetic import write_dicom_series

if TYPE_CHECKING:
    from ctseg.serve.app import Service

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789abcdef"
STARTUP_S = 120.0


def tiny_model(folder: Path, *, seed: int = 0) -> Path:
    """A real model folder (``model.pt`` + ``model.json``): a seeded 2-level U-Net at 4 mm, two classes.

    Its output is deterministic, not anatomical; the background logit is lowered so both classes occur.
    """
    torch.manual_seed(seed)
    model_cfg = ModelConfig(channels=(4, 8), strides=((2, 2, 2),))
    pre = PreprocessConfig(target_spacing_mm=(4.0, 4.0, 4.0), window_level_hu=0.0, window_width_hu=2000.0)
    net = build_model(model_cfg, 1, 2)
    meta = {
        "config": {"model": to_dict(model_cfg), "preprocess": to_dict(pre), "infer": to_dict(InferConfig(amp=False))},
        "labels": {"0": "background", "1": "liver"},
        "colors": {"1": [255, 0, 0]},
        "patch_size": [16, 32, 32],
        "in_channels": 1,
    }
    return save_model_files(folder, net.state_dict(), meta)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def phantom_series(folder: Path, *, seed: int = 0, shape: tuple[int, int, int] = (12, 40, 40)) -> list[Path]:
    """A synthetic abdomen-like CT series (real HU: air, fat, organs, bone) written with tests/synthetic.py."""
    ct, _ = make_phantom(Geometry(shape, (3.0, 2.0, 2.0), (0.0, 0.0, 10.0 * seed)), seed=seed)
    return write_dicom_series(folder, ct, slope=1.0, intercept=-1024.0)


def env() -> dict[str, str]:
    """The environment of a child process: this tree first on the path."""
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


@dataclass
class Server:
    """A running ``ctseg serve`` process."""

    process: subprocess.Popen[bytes]
    http: str
    dicom_port: int
    log: Path

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.http, headers=headers, timeout=30.0)


def start_server(
    store: Path, models: Sequence[Path], config: Path | None = None, *, quiet_s: float = 0.5, ae_title: str = "CTSEG"
) -> Server:
    """Start ``python -m ctseg serve`` on free loopback ports and wait until ``/healthz`` answers."""
    http_port, dicom_port = free_port(), free_port()
    token_file = store.parent / f"{store.name}.token"
    token_file.write_text(TOKEN + "\n")
    log = store.parent / f"{store.name}.log"
    cmd = [sys.executable, "-m", "ctseg", "-v", "serve", "--store", str(store), "--http", f"127.0.0.1:{http_port}"]
    cmd += ["--dicom-port", str(dicom_port), "--ae-title", ae_title, "--token-file", str(token_file)]
    cmd += ["--quiet-seconds", str(quiet_s)] + [a for m in models for a in ("--model", str(m))]
    cmd += ["--config", str(config)] if config else []
    with open(log, "ab") as fp:
        process = subprocess.Popen(cmd, stdout=fp, stderr=subprocess.STDOUT, env=env(), cwd=store.parent)
    server = Server(process, f"http://127.0.0.1:{http_port}", dicom_port, log)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ctseg serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.http}/healthz", timeout=1.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"ctseg serve did not answer within {STARTUP_S} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL) a child and wait for it."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def serving(store: Path, models: Sequence[Path], config: Path | None = None, **kwargs: float | str) -> Iterator[Server]:
    """``start_server`` as a context; the server is stopped (SIGTERM) at the end."""
    server = start_server(store, models, config, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        stop(server.process)


@functools.cache
def dcmtk(tool: str) -> str:
    """The path of dcmtk's ``tool`` (storescp, storescu, echoscu) on ``PATH``.

    pynetdicom 3 installs Python apps of the same names into the environment's ``bin``, which comes first on
    ``PATH`` in an activated virtual environment and takes other options: each candidate is asked for its version.
    """
    for folder in os.get_exec_path():
        path = Path(folder) / tool
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        try:
            out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return str(path)
    raise RuntimeError(f"dcmtk's {tool} is not on PATH; install it (apt-get install dcmtk), as .ci/run does")


@contextmanager
def storescp(folder: Path, *, ae_title: str = "PACS", port: int = 0) -> Iterator[int]:
    """dcmtk's storescp on a (free) loopback port, writing what it receives to ``folder`` and its verbose log to
    ``folder/../storescp.log`` (see :func:`received_count`); yields the port."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    with open(folder.parent / "storescp.log", "ab") as log:
        process = subprocess.Popen(
            [dcmtk("storescp"), "-v", "--aetitle", ae_title, "--output-directory", str(folder), "+xa", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield port
    finally:
        stop(process)


def received_count(folder: Path) -> int:
    """How many C-STORE requests the storescp of ``folder`` received (a repeated instance counts again)."""
    log = folder.parent / "storescp.log"
    return log.read_text().count("Received Store Request") if log.is_file() else 0


def storescu(files: Sequence[Path] | Path, port: int, *, calling: str = "SCANNER", called: str = "CTSEG") -> int:
    """Send DICOM files (or a folder, recursively) with dcmtk's storescu; return its exit code."""
    paths = [str(files)] if isinstance(files, Path) else [str(f) for f in files]
    cmd = [dcmtk("storescu"), "-aet", calling, "-aec", called, "+sd", "+r", "127.0.0.1", str(port), *paths]
    return subprocess.run(cmd, capture_output=True, timeout=120).returncode


def wait_for(predicate: object, timeout_s: float, what: str) -> None:
    """Poll ``predicate()`` until true or fail with ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class InProcess:
    """A :class:`~ctseg.serve.app.Service` with its HTTP API served by uvicorn in a thread."""

    service: Service
    http: str
    server: Any
    thread: threading.Thread

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.http, headers=headers, timeout=30.0)


@contextmanager
def in_process(
    config: ServeConfig, models: dict[str, LoadedModel], *, token: str | None = TOKEN, start: bool = True
) -> Iterator[InProcess]:
    """Run a service in this process (``start=False``: the HTTP API only, no worker drains the queue)."""
    import dataclasses

    import uvicorn

    from ctseg.serve.app import Service
    from ctseg.serve.http_api import create_app

    # Any free DICOM port: tests never compete for 11112.
    service = Service(dataclasses.replace(config, dicom_port=0), {"cpu": models}, token=token)
    if start:
        service.start()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn to start")
    try:
        yield InProcess(service, f"http://127.0.0.1:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if start:
            service.stop()
        else:
            service.queue.close()


def screenshot(url: str, out: Path, *, size: tuple[int, int] = (1280, 720)) -> Path:
    """Render ``url`` in headless Chromium (Debian ``chromium``) to the PNG ``out``."""
    cmd = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--hide-scrollbars",
        f"--window-size={size[0]},{size[1]}",
        f"--screenshot={out}",
        url,
    ]
    with tempfile.TemporaryDirectory(prefix="chromium-home-") as home:  # its profile and crash files
        result = subprocess.run(cmd, capture_output=True, timeout=120, env={**os.environ, "HOME": home})
    if result.returncode != 0 or not out.is_file():
        raise RuntimeError(f"chromium failed ({result.returncode}): {result.stderr.decode()[-2000:]}")
    return out
