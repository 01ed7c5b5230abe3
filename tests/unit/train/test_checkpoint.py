"""TrainState: the checkpoint written and read in one module, loadable with weights_only=True."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from ctseg.errors import CheckpointError
from ctseg.train.checkpoint import TrainState, load_checkpoint, save_checkpoint


def _state() -> TrainState:
    torch.manual_seed(3)
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return TrainState(
        model=net.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        scaler=torch.amp.GradScaler("cpu", enabled=False).state_dict(),
        epoch=2,
        step=7,
        best=0.5,
        best_dice=(0.5, float("nan")),
        torch_rng=torch.get_rng_state(),
    )


def test_round_trip_is_exact_and_plain(tmp_path: Path) -> None:
    state = _state()
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # plain containers only
    assert raw["step"] == 7 and set(raw["model"]) == {"weight", "bias"}
    loaded = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (loaded.epoch, loaded.step, loaded.best) == (2, 7, 0.5)
    assert loaded.best_dice[0] == 0.5 and math.isnan(loaded.best_dice[1])
    assert torch.equal(loaded.torch_rng, state.torch_rng)
    assert all(torch.equal(loaded.model[k], state.model[k]) for k in state.model)
    assert loaded.optimizer["state"][0]["step"] == state.optimizer["state"][0]["step"]
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"step": None}, r"missing key\(s\) step; it was not written by ctseg train"),
        ({"optimizer": [1]}, r"'optimizer' must be a state dict, got list"),
        ({"epoch": 8}, r"epoch 8 and step 7 must be integers with 0 <= epoch <= step"),
        ({"step": -1, "epoch": 0}, r"epoch 0 and step -1 must be integers"),
        ({"best": 1.5}, r"best Dice 1.5 must be -1 \(none yet\) or in \[0, 1\]"),
        ({"best_dice": [2.0]}, r"best_dice \[2.0\] must be values in \[0, 1\] or NaN"),
        ({"torch_rng": [1, 2]}, r"'torch_rng' must be a tensor"),
    ],
)
def test_a_foreign_or_damaged_state_is_refused(tmp_path: Path, change: dict[str, Any], match: str) -> None:
    data = _state().to_dict()
    for key, value in change.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    torch.save(data, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_missing_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at .*; start without --resume"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt cannot be loaded"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt: expected a mapping, got list"):
        load_checkpoint(tmp_path / "list.pt")
