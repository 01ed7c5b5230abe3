"""DistInfo: torchrun's variables read once and validated; device and precision choice."""

from __future__ import annotations

import pytest
import torch

from ctseg.device import amp_dtype, resolve_device
from ctseg.distributed import DistInfo, dist_info_from_env
from ctseg.errors import ConfigError


def test_no_torchrun_variables_is_one_process() -> None:
    info = dist_info_from_env({})
    assert info == DistInfo(0, 0, 1) and info.is_main and not info.enabled


def test_torchrun_variables() -> None:
    info = dist_info_from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (info.rank, info.local_rank, info.world_size) == (3, 1, 4) and info.enabled and not info.is_main


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"RANK": "one", "WORLD_SIZE": "2"}, r"RANK is 'one'; expected an integer"),
        ({"WORLD_SIZE": "0"}, r"WORLD_SIZE is 0; expected 1 or more"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, r"RANK is 2; expected 0..1 for WORLD_SIZE 2"),
        ({"RANK": "0", "LOCAL_RANK": "-1", "WORLD_SIZE": "2"}, r"LOCAL_RANK is -1; expected 0..1 for WORLD_SIZE 2"),
    ],
)
def test_inconsistent_variables_are_refused(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        dist_info_from_env(env)


def test_device_and_precision_choice() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if torch.cuda.is_available():
        assert resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
    assert amp_dtype(torch.device("cuda")) == torch.float16
    assert amp_dtype(torch.device("cpu")) in (None, torch.bfloat16)
    assert amp_dtype(torch.device("meta")) is None
