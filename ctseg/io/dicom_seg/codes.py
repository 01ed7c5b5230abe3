"""SNOMED CT codes for segment descriptions: structure name -> (category, type) code, CID 7150 / 7151 style.

Known abdominal and thoracic structure names map to their SNOMED CT concept; any other name is "Tissue".
"""

from __future__ import annotations

#: (value, scheme, meaning). CID 7150 "Anatomical Structure" (pydicom's code dictionary: SCT 91723000).
ANATOMY_CATEGORY = ("91723000", "SCT", "Anatomical Structure")
TISSUE = ("85756007", "SCT", "Tissue")
#: (SNOMED CT code, meaning, names it is used for: lower case, "_" for spaces); other names get :data:`TISSUE`.
_STRUCTURES = [
    ("10200004", "Liver", "liver"),
    ("78961009", "Spleen", "spleen"),
    ("64033007", "Kidney", "kidney kidneys"),
    ("9846003", "Right kidney", "kidney_right right_kidney"),
    ("18639004", "Left kidney", "kidney_left left_kidney"),
    ("15825003", "Aorta", "aorta"),
    ("39607008", "Lung", "lung lungs"),
    ("15776009", "Pancreas", "pancreas"),
    ("69695003", "Stomach", "stomach"),
    ("28231008", "Gallbladder", "gallbladder gall_bladder"),
    ("80891009", "Heart", "heart"),
    ("89837001", "Urinary bladder", "urinary_bladder bladder"),
    ("421060004", "Spine", "spine vertebral_column vertebrae"),
    ("32849002", "Esophagus", "esophagus oesophagus"),
    ("71854001", "Colon", "colon"),
    ("30315005", "Small intestine", "small_intestine small_bowel"),
    ("12738006", "Brain", "brain"),
]
STRUCTURE_CODES = {name: (code, meaning) for code, meaning, names in _STRUCTURES for name in names.split()}


def segment_codes(name: str) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """SNOMED CT (category, type) codes, each ``(value, scheme, meaning)``, for a structure name."""
    key = "_".join(name.strip().lower().replace("-", " ").split())
    known = STRUCTURE_CODES.get(key)
    return (ANATOMY_CATEGORY, (known[0], "SCT", known[1])) if known else (TISSUE, TISSUE)
