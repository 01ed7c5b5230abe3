"""The model artefact on disk: a folder with ``model.pt`` (state dict only) and ``model.json`` (everything else).

``model.pt`` is loaded with ``torch.load(..., weights_only=True)``: no pickled code runs. ``model.json`` records the
sha256 of ``model.pt``; loading recomputes it and refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

from ctseg.errors import CheckpointError
from ctseg.io.atomic import write_bytes_atomic, write_text_atomic

WEIGHTS_NAME = "model.pt"
META_NAME = "model.json"
FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model_files(folder: Path, state_dict: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``model.pt`` and ``model.json`` (with the weights' sha256) into ``folder``, each atomically."""
    import torch

    folder = Path(folder)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
    data = buffer.getvalue()
    write_bytes_atomic(folder / WEIGHTS_NAME, data)
    meta = {**meta, "format_version": FORMAT_VERSION, "sha256": hashlib.sha256(data).hexdigest()}
    write_text_atomic(folder / META_NAME, json.dumps(meta, indent=2))
    return folder


def load_model_files(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and verify a model folder; return ``(state_dict, meta)``.

    Raises
    ------
    CheckpointError
        If a file is missing or unreadable, or ``model.pt``'s sha256 differs from the one in ``model.json``.
    """
    import torch

    folder = Path(folder)
    weights, meta_path = folder / WEIGHTS_NAME, folder / META_NAME
    for p in (weights, meta_path):
        if not p.is_file():
            raise CheckpointError(f"{p} is missing; a model folder holds {WEIGHTS_NAME} and {META_NAME}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON: {exc}") from exc
    digest = sha256_file(weights)
    if digest != meta.get("sha256"):
        raise CheckpointError(
            f"{weights} has sha256 {digest[:12]}..., but {META_NAME} records {str(meta.get('sha256'))[:12]}...; "
            "the weights were changed or belong to another model. Re-copy the whole model folder"
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or non-tensor files
        raise CheckpointError(f"{weights} cannot be loaded as a state dict: {exc}") from exc
    return state, meta
