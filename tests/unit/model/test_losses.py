"""Loss values checked against hand-computed 2x2 cases."""

from __future__ import annotations

import pytest
import torch

from ctseg.errors import ConfigError
from ctseg.model.losses import build_loss

BIG = 30.0  # logits this large make softmax exactly one-hot in float32


def _logits(pred: list[list[int]], classes: int = 2) -> torch.Tensor:
    p = torch.tensor(pred)
    return torch.stack([(p == c).float() * 2 * BIG - BIG for c in range(classes)])[None, :, None]  # (1, C, 1, 2, 2)


def _labels(ref: list[list[int]]) -> torch.Tensor:
    return torch.tensor(ref)[None, None, None]  # (1, 1, 1, 2, 2)


@pytest.mark.parametrize(
    ("pred", "ref", "dice"),
    [
        ([[0, 1], [1, 0]], [[0, 1], [1, 0]], 1.0),  # perfect
        ([[1, 0], [0, 1]], [[0, 1], [1, 0]], 0.0),  # disjoint
        ([[0, 1], [1, 1]], [[0, 1], [1, 0]], 2 * 2 / (3 + 2)),  # one false positive: 0.8
        ([[0, 1], [0, 0]], [[0, 1], [1, 0]], 2 * 1 / (1 + 2)),  # one false negative: 2/3
    ],
)
def test_dice_loss_matches_hand_computation(pred, ref, dice: float) -> None:
    loss = build_loss("dice")(_logits(pred), _labels(ref))
    assert loss.item() == pytest.approx(1.0 - dice, abs=1e-4)


def test_dice_ce_adds_cross_entropy() -> None:
    # Uniform logits: softmax 0.5 everywhere -> CE = ln 2; foreground soft Dice = 2*0.5*2 / (0.5*4 + 2) = 0.5.
    logits = torch.zeros(1, 2, 1, 2, 2)
    labels = _labels([[0, 1], [1, 0]])
    assert build_loss("dice_ce")(logits, labels).item() == pytest.approx(0.5 + 0.693147, abs=1e-3)


def test_deep_supervision_weights() -> None:
    good, bad = _logits([[0, 1], [1, 0]]), _logits([[1, 0], [0, 1]])
    stacked = torch.stack([good, bad], dim=1)  # (B, K=2, C, ...): weights 1 and 1/2, normalised -> 2/3, 1/3
    loss = build_loss("dice")(stacked, _labels([[0, 1], [1, 0]]))
    assert loss.item() == pytest.approx(1 / 3, abs=1e-3)


def test_unknown_loss() -> None:
    with pytest.raises(ConfigError, match="unknown train.loss 'focal'"):
        build_loss("focal")
