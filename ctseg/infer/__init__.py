"""Inference: load a model, segment a volume, run batches over folders."""

from ctseg.infer.model import LoadedModel, load_model
from ctseg.infer.pipeline import segment

__all__ = ["LoadedModel", "load_model", "segment"]
