"""What a radiologist reads from a series header before choosing it: kernel class, image type, orientation, phase.

The vendor conventions are tables (data, one test each in ``tests/unit/io/test_series_choice.py``); the ranking
that uses them is :mod:`ctseg.io.dicom.ranking`. Everything here reads headers only (the tags come from the fast
header parser), never pixel data.

Kernel classes: ``soft`` (soft tissue / standard / brain), ``bone`` (sharp, bone, detail), ``lung`` (lung / chest),
``unknown`` (no ConvolutionKernel, or a name no table knows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: The kernel classes, in the order a soft-tissue model prefers them.
KERNEL_CLASSES = ("soft", "unknown", "lung", "bone")
#: What ``prefer_kernel`` may be: a class, or ``any`` (kernel not ranked).
KERNEL_PREFERENCES = ("soft", "bone", "lung", "any")
#: Preference order of the classes for each ``prefer_kernel`` (first is best).
KERNEL_ORDER: dict[str, tuple[str, ...]] = {
    "soft": ("soft", "unknown", "lung", "bone"),
    "bone": ("bone", "lung", "unknown", "soft"),
    "lung": ("lung", "bone", "unknown", "soft"),
    "any": (),
}
#: Words for the classes in messages.
KERNEL_WORDS = {"soft": "soft-tissue", "bone": "bone", "lung": "lung", "unknown": "unknown"}

#: Siemens kernel: letter(s) + sharpness number + optional suffix (B30f, Br40d, I30f, Hr38, Qr40, Bv40, Bl57, B70f).
SIEMENS_KERNEL = re.compile(r"^([A-Z][a-z]?)(\d{2})([a-z]?)$")
#: Siemens prefixes that always mean a lung kernel (Bl57, Bl64).
SIEMENS_LUNG_PREFIXES = frozenset({"Bl"})
#: Siemens sharpness bounds: below ``soft_below`` soft; classic one-letter names up to ``lung_below`` lung (B60),
#: above it bone (B70f); two-letter names (Br64, Hr68, Qr59) from ``soft_below`` up are bone.
SIEMENS_SOFT_BELOW = 50
SIEMENS_CLASSIC_LUNG_BELOW = 70
#: GE kernel names (an "HD " prefix is ignored: HD STANDARD is STANDARD).
GE_KERNELS: dict[str, str] = {
    "SOFT": "soft",
    "STANDARD": "soft",
    "STND": "soft",
    "STD": "soft",
    "STD+": "soft",
    "SMOOTH": "soft",
    "DETAIL": "bone",
    "BONE": "bone",
    "BONEPLUS": "bone",
    "EDGE": "bone",
    "LUNG": "lung",
    "CHEST": "lung",
}
#: Philips kernel letters: A/B/C body and UA/UB/UC brain are soft; D/E (and EB, EC) bone; L and the Y-sharp
#: family lung.
PHILIPS_KERNELS: dict[str, str] = {
    **dict.fromkeys(("A", "B", "C", "UA", "UB", "UC", "CB"), "soft"),
    **dict.fromkeys(("D", "E", "EA", "EB", "EC"), "bone"),
    **dict.fromkeys(("L", "LA", "YA", "YB", "YC", "YD", "YE", "YF"), "lung"),
}
#: Toshiba/Canon FC numbers: (first number of the range, class); FC01-FC29 body and head soft, FC30-FC49 bone,
#: FC50-FC79 lung, FC80 up high-resolution bone.
CANON_FC = re.compile(r"^FC(\d{1,2})$")
CANON_RANGES: tuple[tuple[int, str], ...] = ((0, "soft"), (30, "bone"), (50, "lung"), (80, "bone"))
#: Words any vendor uses, checked after the vendor tables (first match wins).
KERNEL_WORDS_ANY: tuple[tuple[str, str], ...] = (
    ("LUNG", "lung"),
    ("CHEST", "lung"),
    ("BONE", "bone"),
    ("SHARP", "bone"),
    ("EDGE", "bone"),
    ("SOFT", "soft"),
    ("STANDARD", "soft"),
    ("SMOOTH", "soft"),
    ("BRAIN", "soft"),
    ("BODY", "soft"),
)
#: Manufacturer substrings (upper case) -> vendor table name.
VENDORS: dict[str, str] = {
    "SIEMENS": "siemens",
    "GE ": "ge",
    "GE MEDICAL": "ge",
    "PHILIPS": "philips",
    "TOSHIBA": "canon",
    "CANON": "canon",
}

#: ImageType values that are not a slice stack: removed before ranking.
PROJECTION_TYPES = ("LOCALIZER", "SCOUT", "MIP", "MINIP", "MNIP", "PROJECTION IMAGE", "PROJECTION", "VOLUME_RENDER")
#: ImageType values of a reformat (ranked after an acquired series).
REFORMAT_TYPES = ("MPR", "REFORMATTED", "CURVED", "CPR")
#: Phase words in a SeriesDescription (lower case, matched as words), in the order they are tested.
PHASE_WORDS: tuple[tuple[str, str], ...] = (
    (r"non[- ]?contrast|unenhanced|native|nativ|plain|w/?o\b|without", "non-contrast"),
    (r"arterial|arteriell|art\b|angio|cta\b", "arterial"),
    (r"portal|venous|venös|pv\b", "venous"),
    (r"delayed|late|excretory|urographic", "delayed"),
)


def _kernel_text(value: Any) -> str:
    """ConvolutionKernel as one name: the first value of a multi-valued kernel (``I30f\\3`` -> ``I30f``)."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return str(value or "").strip()


