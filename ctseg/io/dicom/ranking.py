"""Choose the series of a study to read, as a radiologist would, and say why every other one lost.

Rule (written out for users in ``docs/series_choice.md``). First a series is **removed** when it fails its checks
(localizer-only, secondary capture, missing slices, ...) or its ImageType marks a projection (LOCALIZER, SCOUT, MIP,
MinIP, PROJECTION IMAGE). The rest are **ranked**, each rule deciding only when all rules above it tie:

1. CT before another modality (only with ``allow_non_ct``);
2. kernel class in the order of ``prefer_kernel`` (soft: soft, unknown, lung, bone; ``any`` skips this rule);
3. axial before coronal, sagittal or oblique;
4. ORIGINAL before DERIVED/SECONDARY before a reformat (MPR, REFORMATTED, CPR);
5. slice thickness inside ``thickness_band_mm`` (default 0.5-5 mm) before outside it;
6. a regularly spaced stack before one with gaps or uneven steps (tilt is normal for head CT and not ranked);
7. full coverage along the slice normal (at least :data:`COVERAGE_FRACTION` of the longest still tied) before less;
8. more slices; 9. thinner slices;
10. ties: the lower SeriesNumber, then the lower SeriesInstanceUID (so the choice never depends on file order).

Contrast phase (ContrastBolusAgent, phase words in the description) is reported, not ranked. ``series`` (``--series``)
steers the choice: a SeriesInstanceUID, a SeriesNumber or a description glob (case-insensitive).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ctseg.errors import DicomSeriesError, SeriesReason
from ctseg.io.dicom.choose import (
    KERNEL_ORDER,
    KERNEL_WORDS,
    HeaderFacts,
    header_facts,
    image_type_rank,
    projection_word,
)
from ctseg.io.dicom.plan import CheckedSeries, ReadOptions, SeriesCheck

#: A series covering at least this fraction of the longest candidate's extent counts as full coverage.
COVERAGE_FRACTION = 0.9
#: Rule codes that remove a series before ranking (see :func:`_removed`).
REMOVAL_RULES = ("NOT_USABLE", "PROJECTION")
#: Tolerance of the thickness band (mm), for values written with rounding.
BAND_TOL_MM = 1e-3
_ORIENTATIONS = ("sagittal", "coronal", "axial")
_IMAGE_TYPE_WORDS = ("ORIGINAL", "DERIVED/SECONDARY", "DERIVED/MPR reformat")


@dataclass(frozen=True)
class Candidate:
    """One series as the choice sees it: its check, header facts, grid facts and the verdict.

    ``verdict`` is ``"chosen"`` for the chosen series, else why it lost or which rule removed it; ``rule`` is that
    rule's code (``CHOSEN``, ``NOT_USABLE``, ``PROJECTION``, ``KERNEL``, ``ORIENTATION``, ``IMAGE_TYPE``,
    ``THICKNESS_BAND``, ``REGULAR``, ``COVERAGE``, ``SLICES``, ``THICKNESS``, ``SERIES_NUMBER``, ``UID``, ``NOT_ASKED``,
    ``MODALITY``).
    """

    plan: SeriesCheck
    facts: HeaderFacts
    orientation: str
    coverage_mm: float | None
    verdict: str = ""
    rule: str = ""

    @property
    def series_uid(self) -> str:
        """SeriesInstanceUID (or the fallback key)."""
        return self.plan.series_uid

    @property
    def series_number(self) -> str:
        """SeriesNumber as written (``""`` when absent)."""
        value = self.plan.group.first.get("SeriesNumber", "")
        return "" if value is None else str(value)

    @property
    def slices(self) -> int:
        """Slices in the stack (0 for a series that failed before its stack was formed)."""
        return len(self.plan.slices)

    @property
    def thickness_mm(self) -> float | None:
        """SliceThickness, else the slice step of a usable series."""
        if self.facts.thickness_mm is not None:
            return self.facts.thickness_mm
        return self.plan.step_mm if self.plan.usable else None

    @property
    def kernel_class(self) -> str:
        """soft, bone, lung or unknown."""
        return self.facts.kernel_class


@dataclass(frozen=True)
class SeriesChoice:
    """Every candidate with its verdict, the chosen one (``None`` when no series passes) and why, in words."""

    candidates: tuple[Candidate, ...]
    chosen: Candidate | None
    reason: str

    @property
    def kernel_class(self) -> str:
        """The chosen series' kernel class (``""`` when none was chosen)."""
        return self.chosen.kernel_class if self.chosen else ""

    @property
    def losers(self) -> tuple[Candidate, ...]:
        """The candidates not chosen, each with its ``verdict``."""
        return tuple(c for c in self.candidates if c is not self.chosen)

    @property
    def passing(self) -> tuple[Candidate, ...]:
        """The candidates no rule removed (usable slice stacks), in the order they were found: what an
        every-series run reads. When ``series`` steered the choice, only the series it named."""
        return tuple(c for c in self.candidates if c.rule not in (*REMOVAL_RULES, "NOT_ASKED") or c is self.chosen)


