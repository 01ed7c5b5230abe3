"""Networks and losses: ``nn.Module`` builders only; no file I/O, no config parsing."""

from ctseg.model.losses import build_loss
from ctseg.model.unet import build_model

__all__ = ["build_loss", "build_model"]
