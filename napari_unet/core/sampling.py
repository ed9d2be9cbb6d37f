"""Training patches drawn around painted pixels.

Strokes are sparse: most of an image is unpainted and carries no loss, so a uniformly
random patch usually teaches nothing. Each patch is instead placed over a painted pixel,
with the class of that pixel chosen uniformly among the painted classes (so a few strokes
of a rare class are seen as often as long background strokes), at a random position inside
the patch (so the network does not learn that objects sit in the centre).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_unet.core.errors import InputError
from napari_unet.core.labels import UNPAINTED, painted_class_ids

IGNORE_INDEX = -1
"""Target value of unpainted pixels; the loss skips it."""

CONTRAST_JITTER = 0.3
"""Patches' contrast is scaled by ``exp(U(-j, j))``: dim and bright objects look alike."""
BRIGHTNESS_JITTER = 0.1
"""Patches' normalised intensities are shifted by ``U(-j, j)``."""


@dataclass(frozen=True)
class PatchBatch:
    """A batch ready for the network.

    Attributes
    ----------
    images
        ``(B, C, *patch)`` float32, normalised.
    targets
        ``(B, *patch)`` int64: ``label - 1`` for painted pixels (so class index ``k`` is
        label id ``k + 1``), :data:`IGNORE_INDEX` for unpainted ones.
    """

    images: np.ndarray
    targets: np.ndarray


class PatchSampler:
    """Draw augmented, class-balanced patches around painted pixels.

    Parameters
    ----------
    image
        Normalised channel-first image ``(C, *spatial)``, 2D or 3D spatial.
    labels
        Painted labels ``spatial``; 0 = unpainted.
    patch_size
        Side of the square (cubic) patch. Images smaller than a patch are padded.
    rng
        Source of randomness; seed it for reproducible training.
    augment
        Random flips, 90 degree rotations (in the last two axes) and intensity scale/shift.
    """

    def __init__(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        patch_size: int,
        rng: np.random.Generator,
        augment: bool = True,
    ) -> None:
        spatial = image.shape[1:]
        self._patch = tuple(patch_size for _ in spatial)
        self._pads = [(0, max(0, patch_size - s)) for s in spatial]
        # Pad small images once, here, so every patch has the same shape and can be batched.
        self._image = np.pad(image, [(0, 0), *self._pads], mode="reflect") if any(
            hi for _, hi in self._pads
        ) else image
        self._rng = rng
        self._augment = augment
        self.set_labels(labels)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Spatial shape of the (padded) image patches are cut from."""
        return tuple(self._image.shape[1:])

    @property
    def class_ids(self) -> np.ndarray:
        """Painted class ids, sorted."""
        return self._class_ids

    @property
    def class_pixel_counts(self) -> dict[int, int]:
        """Number of painted pixels per class id."""
        return {int(k): int(v.size) for k, v in zip(self._class_ids, self._coords)}

    def set_labels(self, labels: np.ndarray) -> None:
        """Replace the painted labels; the next batch uses them.

        Raises
        ------
        InputError
            If the shape differs from the image's or nothing is painted.
        """
        original = tuple(s - hi for s, (_, hi) in zip(self._image.shape[1:], self._pads))
        if tuple(labels.shape) != original:
            raise InputError(
                f"labels shape {tuple(labels.shape)} differs from image shape {original}"
            )
        if any(hi for _, hi in self._pads):
            labels = np.pad(labels, self._pads, mode="constant", constant_values=UNPAINTED)
        ids = painted_class_ids(labels)
        if ids.size == 0:
            raise InputError("no painted pixels to learn from")
        self._labels = labels
        self._class_ids = ids
        # Flat indices of each class's painted pixels; cheap to sample from.
        flat = labels.ravel()
        self._coords = [np.flatnonzero(flat == k) for k in ids]

    def sample(self, batch_size: int) -> PatchBatch:
        """Draw ``batch_size`` patches."""
        images, targets = [], []
        for _ in range(batch_size):
            img, lab = self._one_patch()
            images.append(img)
            targets.append(lab)
        return PatchBatch(np.stack(images), np.stack(targets))

    def _one_patch(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self._rng
        coords = self._coords[rng.integers(len(self._coords))]
        centre = np.unravel_index(coords[rng.integers(coords.size)], self._labels.shape)
        starts = []
        for c, p, s in zip(centre, self._patch, self._labels.shape):
            start = int(c) - int(rng.integers(p))  # the painted pixel lands anywhere inside
            starts.append(min(max(start, 0), s - p))
        window = tuple(slice(st, st + p) for st, p in zip(starts, self._patch))
        img = self._image[(slice(None), *window)]
        lab = self._labels[window].astype(np.int64) - 1  # unpainted 0 -> IGNORE_INDEX
        if self._augment:
            img, lab = self._augment_pair(img, lab)
        return np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(lab)

    def _augment_pair(
        self, img: np.ndarray, lab: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        rng = self._rng
        n_spatial = lab.ndim
        for axis in range(n_spatial):
            if rng.random() < 0.5:
                img = np.flip(img, axis=axis + 1)
                lab = np.flip(lab, axis=axis)
        # Rotations only in the last two (Y, X) axes: Z is often sampled more coarsely.
        k = int(rng.integers(4))
        if k:
            img = np.rot90(img, k, axes=(-2, -1))
            lab = np.rot90(lab, k, axes=(-2, -1))
        # Per-channel contrast and brightness jitter: stains and exposure vary across images.
        n_ch = img.shape[0]
        shape = (n_ch,) + (1,) * n_spatial
        scale = np.exp(rng.uniform(-CONTRAST_JITTER, CONTRAST_JITTER, size=shape))
        scale = scale.astype(np.float32)
        shift = rng.uniform(-BRIGHTNESS_JITTER, BRIGHTNESS_JITTER, size=shape)
        shift = shift.astype(np.float32)
        return img * scale + shift, lab
