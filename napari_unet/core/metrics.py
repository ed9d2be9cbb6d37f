"""Segmentation quality measures."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class InstanceScore:
    """Object-level matching at one IoU threshold.

    Attributes
    ----------
    average_precision
        ``TP / (TP + FP + FN)``, the measure of the DSB2018 challenge and of StarDist and
        Cellpose papers (not the area under a precision-recall curve).
    true_positives, false_positives, false_negatives
        Object counts.
    """

    average_precision: float
    true_positives: int
    false_positives: int
    false_negatives: int


def match_instances(
    truth: np.ndarray,
    prediction: np.ndarray,
    threshold: float = 0.5,
    ignore: np.ndarray | None = None,
) -> InstanceScore:
    """Match predicted to true objects by IoU (> ``threshold``, one-to-one for >= 0.5).

    Parameters
    ----------
    truth, prediction
        Instance label images, 0 = background.
    threshold
        IoU a pair needs to count as found; at least 0.5 so matches are unique.
    ignore
        Boolean mask, e.g. painted pixels. True objects touching it are left out, and so are
        predicted objects matched to them or (unmatched) touching it: what the model was
        shown says nothing about how well it generalises.
    """
    if threshold < 0.5:
        raise ValueError("threshold must be >= 0.5 for a one-to-one matching")
    truth = np.asarray(truth).ravel()
    prediction = np.asarray(prediction).ravel()
    t_ids, t_inv = np.unique(truth, return_inverse=True)
    p_ids, p_inv = np.unique(prediction, return_inverse=True)
    # Joint histogram: overlap[i, j] = pixels with truth t_ids[i] and prediction p_ids[j].
    overlap = np.bincount(t_inv * p_ids.size + p_inv, minlength=t_ids.size * p_ids.size)
    overlap = overlap.reshape(t_ids.size, p_ids.size).astype(np.float64)
    t_area, p_area = overlap.sum(axis=1), overlap.sum(axis=0)
    union = t_area[:, None] + p_area[None, :] - overlap
    ious = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    t_fg, p_fg = t_ids != 0, p_ids != 0
    ious = ious[np.ix_(t_fg, p_fg)]
    t_ids, p_ids = t_ids[t_fg], p_ids[p_fg]
    matched = ious > threshold  # each row and column has at most one True
    t_keep = np.ones(t_ids.size, bool)
    p_touch = np.zeros(p_ids.size, bool)
    if ignore is not None:
        flat_ignore = np.asarray(ignore, bool).ravel()
        t_keep = ~np.isin(t_ids, np.unique(truth[flat_ignore]))
        p_touch = np.isin(p_ids, np.unique(prediction[flat_ignore]))
    tp = int(matched[t_keep].any(axis=1).sum())
    fn = int(t_keep.sum()) - tp
    # Unmatched predictions are false positives unless they touch what was painted;
    # predictions matched to a left-out true object are left out with it.
    fp = int((~matched.any(axis=0) & ~p_touch).sum())
    denominator = tp + fp + fn
    return InstanceScore(tp / denominator if denominator else 1.0, tp, fp, fn)
