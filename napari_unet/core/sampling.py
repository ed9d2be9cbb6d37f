"""Training patches drawn around painted pixels.

Strokes are sparse: most of an image is unpainted and carries no loss, so a uniformly
random patch usually teaches nothing. Each patch is instead placed over a painted pixel,
with the class of that pixel chosen uniformly among the painted classes (so a few strokes
of a rare class are seen as often as long background strokes), at a random position inside
the patch (so the network does not learn that objects sit in the centre). Patches come from
any sample (slice, frame or volume) that has strokes; unpainted samples are never visited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError
from napari_unet.core.labels import painted_class_ids
from napari_unet.core.normalization import Normalization

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
    sources
        ``(B,)`` which image each patch came from, when they came from several
        (:class:`MixedSampler`); ``None`` for one image.
    """

    images: np.ndarray
    targets: np.ndarray
    sources: np.ndarray | None = None


class PatchSampler:
    """Draw augmented, class-balanced patches around painted pixels of a stack of samples.

    Parameters
    ----------
    images
        ``(N, C, *spatial)``: anything indexable by sample number that returns a
        ``(C, *spatial)`` array, e.g. a numpy array or a
        :class:`~napari_unet.core.axes.SampleStack` (whose ``read`` is then used to cut
        just the patch). Samples are read, never copied whole.
    labels
        Painted labels ``(N, *spatial)``; 0 = unpainted. Only samples with painted pixels
        ever contribute a patch.
    patch_shape
        Spatial shape of a patch, or one int for a square (cubic) patch. Samples smaller
        than a patch are padded (mirrored image, unpainted labels).
    rng
        Source of randomness; seed it for reproducible training.
    augment
        Random flips and 90 degree rotations (in the last two axes).
    intensity_jitter
        With ``augment``, also scale and shift each patch's intensities at random.
    planes_per_channel
        Consecutive sample channels that are planes of one image channel (Z context):
        they get the same jitter, so their brightness relative to each other is kept.
    normalization
        Applied to each patch as it is cut (so the image is never converted to float as a
        whole); ``None`` for an already normalised image. With Z context it must cover
        every plane of a sample (:meth:`~napari_unet.core.normalization.Normalization.per_plane`).
    """

    def __init__(
        self,
        images: Any,
        labels: np.ndarray,
        patch_shape: int | tuple[int, ...],
        rng: np.random.Generator,
        augment: bool = True,
        normalization: Normalization | None = None,
        intensity_jitter: bool = True,
        planes_per_channel: int = 1,
    ) -> None:
        spatial_dims = labels.ndim - 1
        if isinstance(patch_shape, int):
            patch_shape = (patch_shape,) * spatial_dims
        if len(patch_shape) != spatial_dims:
            raise InputError(f"patch shape {patch_shape} does not fit {spatial_dims}D samples")
        if patch_shape[-1] != patch_shape[-2]:
            raise InputError("patches must be square in Y and X (they are rotated)")
        self._images = images
        self._patch = tuple(int(p) for p in patch_shape)
        self._shape = tuple(labels.shape)
        self._rng = rng
        self._augment = augment
        self._intensity_jitter = intensity_jitter
        self._normalization = normalization
        self._planes = planes_per_channel
        self.set_labels(labels)

    @property
    def patch_shape(self) -> tuple[int, ...]:
        """Spatial shape of the patches."""
        return self._patch

    @property
    def class_ids(self) -> np.ndarray:
        """Painted class ids, sorted."""
        return self._class_ids

    @property
    def class_pixel_counts(self) -> dict[int, int]:
        """Number of painted pixels per class id."""
        return {int(k): int(v.size) for k, v in zip(self._class_ids, self._coords)}

    @property
    def painted_samples(self) -> int:
        """How many samples (slices, frames) hold painted pixels."""
        return self._painted_samples

    def set_labels(self, labels: np.ndarray) -> None:
        """Replace the painted labels; the next batch uses them.

        Raises
        ------
        InputError
            If the shape differs from the image's or nothing is painted.
        """
        if tuple(labels.shape) != self._shape:
            raise InputError(
                f"labels shape {tuple(labels.shape)} differs from image shape {self._shape}"
            )
        ids = painted_class_ids(labels)
        if ids.size == 0:
            raise InputError("no painted pixels to learn from")
        self._labels = labels
        self._class_ids = ids
        # Flat indices of each class's painted pixels; cheap to sample from.
        flat = labels.ravel()
        self._coords = [np.flatnonzero(flat == k) for k in ids]
        per_sample = np.unique(np.concatenate(self._coords) // int(np.prod(self._shape[1:])))
        self._painted_samples = int(per_sample.size)

    def update_boxes(self, labels: np.ndarray,
                     boxes: list[tuple[int, tuple[slice, ...]]]) -> None:
        """Take labels that changed only inside ``boxes``, re-indexing only those.

        ``labels`` is the array the sampler reads (its pixels changed in place, or a new
        array equal to the old one outside the boxes); each box is a sample index and
        spatial slices of it. Re-indexing a whole 400 MB stack after every pause in
        painting took 0.25 s (1 s beside the GUI) for a few strokes.

        Raises
        ------
        InputError
            If the shape differs or nothing is painted any more; nothing changes then.
        """
        if tuple(labels.shape) != self._shape:
            raise InputError(
                f"labels shape {tuple(labels.shape)} differs from image shape {self._shape}"
            )
        painted = sum(c.size for c in self._coords)
        if painted > labels.size // 8:  # dense labels: a full pass is as quick
            self.set_labels(labels)
            return
        per_class = {int(k): c for k, c in zip(self._class_ids, self._coords)}
        for index, spatial in boxes:
            lows = np.array([index] + [b.start for b in spatial])
            highs = np.array([index + 1] + [b.stop for b in spatial])
            content = labels[index][spatial]
            for k in list(per_class):  # forget what the box held...
                where = np.stack(np.unravel_index(per_class[k], self._shape))
                inside = ((where >= lows[:, None]) & (where < highs[:, None])).all(axis=0)
                per_class[k] = per_class[k][~inside]
            for k in painted_class_ids(content):  # ...and index what it holds now
                local = np.nonzero(content == k)
                flat = np.ravel_multi_index(
                    (np.full(local[0].size, index),
                     *(i + b.start for i, b in zip(local, spatial))), self._shape)
                per_class[int(k)] = np.sort(np.concatenate(
                    [per_class.get(int(k), np.zeros(0, np.intp)), flat]))
        ids = np.array(sorted(k for k, c in per_class.items() if c.size), dtype=labels.dtype)
        if ids.size == 0:
            raise InputError("no painted pixels to learn from")
        coords = [per_class[int(k)] for k in ids]
        per_sample = np.unique(np.concatenate(coords) // int(np.prod(self._shape[1:])))
        self._labels, self._class_ids, self._coords = labels, ids, coords
        self._painted_samples = int(per_sample.size)

    def sample(self, batch_size: int) -> PatchBatch:
        """Draw ``batch_size`` patches."""
        images, targets = [], []
        for _ in range(batch_size):
            img, lab = self.draw_patch()
            images.append(img)
            targets.append(lab)
        return PatchBatch(np.stack(images), np.stack(targets))

    def draw_patch(self, class_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw one augmented patch and its targets around a painted pixel.

        ``class_id`` is the pixel's class; ``None`` draws one uniformly among those painted.
        """
        rng = self._rng
        if class_id is None:
            coords = self._coords[rng.integers(len(self._coords))]
        else:
            coords = self._coords[int(np.searchsorted(self._class_ids, class_id))]
        index, *centre = np.unravel_index(coords[rng.integers(coords.size)], self._shape)
        window, pads = [], []
        for c, p, s in zip(centre, self._patch, self._shape[1:]):
            start = int(c) - int(rng.integers(p))  # the painted pixel lands anywhere inside
            start = min(max(start, 0), max(s - p, 0))
            stop = min(start + p, s)
            window.append(slice(start, stop))
            pads.append((0, p - (stop - start)))
        img = np.asarray(self._read(int(index), tuple(window)))
        if self._normalization is not None:
            img = self._normalization.apply(img)
        lab = self._labels[index][tuple(window)].astype(np.int64) - 1  # unpainted -> -1
        if any(hi for _, hi in pads):
            # "symmetric" also works for a sample one pixel wide, where "reflect" cannot.
            img = np.pad(img, [(0, 0), *pads], mode="symmetric")
            lab = np.pad(lab, pads, mode="constant", constant_values=IGNORE_INDEX)
        if self._augment:
            img, lab = self._augment_pair(img, lab)
        return np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(lab)

    def _read(self, index: int, window: tuple[slice, ...]) -> np.ndarray:
        # A SampleStack reads just the window (with Z context, of every plane it stacks).
        reader = getattr(self._images, "read", None)
        if reader is not None:
            return reader(index, window)
        return self._images[index][(slice(None), *window)]

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
        if not self._intensity_jitter:
            return img, lab
        # Per-channel contrast and brightness jitter: stains and exposure vary across images.
        n_ch = img.shape[0] // self._planes
        shape = (n_ch,) + (1,) * n_spatial
        scale = np.exp(rng.uniform(-CONTRAST_JITTER, CONTRAST_JITTER, size=shape))
        scale = np.repeat(scale.astype(np.float32), self._planes, axis=0)
        shift = rng.uniform(-BRIGHTNESS_JITTER, BRIGHTNESS_JITTER, size=shape)
        shift = np.repeat(shift.astype(np.float32), self._planes, axis=0)
        return img * scale + shift, lab


class MixedSampler:
    """Draw class-balanced patches from the strokes of several images.

    Each patch's class is drawn uniformly among the classes painted anywhere, then the
    image uniformly among those where that class is painted: a few corrective strokes
    on a second image count as much as long ones on the first (they were painted
    because the model got that image wrong). With one image this is that image's
    :class:`PatchSampler`, draw for draw.

    Parameters
    ----------
    samplers
        One sampler per image, the first the image whose strokes change during training;
        all with the same patch shape.
    rng
        Source of randomness (the samplers' own).
    """

    def __init__(self, samplers: list[PatchSampler], rng: np.random.Generator) -> None:
        if len({s.patch_shape for s in samplers}) != 1:
            raise InputError("the images' samplers cut patches of different shapes")
        self.samplers = samplers
        self._rng = rng

    @property
    def main(self) -> PatchSampler:
        """The first image's sampler (its strokes change as the user paints)."""
        return self.samplers[0]

    @property
    def class_ids(self) -> np.ndarray:
        """Class ids painted in any image, sorted."""
        return np.unique(np.concatenate([s.class_ids for s in self.samplers]))

    @property
    def class_pixel_counts(self) -> dict[int, int]:
        """Painted pixels per class id, over all images."""
        counts: dict[int, int] = {}
        for sampler in self.samplers:
            for k, n in sampler.class_pixel_counts.items():
                counts[k] = counts.get(k, 0) + n
        return dict(sorted(counts.items()))

    @property
    def painted_samples(self) -> int:
        """Samples (slices, frames) with strokes, over all images."""
        return sum(s.painted_samples for s in self.samplers)

    def sample(self, batch_size: int) -> PatchBatch:
        """Draw ``batch_size`` patches."""
        if len(self.samplers) == 1:
            return self.main.sample(batch_size)
        ids = self.class_ids
        images, targets, sources = [], [], []
        for _ in range(batch_size):
            class_id = int(ids[self._rng.integers(ids.size)])
            having = [i for i, s in enumerate(self.samplers) if class_id in s.class_ids]
            source = having[self._rng.integers(len(having))]
            img, lab = self.samplers[source].draw_patch(class_id)
            images.append(img)
            targets.append(lab)
            sources.append(source)
        return PatchBatch(np.stack(images), np.stack(targets), np.array(sources))
