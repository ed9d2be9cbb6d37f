"""A trained model: the network plus everything needed to use it on a new image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from napari_unet.core.config import ModelConfig
from napari_unet.core.normalization import Normalization
from napari_unet.core.unet import UNet


@dataclass
class TrainedModel:
    """A U-Net with its input normalisation, class names and training history.

    Attributes
    ----------
    network
        The U-Net; its ``config`` says its shape.
    normalization
        Intensity normalisation fitted on the training image; prediction reuses it.
    class_names
        Names of label ids ``1..K`` (index 0 names id 1, background).
    metadata
        Training history: steps, seconds, seed, package version, settings.
    """

    network: UNet
    normalization: Normalization
    class_names: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        """The network's shape."""
        return self.network.config

    @property
    def num_classes(self) -> int:
        """Number of classes K; predictions use ids ``1..K``."""
        return self.network.config.num_classes

    @property
    def in_channels(self) -> int:
        """Number of image channels the model reads."""
        return self.network.config.in_channels
