"""Shared fixtures: synthetic volumes and DICOM series (no outside data), and the one gateway to ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.synthetic import OBLIQUE, make_volume, write_dicom_series  # noqa: F401  (re-exported for tests)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real public CT files); skips the test with the reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (a user's clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so every test is repeatable."""
    return np.random.default_rng(1234)
