"""Segmentation quality measures."""

from __future__ import annotations

import numpy as np

from napari_unet.core.labels import BACKGROUND


def iou(prediction: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None) -> float:
    """Intersection over union of two boolean masks, optionally only inside ``where``.

    Returns 1.0 when both masks are empty (nothing to find, nothing found).
    """
    prediction = np.asarray(prediction, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if where is not None:
        prediction = prediction[where]
        truth = truth[where]
    union = np.logical_or(prediction, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(prediction, truth).sum() / union)


def foreground_iou(
    class_map: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None
) -> float:
    """IoU of "not background" between a class map (ids, 1 = background) and ground truth.

    Parameters
    ----------
    class_map
        Predicted ids ``1..K``.
    truth
        Ground truth where any non-zero value is foreground (instance masks work as is).
    where
        Optional boolean mask of the pixels to score (e.g. those nobody painted).
    """
    return iou(class_map > BACKGROUND, truth > 0, where)


def per_class_iou(
    class_map: np.ndarray, truth_ids: np.ndarray, num_classes: int
) -> dict[int, float]:
    """IoU per label id ``1..num_classes``; ``truth_ids`` uses the same ids, 0 = unknown."""
    known = truth_ids > 0
    return {
        k: iou(class_map == k, truth_ids == k, known) for k in range(1, num_classes + 1)
    }
