"""Instance labels (one id per object) from a semantic class map.

A class map says *which pixels are nucleus*, not *which nucleus*: touching nuclei form one
blob. Each object class is split separately by the classic distance-transform watershed:
the distance to the background peaks once per roundish object, so every peak that rises
at least ``h`` pixels above the saddle to a higher one seeds one object, and a watershed
on the negated distance grows the seeds until they meet at the necks between objects.
Objects smaller than ``min_size`` are removed. Distances respect the voxel spacing, so
elongated voxels of an anisotropic stack do not split nuclei along Z.

Frames of a time-lapse are labelled independently (ids restart at 1 in each frame); Z is
treated as a spatial axis, so a nucleus spanning several slices is one 3D object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import local_maxima, reconstruction
from skimage.segmentation import watershed

from napari_unet.core.axes import check_axes
from napari_unet.core.errors import InputError
from napari_unet.core.labels import BACKGROUND

SEED_DEPTH_2D = 1.0
"""Default seed depth (pixels) for 2D masks.

On the 2D sample (DSB2018 nuclei, 125 objects, radius ~8 px) AP@0.5 of three U-Nets'
masks was 0.85 with 1 px, 0.75 with 2 and 0.72 with 3 (the true foreground: 0.94, 0.92,
0.90); at twice the magnification, 0.84, 0.80 and 0.76: deeper seeds merge touching
nuclei, and 1 px still keeps single ones whole (session 25, docs/benchmarks.md).
"""

SEED_DEPTH_3D = 3.0
"""Default seed depth (voxels) for 3D masks, where 1 voxel cut nuclei apart.

On the 3D nuclei stack (20 nuclei, radius ~13 voxels) AP@0.5 with 1, 2 and 3 voxels was
0.40, 0.49 and 0.55 for three 2D-over-slices U-Nets, 0.36, 0.51 and 0.53 for three 3D
ones and 0.81, 0.87 and 0.93 on the true foreground; 4-6 scored the same as 3 on the
U-Nets' masks (session 25, docs/benchmarks.md). The smallest depth of that plateau,
so that touching nuclei of a denser stack are still split.
"""


MIN_SIZE_2D = 16
"""Default smallest object in 2D (pixels): a speck under 4 x 4 pixels is noise."""

MIN_SIZE_3D = 64
"""Default smallest object in 3D (voxels): the same 4-pixel width, 4 x 4 x 4.

