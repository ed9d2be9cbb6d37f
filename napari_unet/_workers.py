"""The one place where core generators become napari workers.

Workers get numpy arrays and core objects and yield core records; they never touch layers
or the viewer. ``napari.qt.threading.create_worker`` lists the job, with a cancel button,
in the activity dock. Errors reach the widget through ``errored``, which shows them as
notifications; ``_ignore_errors=True`` stops superqt from also re-raising them on the
main thread.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from napari.qt.threading import GeneratorWorker, create_worker

from napari_unet.core.axes import label_axes
from napari_unet.core.config import TileConfig
from napari_unet.core.inference import Prediction, iter_predict
from napari_unet.core.instances import InstanceConfig, instances_from_classes
from napari_unet.core.live import Region, live_training
from napari_unet.core.model import TrainedModel
from napari_unet.core.training import TrainingRun

_Y = TypeVar("_Y")
_S = TypeVar("_S")
_R = TypeVar("_R")


class WorkerFailure(Exception):
    """A ``RuntimeError`` from inside a worker, re-raised under a type superqt reports.

    superqt treats a ``RuntimeError`` ending a worker as "the Qt object was deleted": it only
    warns, and emits neither ``errored`` nor ``finished``, so the widget would wait forever.
    torch raises ``RuntimeError`` for real failures (CUDA out of memory among them).
    """


def _reported(gen: Generator[_Y, _S, _R]) -> Generator[_Y, _S, _R]:
    try:
        return (yield from gen)
    except RuntimeError as err:
        raise WorkerFailure(f"{type(err).__name__}: {err}") from err


@dataclass(frozen=True)
class Segmentation:
    """What a prediction worker returns: the class map and, if asked for, instances."""

    prediction: Prediction
    instances: np.ndarray | None


def _live_training_job(*args: Any, **kwargs: Any) -> Generator:
    return (yield from _reported(live_training(*args, **kwargs)))


def _segmentation_job(
    model: TrainedModel, image: np.ndarray, axes: str, tiles: TileConfig,
    with_confidence: bool, test_time_augmentation: bool,
    instances: InstanceConfig | None, spacing: tuple[float, ...],
) -> Generator:
    prediction = yield from _reported(iter_predict(
        model, image, tiles, axes=axes, return_probabilities=with_confidence,
        test_time_augmentation=test_time_augmentation,
    ))
    objects = None
    if instances is not None:
        objects = instances_from_classes(prediction.class_map, label_axes(axes), spacing,
                                         instances)
    return Segmentation(prediction, objects)


def live_training_worker(
    run: TrainingRun,
    *,
    refresh_s: float,
    region: Region | None,
    tiles: TileConfig,
    with_confidence: bool,
    final_test_time_augmentation: bool,
    instances: InstanceConfig | None,
    checkpoint: Callable[[TrainedModel], object] | None = None,
) -> GeneratorWorker:
    """Return a (not yet started) worker that trains, yielding progress and overlays."""
    return create_worker(
        _live_training_job, run, refresh_s=refresh_s, region=region, tiles=tiles,
        with_confidence=with_confidence,
        final_test_time_augmentation=final_test_time_augmentation, instances=instances,
        checkpoint=checkpoint,
        _progress={"desc": "Training U-Net"},
        _start_thread=False, _ignore_errors=True,
    )


def prediction_worker(
    model: TrainedModel, image: np.ndarray, axes: str, tiles: TileConfig,
    with_confidence: bool, test_time_augmentation: bool,
    instances: InstanceConfig | None, spacing: tuple[float, ...],
) -> GeneratorWorker:
    """Return a (not yet started) worker that predicts tile by tile, then splits objects."""
    return create_worker(
        _segmentation_job, model, image, axes, tiles, with_confidence,
        test_time_augmentation, instances, spacing,
        _progress={"desc": "U-Net prediction"}, _start_thread=False, _ignore_errors=True,
    )
