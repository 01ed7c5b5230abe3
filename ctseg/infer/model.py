"""A trained model in memory: the network plus everything inference needs, rebuilt from a model folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ctseg.config import InferConfig, ModelConfig, PreprocessConfig, from_dict
from ctseg.errors import CheckpointError, ConfigError
from ctseg.io.model_files import load_model_files
from ctseg.model import build_model

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A network in eval mode with its preprocessing, patch size and label names."""

    network: nn.Module
    preprocess: PreprocessConfig
    patch_size: tuple[int, int, int]
    labels: dict[int, str]
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    infer: InferConfig = field(default_factory=InferConfig)
    meta: dict[str, Any] = field(default_factory=dict)
    #: The model folder (exported runtimes are found there); None for a model built in memory.
    folder: Path | None = None
    #: Exported-runtime predictors already compiled, by variant, and the variant chosen per runtime and device
    #: (compiling costs seconds; done once per model).
    runtimes: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        """Output channels, background included."""
        return max(self.labels) + 1


def model_from_meta(meta: dict[str, Any], state_dict: dict[str, Any] | None = None) -> LoadedModel:
    """Rebuild a :class:`LoadedModel` from ``model.json`` content (and weights, when given).

    Raises
    ------
    CheckpointError
        If the description is incomplete or the weights do not fit the architecture.
    """
    try:
        cfg = meta["config"]
        model_cfg = from_dict(ModelConfig, cfg["model"], where="model.json model")
        pre_cfg = from_dict(PreprocessConfig, cfg["preprocess"], where="model.json preprocess")
        infer_cfg = from_dict(InferConfig, cfg.get("infer", {}), where="model.json infer")
        labels = {int(k): str(v) for k, v in meta["labels"].items()}
        colors = {int(k): (int(v[0]), int(v[1]), int(v[2])) for k, v in meta.get("colors", {}).items()}
        patch = tuple(int(v) for v in meta["patch_size"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"model.json is incomplete or invalid: {exc}") from exc
    network = build_model(model_cfg, int(meta.get("in_channels", 1)), max(labels) + 1)
    if state_dict is not None:
        try:
            network.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise CheckpointError(f"model.pt does not fit the architecture in model.json: {exc}") from exc
    network.eval()
    return LoadedModel(network, pre_cfg, patch, labels, colors, infer_cfg, meta)  # type: ignore[arg-type]


def load_model(path: Path, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load and verify a model folder (``model.pt`` + ``model.json``) for inference.

    Raises
    ------
    CheckpointError
        For a missing, damaged or tampered model.
    """
    state, meta = load_model_files(Path(path))
    model = model_from_meta(meta, state)
    model.network.to(device)
    model.folder = Path(path)
    log.info("loaded model %s: %d classes, patch %s", Path(path).name, model.num_classes, model.patch_size)
    return model
