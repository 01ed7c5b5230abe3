"""Output path safety: case names that are safe folder names, writes confined to ``--out``, inputs never outputs.

Every case output path is made by :func:`path_inside`, which refuses a path that resolves outside the output folder
(a name of ``..``, a symlink planted in the output folder). :func:`refuse_output_over_inputs` refuses an output that
equals, lies inside, or contains an input, so no command can overwrite what it reads.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from ctseg.errors import OutputPathError

#: Longest case name in characters; longer names are cut and end in a short hash of the full name.
MAX_NAME_CHARS = 96
_HASH_CHARS = 8
#: Names a case folder must not take: the manifest files written beside the case folders.
_RESERVED_PREFIX = "manifest"


def short_hash(text: str, chars: int = _HASH_CHARS) -> str:
    """A short, stable hex digest of ``text`` (for names that must not reveal the text, e.g. a UID)."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:chars]


def safe_case_name(raw: str) -> str:
    """A case name that is one safe folder name: printable, no separators, never empty, ``.`` or ``..``.

    Undecodable bytes of a file name (Python's surrogate escapes), control and separator characters become ``_``;
    leading dots are dropped (a hidden name); a name over :data:`MAX_NAME_CHARS` is cut and ends in a hash of the
    whole name, so long names stay distinct.

    >>> safe_case_name("../a/b")
    'a_b'
    >>> safe_case_name("..")
    'case'
    """
    out = []
    for ch in raw:
        bad = ch in "/\\" or 0xD800 <= ord(ch) <= 0xDFFF or (unicodedata.category(ch)[0] in "CZ" and ch != " ")
        out.append("_" if bad else ch)
    name = "".join(out).strip(" ._")
    if len(name) > MAX_NAME_CHARS:
        name = f"{name[: MAX_NAME_CHARS - _HASH_CHARS - 1]}_{short_hash(raw)}"
    if not name:
        name = "case"
    if name.lower().startswith(_RESERVED_PREFIX):
        name = f"case_{name}"
    return name


def printable(text: object) -> str:
    """``text`` as valid UTF-8 for a terminal, CSV or log: undecodable file-name bytes become U+FFFD."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` made unique (case-insensitively, for case-insensitive file systems) with ``_2``, ``_3`` suffixes."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, k = name, 1
        while candidate.lower() in seen:
            k += 1
            candidate = f"{name}_{k}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def is_within(path: Path, folder: Path) -> bool:
    """Whether ``path`` equals or lies inside ``folder``, both resolved (symlinks followed)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def path_inside(out_dir: Path, *parts: str) -> Path:
    """``out_dir / parts...``, refused unless it resolves strictly inside ``out_dir``.

    Raises
    ------
    OutputPathError
        When the path resolves to ``out_dir`` itself or outside it (``..``, an absolute part, a symlink).
    """
    path = Path(out_dir).joinpath(*parts)
    resolved, root = path.resolve(), Path(out_dir).resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise OutputPathError(
            f"output {os.sep.join(parts)!r} resolves to {resolved}, outside the output folder {root}; "
            "ctseg writes only inside --out (remove the link or rename the case)"
        )
    return path


def refuse_output_over_inputs(out: Path, inputs: Iterable[Path], *, option: str = "--out") -> None:
    """Refuse an output that is an input, lies inside an input folder, or contains an input.

    Raises
    ------
    OutputPathError
        Naming the input and the option to change.
    """
    out_r = Path(out).resolve()
    for path in inputs:
        in_r = Path(path).resolve()
        if out_r == in_r or out_r.is_relative_to(in_r):
            raise OutputPathError(
                f"{option} {out} is or lies inside the input {path}; inputs are never modified, choose an "
                f"{option} outside every input"
            )
        if in_r.is_relative_to(out_r):
            raise OutputPathError(
                f"the input {path} lies inside {option} {out}, where outputs are written and replaced; move the "
                f"input or choose another {option}"
            )
