"""The images painted in this window: what Train learns from besides the image in hand.

A model trained on one image and then on a second forgot the first, since training saw
only the image chosen. The trainer now remembers each image it trained on (or made an
annotation layer for, or restored strokes of) with its annotation layer and axes, and
hands the others' strokes to the run (``core.training.TrainingImage``). No Qt, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PaintedImage:
    """An image (one layer, or several as channels) and the annotation layer painted on it."""

    image_layers: tuple[Any, ...]
    labels: Any
    axes: str

    @property
    def name(self) -> str:
        """How messages name it: the image layer's name."""
        return f"image '{self.image_layers[0].name}'"

    def holds(self, layer: Any) -> bool:
        """Whether ``layer`` is one of its layers."""
        return layer is self.labels or any(layer is own for own in self.image_layers)


def _same_layers(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    # Layers compared as objects: two layers may share a name, or be renamed.
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


class TrainingSet:
    """Painted images, one annotation layer each, in the order they were last used."""

    def __init__(self) -> None:
        self._images: list[PaintedImage] = []

    def __len__(self) -> int:
        return len(self._images)

    def remember(self, image_layers: list[Any] | tuple[Any, ...], labels: Any,
                 axes: str) -> None:
        """Pair ``labels`` with the image (replacing the image's former pairing).

        An annotation layer belongs to one image: chosen for another, it leaves the
        first, whose strokes it no longer means.
        """
        layers = tuple(image_layers)
        self._images = [p for p in self._images
                        if not _same_layers(p.image_layers, layers) and p.labels is not labels]
        self._images.append(PaintedImage(layers, labels, axes))

    def forget_layer(self, layer: Any) -> None:
        """Drop the pairings that ``layer`` (removed from the viewer) was part of."""
        self._images = [p for p in self._images if not p.holds(layer)]

    def labels_for(self, image_layers: list[Any] | tuple[Any, ...]) -> Any | None:
        """Return the annotation layer paired with the image, or ``None``."""
        layers = tuple(image_layers)
        for painted in self._images:
            if _same_layers(painted.image_layers, layers):
                return painted.labels
        return None

    def others(self, image_layers: list[Any] | tuple[Any, ...], labels: Any
               ) -> list[PaintedImage]:
        """Return the painted images other than this one, and not painted on ``labels``."""
        layers = tuple(image_layers)
        return [p for p in self._images
                if not _same_layers(p.image_layers, layers) and p.labels is not labels]
