"""The exported variants of a model and their record in ``model.json`` (section ``exports``).

One entry per variant: the runtime, the precision, the files (name -> sha256, verified before loading, like
``model.pt``), the sha256 of the ``model.pt`` it was exported from, the accuracy gate's result and the measured
seconds per window. This module is the only code that reads or writes that section.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ctseg.errors import CheckpointError
from ctseg.io.atomic import write_text_atomic
from ctseg.io.model_files import META_NAME, sha256_file

EXPORTS_KEY = "exports"

#: variant -> (runtime, precision, files). "default" is the runtime's own choice on the CPU at hand (OpenVINO runs
#: bf16 where the CPU has AVX-512 bf16 or AMX, else f32); "int8" is post-training static quantisation.
VARIANTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "openvino": ("openvino", "default", ("model.openvino.xml", "model.openvino.bin")),
    "openvino-int8": ("openvino", "int8", ("model.openvino-int8.xml", "model.openvino-int8.bin")),
    "onnxruntime": ("onnxruntime", "fp32", ("model.onnx",)),
    "onnxruntime-int8": ("onnxruntime", "int8", ("model.int8.onnx",)),
}
#: A variant keeps at least this fraction of the torch fp32 Dice for every class, or it is not recommended
#: (MLPerf's rule for a quantised 3D U-Net).
GATE_RATIO = 0.99


@dataclass(frozen=True)
class ExportRecord:
    """One exported variant as recorded in ``model.json``."""

    variant: str
    runtime: str
    precision: str
    files: dict[str, str]  # file name -> sha256
    weights_sha256: str
    patch_size: list[int]
    recommended: bool
    window_seconds: float | None = None
    gate: dict[str, Any] = field(default_factory=dict)
    #: torch's seconds per window (the model's precision) timed in the same interleaved rounds as this variant, so
    #: the two compare on one CPU state (None in exports recorded before it was measured).
    torch_window_seconds: float | None = None

    def speed_vs_torch(self) -> float | None:
        """This variant's window time as a fraction of torch's measured beside it (< 1: faster), if both are known."""
        if self.window_seconds is None or self.torch_window_seconds is None:
            return None
        return self.window_seconds / self.torch_window_seconds


def _seconds(value: object) -> float | None:
    """A recorded time in seconds, or None when it is missing, not a number or out of range (0, 1e6)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
        return None
    return float(value)


def read_exports(meta: dict[str, Any]) -> dict[str, ExportRecord]:
    """The variants recorded in ``model.json`` content that belong to its current ``model.pt``.

    Entries exported from other weights (a retrained model) or of unknown variants are left out.

    Raises
    ------
    CheckpointError
        If the section is malformed.
    """
    section = meta.get(EXPORTS_KEY, {})
    if not isinstance(section, dict):
        raise CheckpointError(f"{META_NAME}: '{EXPORTS_KEY}' is {type(section).__name__}, expected an object")
    out: dict[str, ExportRecord] = {}
    for name, entry in section.items():
        try:
            record = ExportRecord(**entry)
        except TypeError as exc:
            raise CheckpointError(f"{META_NAME}: export {name!r} is malformed ({exc}); re-run `ctseg export`") from exc
        if name in VARIANTS and record.weights_sha256 == meta.get("sha256"):
            # timings only rank variants: an unreadable one counts as unknown, not as an error
            out[name] = replace(
                record,
                window_seconds=_seconds(record.window_seconds),
                torch_window_seconds=_seconds(record.torch_window_seconds),
            )
    return out


#: The entry of the ``exports`` section that records torch's own seconds per window, measured beside the exports
#: (no files; ``--runtime auto`` keeps torch unless an export is clearly faster).
TORCH_TIMING = "torch"


def torch_window_seconds(meta: dict[str, Any]) -> float | None:
    """torch's seconds per window recorded at export for the current ``model.pt``, if any (range-checked)."""
    entry = meta.get(EXPORTS_KEY, {}).get(TORCH_TIMING) if isinstance(meta.get(EXPORTS_KEY), dict) else None
    if not isinstance(entry, dict) or entry.get("weights_sha256") != meta.get("sha256"):
        return None
    return _seconds(entry.get("window_seconds"))


def write_exports(folder: Path, meta: dict[str, Any], records: list[ExportRecord]) -> dict[str, Any]:
    """Add or replace ``records`` in ``folder/model.json`` (atomically); return the new content.

    The file is re-read first, so variants recorded since ``meta`` was loaded (another runtime) are kept.

    Raises
    ------
    CheckpointError
        If ``model.json`` now describes other weights than ``meta`` (the model changed during the export).
    """
    path = Path(folder) / META_NAME
    try:
        current = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read back to record the export: {exc}") from exc
    if current.get("sha256") != meta.get("sha256"):
        raise CheckpointError(f"{path} changed to other weights during the export; re-run `ctseg export`")
    names = {r.variant for r in records}
    section = {k: v for k, v in current.get(EXPORTS_KEY, {}).items() if k not in names}
    section.update({r.variant: asdict(r) for r in records})
    new = {**current, EXPORTS_KEY: dict(sorted(section.items()))}
    write_text_atomic(path, json.dumps(new, indent=2))
    return new


def read_verified(folder: Path, record: ExportRecord) -> dict[str, bytes]:
    """The bytes of every file of a variant, each checked against its recorded sha256.

    Raises
    ------
    CheckpointError
        If a file is missing or its sha256 differs from the record (changed or from another export).
    """
    import hashlib

    out: dict[str, bytes] = {}
    for name, expected in record.files.items():
        path = Path(folder) / name
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing; {META_NAME} lists it for '{record.variant}'. Re-run `ctseg export`"
            )
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise CheckpointError(
                f"{path} has sha256 {digest[:12]}..., but {META_NAME} records {expected[:12]}...; the file was changed "
                "or belongs to another export. Re-copy the model folder or re-run `ctseg export`"
            )
        out[name] = data
    return out


def file_hashes(folder: Path, names: tuple[str, ...]) -> dict[str, str]:
    """``{name: sha256}`` of files just written into ``folder``."""
    return {n: sha256_file(Path(folder) / n) for n in names}