def describe(plan: SeriesCheck) -> Candidate:
    """The :class:`Candidate` of a checked series (headers only)."""
    if not isinstance(plan, CheckedSeries):
        return Candidate(plan, header_facts(plan.group.first, plan.description), "", None)
    # The first slice of the stack, not the first file: a localizer filed inside a series is skipped by the checks.
    facts = header_facts(plan.slices[0].file.header, plan.description)
    axis = int(np.argmax(np.abs(plan.normal)))
    coverage = float(plan.positions_mm[-1] - plan.positions_mm[0]) + plan.step_mm
    return Candidate(plan, facts, _ORIENTATIONS[axis], coverage)


def _number(c: Candidate) -> float:
    try:
        return float(c.series_number)
    except ValueError:
        return float("inf")


def _in_band(c: Candidate, band: tuple[float, float]) -> bool:
    t = c.thickness_mm
    return t is not None and band[0] - BAND_TOL_MM <= t <= band[1] + BAND_TOL_MM


def _article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _mm(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g} mm"


#: A rank rule: code, key (smaller is better; it may look at the pool still tied) and why a loser lost.
_Rule = tuple[
    str, Callable[[Candidate, Sequence[Candidate]], Any], Callable[[Candidate, Candidate, Sequence[Candidate]], str]
]
#: Corrections that mean the stack is not a regular acquisition (gaps or uneven steps, resampled).
_IRREGULAR = (SeriesReason.MISSING_SLICE, SeriesReason.INCONSISTENT_SPACING)


def _irregular(c: Candidate) -> bool:
    return any(reason in _IRREGULAR for reason, _ in c.plan.warnings)


def _full(c: Candidate, pool: Sequence[Candidate]) -> bool:
    longest = max((x.coverage_mm or 0.0 for x in pool), default=0.0)
    return (c.coverage_mm or 0.0) >= COVERAGE_FRACTION * longest


def _rules(options: ReadOptions) -> list[_Rule]:
    order = KERNEL_ORDER[options.prefer_kernel]
    band = options.thickness_band_mm
    rules: list[_Rule] = [
        ("MODALITY", lambda c, p: c.plan.modality != "CT", lambda c, w, p: f"modality {c.plan.modality}, not CT"),
    ]
    if order:
        rules.append(
            (
                "KERNEL",
                lambda c, p: order.index(c.kernel_class),
                lambda c, w, p: (
                    f"{KERNEL_WORDS[c.kernel_class]} kernel ({c.facts.kernel or 'none'}) while "
                    f"{_article(KERNEL_WORDS[w.kernel_class])} series exists"
                ),
            )
        )
    rules += [
        (
            "ORIENTATION",
            lambda c, p: c.orientation != "axial",
            lambda c, w, p: f"{c.orientation}, not axial (acquired axial first)",
        ),
        (
            "IMAGE_TYPE",
            lambda c, p: image_type_rank(c.facts.image_type),
            lambda c, w, p: (
                f"{_IMAGE_TYPE_WORDS[image_type_rank(c.facts.image_type)]} "
                f"({'/'.join(c.facts.image_type)}); the chosen series is "
                f"{_IMAGE_TYPE_WORDS[image_type_rank(w.facts.image_type)]}"
            ),
        ),
        (
            "THICKNESS_BAND",
            lambda c, p: not _in_band(c, band),
            lambda c, w, p: f"thickness {_mm(c.thickness_mm)} outside the {band[0]:g}-{band[1]:g} mm band",
        ),
        (
            "REGULAR",
            lambda c, p: _irregular(c),
            lambda c, w, p: "uneven slice spacing or gaps (resampled) while a regularly spaced series exists",
        ),
        (
            "COVERAGE",
            lambda c, p: not _full(c, p),
            lambda c, w, p: f"less coverage ({_mm(c.coverage_mm)} vs {_mm(max(x.coverage_mm or 0.0 for x in p))})",
        ),
        (
            "SLICES",
            lambda c, p: -c.slices,
            lambda c, w, p: (
                f"fewer slices ({c.slices} vs {w.slices}; {_mm(c.thickness_mm)} vs {_mm(w.thickness_mm)} thick)"
            ),
        ),
        (
            "THICKNESS",
            lambda c, p: c.thickness_mm if c.thickness_mm is not None else float("inf"),
            lambda c, w, p: f"thicker slices ({_mm(c.thickness_mm)} vs {_mm(w.thickness_mm)})",
        ),
        (
            "SERIES_NUMBER",
            lambda c, p: _number(c),
            lambda c, w, p: f"tie with the chosen series; the lower SeriesNumber ({w.series_number}) wins",
        ),
        (
            "UID",
            lambda c, p: c.series_uid,
            lambda c, w, p: "tie with the chosen series; the lower SeriesInstanceUID wins",
        ),
    ]
    return rules


def _removed(c: Candidate) -> tuple[str, str] | None:
    """The rule that removes a candidate before ranking, with why; ``None`` when it is ranked."""
    if c.plan.error is not None:
        return "NOT_USABLE", f"not usable: {c.plan.error}"
    word = projection_word(c.facts.image_type)
    if word:
        return "PROJECTION", f"{word} image (ImageType {'/'.join(c.facts.image_type)}), not a slice stack"
    return None


