"""Choosing the series of a study: vendor kernel tables, image type, orientation, thickness band, coverage, ties.

Each study is written with pydicom (tests/synthetic.py) with the headers a scanner writes: ConvolutionKernel,
Manufacturer, ImageType, SliceThickness, SeriesDescription, ContrastBolusAgent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ctseg.errors import ConfigError, DicomSeriesError, SeriesReason
from ctseg.io.dicom import ReadOptions, inspect_dicom, read_dicom
from ctseg.io.dicom.choose import contrast_phase, image_type_rank, kernel_class, projection_word, vendor_of
from ctseg.io.dicom.ranking import Candidate, SeriesChoice
from tests.synthetic import write_oracle_series

AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
CORONAL = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0))
SAGITTAL = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))
ORIGINAL = ["ORIGINAL", "PRIMARY", "AXIAL"]
#: The series written by one test belong to one study, as in a real examination.
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


def write_series(
    root: Path,
    folder: str,
    *,
    number: int,
    description: str = "BODY",
    kernel: Any = "B30f",
    manufacturer: str = "SIEMENS",
    image_type: list[str] | None = None,
    thickness: float = 1.0,
    n: int = 6,
    step: float = 1.0,
    orientation: tuple[tuple[float, ...], tuple[float, ...]] = AXIAL,
    contrast: str | None = None,
    series_uid: str | None = None,
) -> None:
    """One synthetic series (4x4 slices) in ``root/folder`` with the given headers."""
    row, col = (np.asarray(v, float) for v in orientation)
    normal = np.cross(row, col)
    ipps = [tuple(k * step * normal) for k in range(n)]
    extra: dict[str, Any] = {
        "StudyInstanceUID": STUDY_UID,
        "Manufacturer": manufacturer,
        "ImageType": image_type or ORIGINAL,
        "SliceThickness": f"{thickness:g}",
    }
    if kernel is not None:
        extra["ConvolutionKernel"] = kernel
    if contrast is not None:
        extra["ContrastBolusAgent"] = contrast
    write_oracle_series(
        root / folder,
        ipps,
        rows=4,
        cols=4,
        row_cos=tuple(row),
        col_cos=tuple(col),
        series_number=number,
        description=description,
        series_uid=series_uid,
        extra=extra,
    )


def choice_of(root: Path, **options: Any) -> SeriesChoice:
    found = inspect_dicom(root, options=ReadOptions(**options))
    assert found.choice is not None
    return found.choice


def by_number(choice: SeriesChoice, number: int) -> Candidate:
    return next(c for c in choice.candidates if c.series_number == str(number))


def chosen_number(choice: SeriesChoice) -> str:
    assert choice.chosen is not None, choice.reason
    return choice.chosen.series_number


# ---------------------------------------------------------------------------------------------------------------
# Vendor kernel tables: one test per rule
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        ("B30f", "soft"),
        ("B45f", "soft"),
        ("Br40d", "soft"),
        (["I30f", "3"], "soft"),  # iterative (SAFIRE strength 3): multi-valued kernel
        ("Hr38", "soft"),
        ("Qr40", "soft"),
        ("Bv40", "soft"),
        ("B60f", "lung"),
        ("Bl57", "lung"),
        ("B70f", "bone"),
        ("Br64", "bone"),
        ("Hr68", "bone"),
    ],
)
def test_siemens_letters_with_the_number_as_sharpness(kernel: Any, expected: str) -> None:
    assert kernel_class(kernel, "SIEMENS") == expected


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        ("STANDARD", "soft"),
        ("SOFT", "soft"),
        ("STD+", "soft"),
        ("HD STANDARD", "soft"),
        ("DETAIL", "bone"),
        ("BONE", "bone"),
        ("BONEPLUS", "bone"),
        ("EDGE", "bone"),
        ("LUNG", "lung"),
        ("CHEST", "lung"),
    ],
)
def test_ge_kernel_names(kernel: str, expected: str) -> None:
    assert kernel_class(kernel, "GE MEDICAL SYSTEMS") == expected


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [("A", "soft"), ("B", "soft"), ("C", "soft"), ("UB", "soft"), ("D", "bone"), ("E", "bone"), ("L", "lung"),
     ("YA", "lung"), ("YC", "lung")],
)  # fmt: skip
def test_philips_letters(kernel: str, expected: str) -> None:
    assert kernel_class(kernel, "Philips") == expected


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [("FC01", "soft"), ("FC08", "soft"), ("FC18", "soft"), ("FC26", "soft"), ("FC30", "bone"), ("FC35", "bone"),
     ("FC52", "lung"), ("FC56", "lung"), ("FC86", "bone")],
)  # fmt: skip
def test_toshiba_canon_fc_numbers(kernel: str, expected: str) -> None:
    assert kernel_class(kernel, "TOSHIBA") == expected
    assert kernel_class(kernel, "CANON_MEC") == expected


def test_words_any_vendor_uses_and_unknown_names() -> None:
    assert kernel_class("Body Sharp", "CANON_MEC") == "bone"
    assert kernel_class("Lung Std", "") == "lung"
    assert kernel_class("Brain", "") == "soft"
    assert kernel_class("XYZ123", "SIEMENS") == "unknown"
    assert kernel_class("", "SIEMENS") == "unknown"
    assert kernel_class(None) == "unknown"


def test_manufacturer_picks_the_table_first() -> None:
    assert vendor_of("SIEMENS") == "siemens" and vendor_of("Siemens Healthineers") == "siemens"
    assert vendor_of("GE MEDICAL SYSTEMS") == "ge" and vendor_of("GE") == "ge"
    assert vendor_of("Philips") == "philips" and vendor_of("TOSHIBA") == "canon" and vendor_of("CANON_MEC") == "canon"
    assert vendor_of("Acme CT") == ""
    # Without a Manufacturer, every table is tried in a fixed order.
    assert kernel_class("B70f") == "bone" and kernel_class("YC") == "lung" and kernel_class("BONEPLUS") == "bone"


def test_image_type_and_phase_words() -> None:
    assert image_type_rank(("ORIGINAL", "PRIMARY", "AXIAL")) == 0
    assert image_type_rank(("DERIVED", "SECONDARY", "AXIAL")) == 1
    assert image_type_rank(("DERIVED", "SECONDARY", "MPR")) == 2
    assert image_type_rank(("ORIGINAL", "SECONDARY", "REFORMATTED")) == 2
    assert projection_word(("ORIGINAL", "PRIMARY", "LOCALIZER")) == "LOCALIZER"
    assert projection_word(("DERIVED", "SECONDARY", "MIP")) == "MIP"
    assert projection_word(("DERIVED", "PRIMARY", "PROJECTION IMAGE")) == "PROJECTION IMAGE"
    assert projection_word(("ORIGINAL", "PRIMARY", "AXIAL")) == ""
    assert contrast_phase("ABD ART 1.0 B30f", None) == "arterial"
    assert contrast_phase("Portal venous 3mm", "") == "venous"
    assert contrast_phase("NATIVE 5mm", None) == "non-contrast"
    assert contrast_phase("Delayed", None) == "delayed"
    assert contrast_phase("ABDOMEN", "IOMERON") == "contrast"
    assert contrast_phase("ABDOMEN", None) == ""
    assert contrast_phase("PARTIAL", None) == ""  # "art" inside a word is no phase


# ---------------------------------------------------------------------------------------------------------------
# Ranking on synthetic studies: the chosen series and the reason each loser gives
# ---------------------------------------------------------------------------------------------------------------


def test_siemens_soft_kernel_beats_bone_kernel_of_the_same_length(tmp_path: Path) -> None:
    # The bone series is found first (folder order): the old rule took it on a tie.
    write_series(tmp_path, "a_bone", number=3, kernel="B70f", description="HEAD BONE")
    write_series(tmp_path, "b_soft", number=2, kernel="H30s", description="HEAD SOFT")
    choice = choice_of(tmp_path)
    assert chosen_number(choice) == "2" and choice.kernel_class == "soft"
    assert by_number(choice, 3).verdict == "bone kernel (B70f) while a soft-tissue series exists"
    assert by_number(choice, 3).rule == "KERNEL"
    bone = choice_of(tmp_path, prefer_kernel="bone")
    assert chosen_number(bone) == "3"
    assert by_number(bone, 2).verdict == "soft-tissue kernel (H30s) while a bone series exists"
    either = choice_of(tmp_path, prefer_kernel="any")
    assert chosen_number(either) == "2"  # kernel not ranked: the tie goes to the lower SeriesNumber
    assert by_number(either, 3).verdict.startswith("tie with the chosen series; the lower SeriesNumber (2) wins")


def test_ge_standard_beats_lung_and_boneplus(tmp_path: Path) -> None:
    for number, kernel in ((2, "LUNG"), (3, "BONEPLUS"), (4, "STANDARD")):
        write_series(tmp_path, f"s{number}", number=number, kernel=kernel, manufacturer="GE MEDICAL SYSTEMS")
    choice = choice_of(tmp_path)
    assert chosen_number(choice) == "4"
    assert by_number(choice, 2).verdict == "lung kernel (LUNG) while a soft-tissue series exists"
    assert by_number(choice, 3).verdict == "bone kernel (BONEPLUS) while a soft-tissue series exists"
    assert chosen_number(choice_of(tmp_path, prefer_kernel="lung")) == "2"


def test_philips_b_beats_yc_and_d(tmp_path: Path) -> None:
    for number, kernel in ((2, "YC"), (3, "D"), (4, "B")):
        write_series(tmp_path, f"s{number}", number=number, kernel=kernel, manufacturer="Philips")
    choice = choice_of(tmp_path)
    assert chosen_number(choice) == "4"
    assert by_number(choice, 2).verdict == "lung kernel (YC) while a soft-tissue series exists"
    assert by_number(choice, 3).verdict == "bone kernel (D) while a soft-tissue series exists"


def test_canon_fc08_beats_fc52_even_with_fewer_slices(tmp_path: Path) -> None:
    write_series(tmp_path, "lung", number=2, kernel="FC52", manufacturer="TOSHIBA", n=12, step=0.5, thickness=0.5)
    write_series(tmp_path, "soft", number=3, kernel="FC08", manufacturer="TOSHIBA", n=6, step=1.0)
    choice = choice_of(tmp_path)
    assert chosen_number(choice) == "3"
    assert by_number(choice, 2).verdict == "lung kernel (FC52) while a soft-tissue series exists"


def test_unknown_kernel_ranks_after_soft_before_sharp(tmp_path: Path) -> None:
    write_series(tmp_path, "none", number=2, kernel=None)
    write_series(tmp_path, "bone", number=3, kernel="B70f")
    choice = choice_of(tmp_path)
    assert chosen_number(choice) == "2" and choice.kernel_class == "unknown"
    assert by_number(choice, 3).verdict == "bone kernel (B70f) while an unknown series exists"


def test_original_axial_beats_derived_and_mpr_with_more_slices(tmp_path: Path) -> None:
    write_series(tmp_path, "mpr", number=2, image_type=["DERIVED", "SECONDARY", "MPR"], n=10)
    write_series(tmp_path, "derived", number=3, image_type=["DERIVED", "SECONDARY", "AXIAL"], n=8)
    write_series(tmp_path, "orig", number=4, n=6)
    choice = choice_of(tmp_path)
    assert chosen_number(choice) == "4"
    assert by_number(choice, 2).verdict == (
        "DERIVED/MPR reformat (DERIVED/SECONDARY/MPR); the chosen series is ORIGINAL"
    )
    assert by_number(choice, 3).verdict == "DERIVED/SECONDARY (DERIVED/SECONDARY/AXIAL); the chosen series is ORIGINAL"
    assert by_number(choice, 3).rule == "IMAGE_TYPE"


def test_axial_beats_coronal_and_sagittal_reformats(tmp_path: Path) -> None:
    write_series(tmp_path, "cor", number=2, image_type=["DERIVED", "SECONDARY", "MPR"], orientation=CORONAL, n=12)
    write_series(tmp_path, "sag", number=3, image_type=["ORIGINAL", "PRIMARY", "OTHER"], orientation=SAGITTAL, n=12)
    write_series(tmp_path, "ax", number=4, n=6)
    choice = choice_of(tmp_path)
    assert chosen_number(choice) == "4"
    assert by_number(choice, 2).verdict == "coronal, not axial (acquired axial first)"
    assert by_number(choice, 3).verdict == "sagittal, not axial (acquired axial first)"
    assert by_number(choice, 2).orientation == "coronal"


def test_scout_and_mip_are_removed(tmp_path: Path) -> None:
    write_series(tmp_path, "scout", number=1, image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"], n=1, kernel="B30f")
    write_series(tmp_path, "mip", number=5, image_type=["DERIVED", "SECONDARY", "MIP"], n=20, thickness=1.0)
    write_series(tmp_path, "ax", number=2, n=6)
    choice = choice_of(tmp_path)
    assert chosen_number(choice) == "2"
    assert by_number(choice, 1).rule == "NOT_USABLE" and "localizer" in by_number(choice, 1).verdict
    assert by_number(choice, 5).rule == "PROJECTION"
    assert by_number(choice, 5).verdict == "MIP image (ImageType DERIVED/SECONDARY/MIP), not a slice stack"
    assert [c.series_number for c in choice.passing] == ["2"]


def test_no_series_passes_says_which_rule_removed_each(tmp_path: Path) -> None:
    write_series(tmp_path, "scout", number=1, image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"], n=1)
    write_series(tmp_path, "mip", number=5, image_type=["DERIVED", "SECONDARY", "MIP"], n=20)
    with pytest.raises(DicomSeriesError, match=r"series 5 'BODY': MIP image .*not a slice stack") as info:
        read_dicom(tmp_path)
    assert info.value.reason is SeriesReason.NO_SERIES
    assert "series 1 'BODY': not usable: [NOT_IMAGE]" in str(info.value)
    # Steering reads a removed series anyway.
    image = read_dicom(tmp_path, series_uid="5")
    assert image.volume.geometry.shape[0] == 20 and image.reason == "chosen by --series 5"


def test_two_phases_are_reported_and_tie_on_series_number(tmp_path: Path) -> None:
    write_series(tmp_path, "a", number=7, description="ABD VENOUS 1.0 B30f", contrast="IOMERON")
    write_series(tmp_path, "b", number=6, description="ABD ARTERIAL 1.0 B30f", contrast="IOMERON")
    choice = choice_of(tmp_path)
    assert chosen_number(choice) == "6" and choice.chosen is not None
    assert choice.chosen.facts.contrast == "arterial"
    venous = by_number(choice, 7)
    assert venous.facts.contrast == "venous"
    assert venous.verdict == "tie with the chosen series; the lower SeriesNumber (6) wins"
    assert venous.rule == "SERIES_NUMBER"
    steered = inspect_dicom(tmp_path, series_uid="*VENOUS*")
    assert steered.choice is not None and chosen_number(steered.choice) == "7"
    assert by_number(steered.choice, 6).verdict == "not the series asked for (--series *VENOUS*)"
    assert [c.series_number for c in steered.choice.passing] == ["7"]
    assert [c.series_number for c in choice.passing] == ["7", "6"]  # found order (folders a, b)


def test_thickness_outside_the_band_loses_and_the_band_is_configurable(tmp_path: Path) -> None:
    write_series(tmp_path, "thick", number=2, thickness=7.5, step=7.5, n=4)
    write_series(tmp_path, "thin", number=3, thickness=1.0, step=1.0, n=30)
    choice = choice_of(tmp_path)
    assert chosen_number(choice) == "3"
    assert by_number(choice, 2).verdict == "thickness 7.5 mm outside the 0.5-5 mm band"
    assert by_number(choice, 2).rule == "THICKNESS_BAND"
    wide = choice_of(tmp_path, thickness_band_mm=(0.5, 10.0))
    assert chosen_number(wide) == "3" and by_number(wide, 2).verdict.startswith("fewer slices (4 vs 30; 7.5 mm")
    only_thick = choice_of(tmp_path, thickness_band_mm=(5.0, 10.0))
    assert chosen_number(only_thick) == "2"
    assert by_number(only_thick, 3).verdict == "thickness 1 mm outside the 5-10 mm band"


def test_a_lone_series_outside_the_band_is_still_read_and_says_so(tmp_path: Path) -> None:
    write_series(tmp_path, "thick", number=2, thickness=7.5, step=7.5, n=4)
    image = read_dicom(tmp_path)
    assert image.volume.geometry.shape[0] == 4
    assert "outside the 0.5-5 mm band (no series inside it)" in image.reason


def test_more_coverage_beats_more_slices(tmp_path: Path) -> None:
    write_series(tmp_path, "short", number=2, n=10, step=1.0)  # 10 mm
    write_series(tmp_path, "long", number=3, n=8, step=5.0, thickness=5.0)  # 40 mm
    choice = choice_of(tmp_path)
    assert chosen_number(choice) == "3"
    assert by_number(choice, 2).verdict == "less coverage (10 mm vs 40 mm)"
    assert by_number(choice, 2).coverage_mm == pytest.approx(10.0)


def test_ties_go_to_the_lower_uid_whatever_the_file_order(tmp_path: Path) -> None:
    for order, root in ((("x", "y"), tmp_path / "one"), (("y", "x"), tmp_path / "two")):
        write_series(root, order[0], number=4, series_uid="1.2.3.9")
        write_series(root, order[1], number=4, series_uid="1.2.3.10")
        choice = choice_of(root)
        assert choice.chosen is not None and choice.chosen.series_uid == "1.2.3.10"  # "1.2.3.10" < "1.2.3.9"
        (loser,) = choice.losers
        assert loser.verdict == "tie with the chosen series; the lower SeriesInstanceUID wins"


def test_steering_by_uid_number_and_glob(tmp_path: Path) -> None:
    write_series(tmp_path, "a", number=2, description="Thorax 1.0 Br40", series_uid="1.2.3.1")
    write_series(tmp_path, "b", number=3, description="Thorax 1.0 Bl57 lung", kernel="Bl57", series_uid="1.2.3.2")
    write_series(tmp_path, "c", number=12, description="Abdomen venous", series_uid="1.2.3.3")
    assert read_dicom(tmp_path, series_uid="1.2.3.2").kernel_class == "lung"
    assert read_dicom(tmp_path, series_uid="3").series_uid == "1.2.3.2"
    assert read_dicom(tmp_path, series_uid="012").series_uid == "1.2.3.3"
    assert read_dicom(tmp_path, series_uid="*LUNG*").series_uid == "1.2.3.2"
    assert read_dicom(tmp_path, series_uid="abdomen venous").series_uid == "1.2.3.3"
    with pytest.raises(DicomSeriesError, match=r"--series thorax\* matches 2 series: #2 'Thorax 1.0 Br40' 1.2.3.1; #3"):
        read_dicom(tmp_path, series_uid="thorax*")
    with pytest.raises(DicomSeriesError, match=r"--series 99 matches no .*series found: #2 'Thorax") as info:
        read_dicom(tmp_path, series_uid="99")
    assert info.value.reason is SeriesReason.SERIES_NOT_FOUND


def test_ambiguous_series_number_has_its_reason_code(tmp_path: Path) -> None:
    write_series(tmp_path, "a", number=2, series_uid="1.2.3.1")
    write_series(tmp_path, "b", number=2, series_uid="1.2.3.2")
    with pytest.raises(DicomSeriesError, match="pass one SeriesInstanceUID instead") as info:
        read_dicom(tmp_path, series_uid="2")
    assert info.value.reason is SeriesReason.AMBIGUOUS_SERIES


def test_the_read_image_carries_the_choice(tmp_path: Path) -> None:
    write_series(tmp_path, "bone", number=3, kernel="B70f")
    write_series(tmp_path, "soft", number=2, kernel="B30f")
    image = read_dicom(tmp_path)
    assert image.choice is not None and image.kernel_class == "soft" and image.series_number == "2"
    assert [c.verdict for c in image.choice.losers] == ["bone kernel (B70f) while a soft-tissue series exists"]
    assert image.reason.startswith("soft-tissue kernel (B30f), axial, ORIGINAL, 1 mm thick, 6 slices over 6 mm")


def test_read_options_are_range_checked() -> None:
    with pytest.raises(ConfigError, match="prefer_kernel is 'sharp'; expected one of soft, bone, lung, any"):
        ReadOptions(prefer_kernel="sharp")
    with pytest.raises(ConfigError, match=r"thickness_band_mm is \(5.0, 1.0\); expected \(min, max\)"):
        ReadOptions(thickness_band_mm=(5.0, 1.0))
    with pytest.raises(ConfigError, match="thickness_band_mm"):
        ReadOptions(thickness_band_mm=(0.0, 5.0))
