"""Which prediction belongs to which reference: case names from file and folder names.

Matching: a case's name is its file name without the image suffix (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``,
``.mha``, ``.mhd``) and without a trailing ``_0000`` (nnU-Net channel) or ``_mask``; a sub-folder holding
``mask.<suffix>`` (the ``ctseg predict`` layout ``PRED/<case>/mask.nii.gz``) is named after the folder. So
``REF/case1.nii.gz`` matches ``PRED/case1.nii.gz``, ``PRED/case1_0000.nrrd`` or ``PRED/case1/mask.nii.gz``. A
single file (or a single ``<case>/`` folder) is one case; two single files are compared whatever their names.
"""

from __future__ import annotations

from pathlib import Path

from ctseg.errors import EvaluationError
from ctseg.io.atomic import full_suffix
from ctseg.io.images import IMAGE_SUFFIXES

#: Name endings that are conventions, not part of the case name.
CASE_SUFFIXES = ("_0000", "_mask")
#: File name (before the suffix) of a prediction inside ``PRED/<case>/``.
MASK_STEM = "mask"


def case_name(path: Path) -> str:
    """The case a label file or ``<case>/`` prediction folder belongs to (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return path.name
    suffix = full_suffix(path)
    stem = path.name[: len(path.name) - len(suffix)]
    if stem == MASK_STEM:
        return path.parent.name
    for ending in CASE_SUFFIXES:
        if stem.endswith(ending) and len(stem) > len(ending):
            return stem[: -len(ending)]
    return stem


def mask_in(folder: Path) -> Path | None:
    """The ``mask.<suffix>`` file of a ``<case>/`` prediction folder, if it holds one."""
    hits = [folder / f"{MASK_STEM}{s}" for s in IMAGE_SUFFIXES if (folder / f"{MASK_STEM}{s}").is_file()]
    return hits[0] if hits else None


def find_cases(path: Path, *, role: str) -> dict[str, Path]:
    """Case name -> label file for a file, a ``<case>/mask.*`` folder, or a folder of either.

    Raises
    ------
    EvaluationError
        If nothing is found, a name appears twice, or a file is not an image format.
    """
    path = Path(path)
    if path.is_file():
        if full_suffix(path) not in IMAGE_SUFFIXES:
            raise EvaluationError(f"{role} {path} is not a label file; expected one of {', '.join(IMAGE_SUFFIXES)}")
        return {case_name(path): path}
    single = mask_in(path)
    if single is not None:
        return {path.name: single}
    cases: dict[str, Path] = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        found = mask_in(entry) if entry.is_dir() else entry if full_suffix(entry) in IMAGE_SUFFIXES else None
        if found is None:
            continue
        name = case_name(entry)
        if name in cases:
            raise EvaluationError(
                f"{role} folder {path}: case {name!r} appears twice ({cases[name].name}, {entry.name}); keep one"
            )
        cases[name] = found
    if not cases:
        hint = "; for an nnU-Net dataset pass its labelsTr folder" if (path / "labelsTr").is_dir() else ""
        raise EvaluationError(
            f"{role} folder {path} holds no label files ({', '.join(IMAGE_SUFFIXES)}) and no <case>/mask.* "
            f"folders{hint}"
        )
    return cases


def match_cases(pred: Path, ref: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``(predictions, references)``, each case name -> label file; two single files pair whatever their names."""
    preds, refs = find_cases(pred, role="PRED"), find_cases(ref, role="REF")
    if len(preds) == 1 and len(refs) == 1 and (pred.is_file() or mask_in(pred)) and ref.is_file():
        return {next(iter(refs)): next(iter(preds.values()))}, refs  # two single files: names need not agree
    return preds, refs
