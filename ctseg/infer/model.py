"""A trained model in memory: the network plus everything inference needs, rebuilt from a model folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ctseg.config import InferConfig, PreprocessConfig
from ctseg.errors import CheckpointError, ConfigError
from ctseg.io.model_files import ModelCard, load_model_files
from ctseg.model import build_model

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A network in eval mode with its preprocessing, patch size and label names (and the card it came from)."""

    network: nn.Module
    preprocess: PreprocessConfig
    patch_size: tuple[int, int, int]
    labels: dict[int, str]
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    infer: InferConfig = field(default_factory=InferConfig)
    card: ModelCard | None = None
    #: The model folder (exported runtimes are found there); None for a model built in memory.
    folder: Path | None = None
    #: Exported-runtime predictors already compiled, by variant, and the variant chosen per runtime and device
    #: (compiling costs seconds; done once per model).
    runtimes: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        """Output channels, background included."""
        return max(self.labels) + 1

    @property
    def meta(self) -> dict[str, Any]:
        """The ``model.json`` content this model was loaded from (empty for a model built in code)."""
        return self.card.to_dict() if self.card is not None else {}


def model_from_card(card: ModelCard, state_dict: dict[str, Any] | None = None) -> LoadedModel:
    """Rebuild a :class:`LoadedModel` from a validated ``model.json`` (and weights, when given).

    Raises
    ------
    CheckpointError
        If the architecture cannot be built or the weights do not fit it.
    """
    try:
        network = build_model(card.model, card.in_channels, card.num_classes)
    except ConfigError as exc:
        raise CheckpointError(f"model.json describes a network that cannot be built: {exc}") from exc
    if state_dict is not None:
        try:
            network.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise CheckpointError(f"model.pt does not fit the architecture in model.json: {exc}") from exc
    network.eval()
    return LoadedModel(network, card.preprocess, card.patch_size, card.labels, card.colors, card.infer, card)


def load_model(path: Path, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load and verify a model folder (``model.pt`` + ``model.json``) for inference.

    Raises
    ------
    CheckpointError
        For a missing, damaged or tampered model, or an invalid ``model.json`` (``ModelFileError``).
    """
    state, card = load_model_files(Path(path))
    model = model_from_card(card, state)
    model.network.to(device)
    model.folder = Path(path)
    log.info("loaded model %s: %d classes, patch %s", Path(path).name, model.num_classes, model.patch_size)
    return model
