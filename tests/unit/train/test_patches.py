from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ctseg.config import PreprocessConfig
from ctseg.phantom import write_phantom_dataset
from ctseg.train.cache import build_cache, open_case
from ctseg.train.dataset import load_dataset
from ctseg.train.patches import PatchDataset, StepSampler


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ds = load_dataset(write_phantom_dataset(root / "ds", 2, shape=(20, 32, 32)))
    return build_cache(root / "cache", ds, PreprocessConfig(target_spacing_mm=(3.0, 2.0, 2.0)))


def _dataset(cache: Path, **kw: object) -> PatchDataset:
    args = {"seed": 5, "foreground_fraction": 0.33, "augment": True, "pad_value": 0.0}
    args.update(kw)
    return PatchDataset(cache, ["phantom_000", "phantom_001"], (16, 24, 24), **args)  # type: ignore[arg-type]


def test_cache_is_reused_and_keyed(cache: Path) -> None:
    case = open_case(cache, "phantom_000")
    assert case.image.dtype == np.float32 and case.labels.dtype == np.uint8 and case.image.shape == case.labels.shape
    assert isinstance(case.image, np.memmap)
    assert set(case.foreground) == set(range(1, 7))
    for value, coords in case.foreground.items():
        assert (case.labels[tuple(coords.T)] == value).all()


def test_sample_is_a_function_of_seed_and_index(cache: Path) -> None:
    a, b = _dataset(cache), _dataset(cache)
    for i in (0, 7, 123):
        (xa, ya), (xb, yb) = a[i], b[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.shape == (1, 16, 24, 24) and ya.dtype == torch.int64
    assert not torch.equal(a[1][0], a[2][0])
    assert not torch.equal(_dataset(cache, seed=6)[1][0], a[1][0])


def test_foreground_oversampling(cache: Path) -> None:
    fg_always = _dataset(cache, foreground_fraction=1.0, augment=False)
    assert all(int((fg_always[i][1] > 0).sum()) > 0 for i in range(30))


def test_step_sampler_splits_global_batch_across_ranks() -> None:
    single = list(StepSampler(2, 5, 4, rank=0, world_size=1))
    r0, r1 = list(StepSampler(2, 5, 2, 0, 2)), list(StepSampler(2, 5, 2, 1, 2))
    assert single == list(range(8, 20))
    merged = [i for step in range(3) for i in r0[2 * step : 2 * step + 2] + r1[2 * step : 2 * step + 2]]
    assert merged == single and len(StepSampler(2, 5, 2, 0, 2)) == 6