def _summary(c: Candidate, options: ReadOptions) -> str:
    parts = [
        f"{KERNEL_WORDS[c.kernel_class]} kernel" + (f" ({c.facts.kernel})" if c.facts.kernel else ""),
        c.orientation,
        _IMAGE_TYPE_WORDS[image_type_rank(c.facts.image_type)],
        f"{_mm(c.thickness_mm)} thick",
        f"{c.slices} slices over {_mm(c.coverage_mm)}",
    ]
    if not _in_band(c, options.thickness_band_mm):
        lo, hi = options.thickness_band_mm
        parts.append(f"outside the {lo:g}-{hi:g} mm band (no series inside it)")
    return ", ".join(parts)


def rank_candidates(candidates: Sequence[Candidate], options: ReadOptions = ReadOptions()) -> SeriesChoice:
    """Remove and rank the candidates by the module's rule; every candidate gets its verdict."""
    verdicts: dict[int, tuple[str, str]] = {}
    eligible = []
    for i, c in enumerate(candidates):
        removed = _removed(c)
        if removed is None:
            eligible.append(i)
        else:
            verdicts[i] = removed
    if not eligible:
        out = tuple(replace(c, rule=verdicts[i][0], verdict=verdicts[i][1]) for i, c in enumerate(candidates))
        why = "; ".join(f"{c.plan.label}: {c.verdict}" for c in out)
        return SeriesChoice(out, None, f"no series passes ({why})" if out else "no series found")
    # Rule by rule, the pool keeps the candidates tied for best; the others lose on that rule.
    pool = list(eligible)
    lost: list[tuple[int, _Rule, list[Candidate]]] = []
    for rule in _rules(options):
        members = [candidates[i] for i in pool]
        keys = [rule[1](c, members) for c in members]
        best_key = min(keys)
        lost += [(i, rule, members) for i, k in zip(pool, keys, strict=True) if k != best_key]
        pool = [i for i, k in zip(pool, keys, strict=True) if k == best_key]
    winner = pool[0]  # the UID rule leaves one
    best = candidates[winner]
    verdicts[winner] = ("CHOSEN", "chosen")
    for i, (code, _, explain), members in lost:
        verdicts[i] = (code, explain(candidates[i], best, members))
    out = tuple(replace(c, rule=verdicts[i][0], verdict=verdicts[i][1]) for i, c in enumerate(candidates))
    reason = f"{_summary(best, options)} [{len(eligible)} of {len(candidates)} series ranked]"
    return SeriesChoice(out, out[winner], reason)


def _matches(candidates: Sequence[Candidate], text: str) -> list[Candidate]:
    """The candidates ``text`` names: by UID, else by SeriesNumber (all digits), else by description glob."""
    by_uid = [c for c in candidates if c.series_uid == text]
    if by_uid:
        return by_uid
    if text.strip().isdigit():
        return [c for c in candidates if c.series_number.strip().isdigit() and int(c.series_number) == int(text)]
    return [c for c in candidates if fnmatch.fnmatchcase(c.plan.description.lower(), text.lower())]


def choose_series(
    plans: Sequence[SeriesCheck], *, series: str | None = None, options: ReadOptions = ReadOptions()
) -> SeriesChoice:
    """Choose the series to read from checked series, with every other series' reason for losing.

    Parameters
    ----------
    plans
        The checked series of a study.
    series
        Steer the choice: a SeriesInstanceUID, a SeriesNumber, or a glob on SeriesDescription (case-insensitive,
        e.g. ``*venous*``). The matching series is chosen whether or not it passes the rule (its own check error
        is raised when it is read).
    options
        ``prefer_kernel`` and ``thickness_band_mm`` steer the ranking.

    Raises
    ------
    DicomSeriesError
        ``SERIES_NOT_FOUND`` when ``series`` matches nothing; ``AMBIGUOUS_SERIES`` when it matches several.
    """
    candidates = [describe(p) for p in plans]
    if series is None:
        return rank_candidates(candidates, options)
    hits = _matches(candidates, series)
    if len(hits) == 1:
        out = tuple(
            replace(c, rule="CHOSEN", verdict="chosen")
            if c is hits[0]
            else replace(c, rule="NOT_ASKED", verdict=f"not the series asked for (--series {series})")
            for c in candidates
        )
        chosen = out[candidates.index(hits[0])]
        return SeriesChoice(out, chosen, f"chosen by --series {series}")
    listing = "; ".join(_listing(c) for c in (hits or candidates)) or "none"
    if not hits:
        raise DicomSeriesError(
            SeriesReason.SERIES_NOT_FOUND,
            f"--series {series} matches no SeriesInstanceUID, SeriesNumber or description; series found: {listing}",
        )
    raise DicomSeriesError(
        SeriesReason.AMBIGUOUS_SERIES,
        f"--series {series} matches {len(hits)} series: {listing}; pass one SeriesInstanceUID instead",
    )


def _listing(c: Candidate) -> str:
    return f"#{c.series_number or '?'} '{c.plan.description}' {c.series_uid}"