Counted in voxels, 16 kept specks of 2-4 voxels across: on the 3D nuclei stack AP@0.5
of six U-Nets' objects rose from 0.52-0.57 to 0.65-0.72 with 64, the true foreground's
objects unchanged (its smallest nucleus has 629 voxels; session 25).
"""


def check_instance_options(min_size: int | None, h: float | None,
                           names: tuple[str, str] = ("min_size", "h")) -> None:
    """Refuse a negative smallest object size or a seed depth that is not positive.

    Parameters
    ----------
    min_size, h
        As in :class:`InstanceConfig`; ``None`` is always accepted.
    names
        What the user calls the two, for the message (the CLI's ``--min-size``).

    Raises
    ------
    InputError
        Naming the first value refused.
    """
    if min_size is not None and min_size < 0:
        raise InputError(f"{names[0]} must be >= 0, got {min_size}")
    if h is not None and not h > 0:
        raise InputError(f"{names[1]} must be > 0, got {h}")


@dataclass(frozen=True)
class InstanceConfig:
    """How to split a class map into objects.

    Parameters
    ----------
    min_size
        Objects with fewer pixels (voxels) than this are removed. ``None``:
        :data:`MIN_SIZE_2D` for 2D masks, :data:`MIN_SIZE_3D` for 3D ones.
    h
        Seed depth in pixels: distance peaks that rise less than this above the saddle to a
        higher peak belong to the same object. Larger merges more. ``None``:
        :data:`SEED_DEPTH_2D` for 2D masks, :data:`SEED_DEPTH_3D` for 3D ones.
    classes
        Class ids to split into objects; ``None`` means every id above background (1).
    """

    min_size: int | None = None
    h: float | None = None
    classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_instance_options(self.min_size, self.h)

    def smallest(self, ndim: int) -> int:
        """Return the fewest pixels (voxels) an object keeps for ``ndim`` spatial axes."""
        if self.min_size is not None:
            return self.min_size
        return MIN_SIZE_3D if ndim >= 3 else MIN_SIZE_2D

    def seed_depth(self, ndim: int) -> float:
        """Return the seed depth ``h`` for a mask of ``ndim`` spatial axes."""
        if self.h is not None:
            return self.h
        return SEED_DEPTH_3D if ndim >= 3 else SEED_DEPTH_2D


def split_objects(
    mask: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    config: InstanceConfig | None = None,
) -> np.ndarray:
    """Label the objects of a boolean 2D or 3D ``mask``, separating touching ones.

    Parameters
    ----------
    mask
        Foreground of one class.
    spacing
        Pixel size along each axis (e.g. ``(5, 1, 1)`` for Z 5x coarser); ``None``: 1.
    config
        Seed depth and minimum size.

    Returns
    -------
    numpy.ndarray
        int32 ids ``1..n`` (0 = background), numbered in raster order.
    """
    config = config or InstanceConfig()
    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    distance = ndi.distance_transform_edt(mask, sampling=spacing)
    components, count = ndi.label(mask)
    smallest = config.smallest(mask.ndim)
    seeds = _peaks(distance, components, config.seed_depth(mask.ndim), smallest)
    # A component too thin to have a peak of depth h still is an object: seed it whole.
    seeded = np.zeros(count + 1, bool)
    seeded[components[seeds > 0]] = True
    unseeded = mask & ~seeded[components]
    seeds[unseeded] = components[unseeded] + seeds.max()
    objects = watershed(-distance, seeds, mask=mask)
    sizes = np.bincount(objects.ravel())
    objects[(sizes < smallest)[objects]] = 0
    return _relabel_in_raster_order(objects)


def _peaks(distance: np.ndarray, components: np.ndarray, h: float,
           smallest: int = 0) -> np.ndarray:
    """Label one seed per peak of ``distance`` that rises at least ``h`` above its saddle.

    The h-maxima transform: lower every peak to at most ``h`` below its top (a grey
    reconstruction of ``distance - h`` under ``distance``) and take the regional maxima
    of the result, each a plateau holding one or more tops that no saddle ``h`` deep
    divides. skimage's ``h_maxima`` instead marks the pixels within ``h`` of their own
    top, so two tops of equal height joined by a shallow ridge become two seeds, and a
    distance map on a pixel grid is full of such twins (its values are square roots of
    integers): an oval nucleus at 45 degrees was cut in two, and on the 2D sample the
    true nuclei were split into 31 extra objects (docs/benchmarks.md, "One seed per
    object").

    Each connected component of the mask (``components``, as ``ndi.label`` numbers
    them) is reconstructed alone, in its bounding box: its peaks share no saddle with
    another component's, and the background that fills most of an image is left out of
    the reconstruction's sort. On the 3D nuclei stack (60 x 256 x 256, 17 % foreground)
    the seeds are the same and take 0.8-1.1 s instead of 1.9-2.4 s (the whole split
    1.7-2.0 s instead of 2.9-4.0 s; 2 CPU cores, session 26). Components get no seeds
    here, and are seeded whole by the caller, when they have fewer than ``smallest``
    pixels (nothing in them could reach that size) or no peak higher than ``h`` (the
    reconstruction would make all of such a component one plateau, one seed).
    """
    boxes = ndi.find_objects(components)  # one per id up to the largest
    count = len(boxes)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    heights = np.zeros(count + 1)
    if count:
        heights[1:] = ndi.maximum(distance, components, np.arange(1, count + 1))
    domes = np.zeros(distance.shape)
    peaked = np.zeros(distance.shape, bool)
    for i, box in enumerate(boxes, start=1):
        if box is None or sizes[i] < smallest or heights[i] <= h:
            continue
        own = components[box] == i
        crest = np.where(own, distance[box], 0.0)
        domes[box][own] = reconstruction(crest - h, crest, method="dilation")[own]
        peaked[box] |= own
    tops = local_maxima(domes, connectivity=distance.ndim) & peaked
    seeds, _ = ndi.label(tops, structure=np.ones((3,) * distance.ndim, bool))
    return seeds


def _relabel_in_raster_order(labels: np.ndarray) -> np.ndarray:
    flat = labels.ravel()
    # Only the objects' pixels are sorted: the background is most of an image.
    where = np.flatnonzero(flat)
    ids, first = np.unique(flat[where], return_index=True)
    lookup = np.zeros(int(flat.max(initial=0)) + 1, np.int32)
    # ids by first appearance, so numbering is stable
    lookup[ids[np.argsort(where[first])]] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lookup[labels]


def instances_from_classes(
    class_map: np.ndarray,
    axes: str | None = None,
    spacing: tuple[float, ...] | None = None,
    config: InstanceConfig | None = None,
) -> np.ndarray:
    """One id per object from a class map (ids ``1..K``, 1 = background).

    Parameters
    ----------
    class_map
        Predicted (or painted-dense) class ids, with the labels' axes ``axes``.
    axes
        E.g. ``"YX"``, ``"ZYX"``, ``"TYX"``, ``"TZYX"``; ``None`` reads 2D as ``YX`` and
        3D as ``ZYX``.
    spacing
        Pixel size per spatial (non-T) axis, e.g. ``(z_spacing, 1, 1)``.
    config
        See :class:`InstanceConfig`.

    Returns
    -------
    numpy.ndarray
        int32 instance ids, same shape, 0 = background; objects of different classes get
        different ids. Each frame of a time-lapse is numbered from 1.
    """
    config = config or InstanceConfig()
    class_map = np.asarray(class_map)
    if axes is None:
        axes = {2: "YX", 3: "ZYX"}.get(class_map.ndim, "")
    axes = check_axes(class_map.shape, axes, "the class map")
    if "C" in axes:
        raise InputError("a class map has no channel axis")
    if "T" in axes:
        t = axes.index("T")
        frames = [instances_from_classes(np.take(class_map, i, axis=t), axes.replace("T", ""),
                                         spacing, config)
                  for i in range(class_map.shape[t])]
        return np.stack(frames, axis=t)
    if spacing is not None and len(spacing) != class_map.ndim:
        raise InputError(f"spacing {spacing} does not fit axes {axes}")
    classes = config.classes
    if classes is None:
        present = np.unique(class_map)
        classes = tuple(int(k) for k in present if k > BACKGROUND)
    out = np.zeros(class_map.shape, np.int32)
    for k in classes:
        objects = split_objects(class_map == k, spacing, config)
        found = objects > 0
        out[found] = objects[found] + out.max()
    return out
