"""Live training: training steps interleaved with periodic predictions for an overlay.

One generator drives both, in the same thread, so the network is never read while it is
being updated and no lock is needed. The caller (the napari worker, or a test) receives
:class:`~napari_unet.core.training.TrainProgress` after every step and a
:class:`PredictionUpdate` whenever a refresh is due, and can send

- :class:`~napari_unet.core.training.LabelUpdate` to train on new strokes, and
- :class:`RegionUpdate` to change which part of the image is predicted first (the slice or
  field of view being looked at),

at any yield. When training ends, the whole image is predicted once more.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from napari_unet.core.config import TileConfig
from napari_unet.core.inference import Prediction, predict
from napari_unet.core.model import TrainedModel
from napari_unet.core.training import LabelUpdate, TrainingRun, TrainProgress, TrainResult

Region = tuple[slice, ...]


@dataclass(frozen=True)
class RegionUpdate:
    """Predict this spatial region first (``None``: the whole image)."""

    region: Region | None


@dataclass(frozen=True)
class PredictionUpdate:
    """A prediction of part (or all) of the image.

    Attributes
    ----------
    region
        Spatial slices of the image that ``class_map`` covers.
    class_map
        Label ids ``1..K`` for the region.
    confidence
        Probability of the predicted class, float32, same shape; ``None`` if not asked for.
    step
        Training step the prediction was made after.
    complete
        True when the region is the whole image.
    """

    region: Region
    class_map: np.ndarray
    confidence: np.ndarray | None
    step: int
    complete: bool


LiveEvent = TrainProgress | PredictionUpdate
LiveMessage = LabelUpdate | RegionUpdate | None


def clip_region(region: Region | None, shape: tuple[int, ...]) -> Region:
    """Clip ``region`` to an image of spatial ``shape``; ``None`` means everything."""
    if region is None:
        return tuple(slice(0, s) for s in shape)
    clipped = []
    for sl, size in zip(region, shape):
        start = min(max(sl.start or 0, 0), size - 1)
        stop = min(max(sl.stop if sl.stop is not None else size, start + 1), size)
        clipped.append(slice(start, stop))
    return tuple(clipped)


def prediction_update(
    prediction: Prediction, region: Region, spatial: tuple[int, ...], step: int
) -> PredictionUpdate:
    """Describe a :class:`Prediction` of ``region`` of an image of ``spatial`` shape.

    The confidence is the winning class's probability, when probabilities were computed.
    """
    confidence = None
    if prediction.probabilities is not None:
        confidence = prediction.probabilities.max(axis=0)
    complete = all(sl.start == 0 and sl.stop == s for sl, s in zip(region, spatial))
    return PredictionUpdate(region, prediction.class_map, confidence, step, complete)


def predict_region(
    model: TrainedModel,
    image: np.ndarray,
    region: Region | None,
    tiles: TileConfig,
    with_confidence: bool = False,
    test_time_augmentation: bool = False,
) -> PredictionUpdate:
    """Predict ``region`` of a channel-first ``image``.

    Parameters
    ----------
    model
        The model to predict with (during training: the run's averaged model).
    image
        ``(C, *spatial)`` raw image.
    region
        Spatial slices, or ``None`` for the whole image.
    tiles
        Tiling for the prediction.
    with_confidence
        Also return the winning class's probability.
    test_time_augmentation
        Average over flips and rotations (8x slower, more accurate).
    """
    spatial = image.shape[1:]
    region = clip_region(region, spatial)
    crop = image[(slice(None), *region)]
    result = predict(model, crop, tiles, return_probabilities=with_confidence,
                     test_time_augmentation=test_time_augmentation)
    return prediction_update(result, region, spatial, int(model.metadata.get("steps", 0)))


def live_training(
    run: TrainingRun,
    image: np.ndarray,
    *,
    refresh_s: float = 2.0,
    region: Region | None = None,
    tiles: TileConfig | None = None,
    with_confidence: bool = False,
    final_test_time_augmentation: bool = False,
) -> Generator[LiveEvent, LiveMessage, TrainResult]:
    """Train ``run`` while predicting the region in view every ``refresh_s`` seconds.

    The first prediction comes right after the first step, so the user sees an overlay
    within seconds of pressing Train. After training ends (bound reached or
    :meth:`TrainingRun.stop`), the whole image is predicted.

    Parameters
    ----------
    run
        A set-up training run.
    image
        The run's image, ``spatial`` or ``(C, *spatial)``.
    refresh_s
        Seconds between overlay refreshes.
    region
        Spatial region to predict during training; ``None`` for the whole image.
    tiles
        Tiling for predictions.
    with_confidence
        Include the winning class's probability in each :class:`PredictionUpdate`.
    final_test_time_augmentation
        Use test-time augmentation for the final whole-image prediction (the overlays
        during training skip it: speed matters more there).
    """
    tiles = tiles or TileConfig()
    if image.ndim == len(run.spatial_shape):
        image = image[np.newaxis]
    steps = run.steps()
    pending_labels: LabelUpdate | None = None
    next_refresh = 0.0  # refresh after the very first step

    def take(message: LiveMessage) -> None:
        nonlocal pending_labels, region
        if isinstance(message, LabelUpdate):
            pending_labels = message
        elif isinstance(message, RegionUpdate):
            region = message.region

    try:
        while True:
            try:
                progress = steps.send(pending_labels) if pending_labels else next(steps)
            except StopIteration as finished:
                result: TrainResult = finished.value
                break
            pending_labels = None
            take((yield progress))
            now = time.monotonic()
            if now >= next_refresh:
                # Timed from the start of this prediction, so the interval the user sees is
                # the setting, not the setting plus the prediction's own time.
                next_refresh = now + refresh_s
                take((yield predict_region(run.model, image, region, tiles, with_confidence)))
    finally:
        steps.close()
    yield predict_region(run.model, image, None, tiles, with_confidence,
                         final_test_time_augmentation)
    return result
