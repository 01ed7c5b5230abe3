"""Class names for an evaluation, from an nnU-Net ``dataset.json`` or a ctseg ``model.json``."""

from __future__ import annotations

import json
from pathlib import Path

from ctseg.errors import EvaluationError


def read_label_names(path: Path) -> dict[int, str]:
    """Class value -> name from an nnU-Net ``dataset.json`` (``labels``: name -> value) or a ctseg ``model.json``
    (``labels``: value -> name); a folder holding either file works too. Background (0) is left out.

    Raises
    ------
    EvaluationError
        If the file is missing, not JSON, or has no usable ``labels`` mapping.
    """
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in ("model.json", "dataset.json") if (path / n).is_file()]
        if not found:
            raise EvaluationError(f"{path} holds neither model.json nor dataset.json; pass one of those files")
        path = found[0]
    try:
        entries = json.loads(path.read_text())["labels"].items()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise EvaluationError(
            f"{path}: cannot read a 'labels' mapping ({exc}); expected dataset.json "
            '({"labels": {"liver": 1}}) or model.json ({"labels": {"1": "liver"}})'
        ) from exc
    names: dict[int, str] = {}
    for key, value in entries:
        if isinstance(value, int) and not isinstance(value, bool):
            names[value] = str(key)  # dataset.json: name -> value
        elif str(key).isdigit() and isinstance(value, str):
            names[int(key)] = value  # model.json: value -> name
        else:
            raise EvaluationError(
                f"{path}: label entry {key!r}: {value!r} is neither name -> integer value nor value -> name "
                "(region-based labels, lists of values, are not supported)"
            )
    names.pop(0, None)
    if not names:
        raise EvaluationError(f"{path}: 'labels' has no foreground class (values other than 0)")
    return names