def vendor_of(manufacturer: str) -> str:
    """The vendor table for a Manufacturer value (``""`` when none matches)."""
    text = manufacturer.upper() + " "
    return next((vendor for key, vendor in VENDORS.items() if key in text), "")


def _siemens(kernel: str) -> str | None:
    m = SIEMENS_KERNEL.match(kernel)
    if m is None:
        return None
    prefix, number = m.group(1), int(m.group(2))
    if prefix in SIEMENS_LUNG_PREFIXES:
        return "lung"
    if number < SIEMENS_SOFT_BELOW:
        return "soft"
    if len(prefix) == 1 and number < SIEMENS_CLASSIC_LUNG_BELOW:
        return "lung"
    return "bone"


def _ge(kernel: str) -> str | None:
    name = kernel.upper()
    name = name[3:] if name.startswith("HD ") else name
    return GE_KERNELS.get(name)


def _philips(kernel: str) -> str | None:
    return PHILIPS_KERNELS.get(kernel.upper())


def _canon(kernel: str) -> str | None:
    m = CANON_FC.match(kernel.upper())
    if m is None:
        return None
    number = int(m.group(1))
    return [cls for first, cls in CANON_RANGES if number >= first][-1]


_VENDOR_RULES = {"siemens": _siemens, "ge": _ge, "philips": _philips, "canon": _canon}


def kernel_class(kernel: Any, manufacturer: str = "") -> str:
    """The kernel class (soft, bone, lung, unknown) of a ConvolutionKernel value.

    The Manufacturer's table is tried first (it settles names that mean different things per vendor, e.g. a
    one-letter Philips ``B``); then every vendor's table in a fixed order, then words any vendor uses.

    >>> kernel_class("B70f", "SIEMENS"), kernel_class("STANDARD", "GE MEDICAL SYSTEMS"), kernel_class("FC52")
    ('bone', 'soft', 'lung')
    """
    name = _kernel_text(kernel)
    if not name:
        return "unknown"
    vendor = vendor_of(manufacturer)
    order = [vendor] if vendor else []
    order += [v for v in _VENDOR_RULES if v != vendor]
    for v in order:
        found = _VENDOR_RULES[v](name)
        if found is not None:
            return found
    upper = name.upper()
    return next((cls for word, cls in KERNEL_WORDS_ANY if word in upper), "unknown")


def image_type_values(value: Any) -> tuple[str, ...]:
    """ImageType as upper-case values (a single string is split on backslashes)."""
    if isinstance(value, str):
        value = value.split("\\")
    return tuple(str(v).strip().upper() for v in (value or ()) if str(v).strip())


def projection_word(image_type: tuple[str, ...]) -> str:
    """The ImageType value that makes this a projection or localizer (``""`` for a slice stack)."""
    return next((v for v in image_type if v in PROJECTION_TYPES), "")


def image_type_rank(image_type: tuple[str, ...]) -> int:
    """0 for an ORIGINAL acquisition, 1 for DERIVED/SECONDARY, 2 for a reformat (MPR, REFORMATTED, CPR)."""
    if any(v in REFORMAT_TYPES for v in image_type):
        return 2
    if image_type and image_type[0] == "ORIGINAL" and "SECONDARY" not in image_type[1:2]:
        return 0
    return 1 if image_type else 0


def contrast_phase(description: str, agent: Any) -> str:
    """The phase named in the description, else ``contrast`` when ContrastBolusAgent is set, else ``""``."""
    text = description.lower()
    for pattern, phase in PHASE_WORDS:
        if re.search(rf"(?<![a-z])(?:{pattern})", text):
            return phase
    if isinstance(agent, (list, tuple)):
        agent = " ".join(str(a) for a in agent)
    return "contrast" if str(agent or "").strip() else ""


@dataclass(frozen=True)
class HeaderFacts:
    """The series-level header values the choice uses (from the first file; no patient-identifying value)."""

    kernel: str
    kernel_class: str
    manufacturer: str
    image_type: tuple[str, ...]
    thickness_mm: float | None
    contrast: str


def header_facts(header: Any, description: str) -> HeaderFacts:
    """Read :class:`HeaderFacts` from a header (a FastHeader or pydicom Dataset)."""
    manufacturer = str(header.get("Manufacturer", "") or "").strip()
    kernel = _kernel_text(header.get("ConvolutionKernel"))
    try:
        thickness: float | None = float(header.get("SliceThickness"))
    except (TypeError, ValueError):
        thickness = None
    if thickness is not None and not 0.0 < thickness < 1000.0:
        thickness = None  # a zero or absurd thickness says nothing; the slice step stands in
    return HeaderFacts(
        kernel=kernel,
        kernel_class=kernel_class(kernel, manufacturer),
        manufacturer=manufacturer,
        image_type=image_type_values(header.get("ImageType")),
        thickness_mm=thickness,
        contrast=contrast_phase(description, header.get("ContrastBolusAgent")),
    )
