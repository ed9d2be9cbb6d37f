"""The label convention shared by the CLI, the widget and the files.

``0`` means *not painted* and carries no loss; ``1`` is background; ``2..K`` are object
classes. A model with K classes predicts ids ``1..K``, so a prediction can be shown with the
same colours as the painting it learned from.
"""

from __future__ import annotations

import numpy as np

from napari_unet.core.errors import InputError

UNPAINTED = 0
BACKGROUND = 1
# More classes than anyone paints by hand. Above it, the annotations are nearly always a
# mask with one number per object (from Cellpose, StarDist, a watershed), which would
# train a model with a class per object; and class maps are shown as 8-bit layers.
MAX_CLASSES = 50


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """Names for ids ``1..num_classes``: ``background``, then ``class 2``, ``class 3``, ..."""
    return ("background", *(f"class {i}" for i in range(2, num_classes + 1)))


def as_label_array(labels: np.ndarray, what: str = "labels") -> np.ndarray:
    """Return ``labels`` as a non-negative integer array, or explain why it cannot be.

    Float arrays are accepted when every value is a whole number (TIFFs saved by some tools
    store labels as float32).

    Raises
    ------
    InputError
        For negative, fractional or non-finite values, or a non-numeric dtype.
    """
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError(f"{what} must hold whole numbers (0 = unpainted, 1 = background)")
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{what} must be an integer image, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise InputError(f"{what} must not contain negative values")
    return arr


_CHUNK_PIXELS = 2**24  # labels are scanned in parts of about this many pixels


def painted_class_ids(labels: np.ndarray) -> np.ndarray:
    """Sorted ids of the classes that have at least one painted pixel.

    Only painted pixels are sorted, a part of the labels at a time: ``np.unique`` over a
    whole 100 x 2048 x 2048 stack of strokes took 1.5-2.7 s (it sorts every pixel), and
    ran at each update of a running training.
    """
    labels = np.asarray(labels)
    if labels.ndim == 0:
        labels = labels.reshape(1)
    rows = max(1, _CHUNK_PIXELS // max(1, int(np.prod(labels.shape[1:]))))
    found: list[np.ndarray] = []
    for start in range(0, labels.shape[0], rows):
        part = labels[start:start + rows]
        painted = part[part != UNPAINTED]
        if painted.size:
            found.append(np.unique(painted))
    if not found:
        return np.zeros(0, labels.dtype)
    return np.unique(np.concatenate(found))


def check_training_labels(labels: np.ndarray, spatial_shape: tuple[int, ...],
                          painted_elsewhere: np.ndarray | None = None) -> int:
    """Check that ``labels`` can train a model; return the number of classes K.

    K is the largest painted id, so ids keep their meaning even when an intermediate class
    has no strokes yet. ``painted_elsewhere``: the class ids painted on the other images
    a model learns from at the same time; they count toward the two classes needed
    (corrective strokes of one class on a second image are enough).

    Raises
    ------
    InputError
        If the shape differs from the image, nothing is painted, only one class is, or
        the ids go above :data:`MAX_CLASSES`.
    """
    if tuple(labels.shape) != tuple(spatial_shape):
        raise InputError(
            f"the labels have shape {tuple(labels.shape)} but the image has spatial shape "
            f"{tuple(spatial_shape)}; paint on a layer of the image's size"
        )
    ids = painted_class_ids(labels)
    if ids.size == 0:
        raise InputError(
            "no painted pixels: paint background with label 1 and objects with label 2 "
            "(0 means 'not painted')"
        )
    if painted_elsewhere is not None and len(painted_elsewhere):
        ids = np.union1d(ids.astype(np.int64), np.asarray(painted_elsewhere, np.int64))
    if ids.size < 2:
        raise InputError(
            f"only one class is painted (label {int(ids[0])}); paint at least two: "
            "background (1) and an object class (2, 3, ...)"
        )
    check_class_ids(ids)
    return int(ids.max())


def check_class_ids(ids: np.ndarray) -> None:
    """Refuse painted ids above :data:`MAX_CLASSES` (a mask of objects, not of classes).

    Raises
    ------
    InputError
        Saying how such a mask becomes classes.
    """
    if ids.size and ids.max() > MAX_CLASSES:
        raise InputError(
            f"the labels go up to {int(ids.max())} ({ids.size} different values), but "
            f"classes are 1 (background) and 2 to {MAX_CLASSES} (objects); a mask with "
            "one number per object must first become classes: every object 2, the rest 1"
        )
