"""The one place where core generators become napari workers.

Workers get numpy arrays (or lazy arrays they read themselves: see ``_image_layers``) and
core objects and yield core records; they never touch layers or the viewer.
``napari.qt.threading.create_worker`` lists the job, with a cancel button, in the activity
dock. The training run itself is built inside the worker: for a large
image, fitting the normalisation and indexing the strokes take seconds, and so does
torch's first optimiser import; none of that may happen on the GUI thread.

Messages to a running training go through an :class:`Inbox` rather than
``worker.send``: superqt keeps a single pending value, so new strokes sent just after a
view change would be dropped, and anything sent while the run is still being built would
be lost at the worker's first ``yield``.

Errors reach the widget through ``errored``, which shows them as notifications;
``_ignore_errors=True`` stops superqt from also re-raising them on the main thread.

A job that is quit (Stop pressed twice, a cancel, the window closed) closes its
generator in its own thread as it ends (:class:`ClosingWorker`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from napari.qt.threading import GeneratorWorker, create_worker

from napari_unet.core.axes import label_axes, shape_without_channels
from napari_unet.core.batch import BatchItem
from napari_unet.core.config import TileConfig
from napari_unet.core.host_memory import release_freed_memory
from napari_unet.core.inference import TileProgress
from napari_unet.core.instances import InstanceConfig, instances_from_classes
from napari_unet.core.live import (
    InstancesUpdate,
    LiveMessage,
    RegionUpdate,
    SettleUpdate,
    live_training,
)
from napari_unet.core.model import TrainedModel
from napari_unet.core.predict_files import (
    BatchSummary,
    FileEvent,
    PredictOptions,
    predict_files,
)
from napari_unet.core.training import LabelUpdate, TrainingRun, TrainResult, warm_up
from napari_unet.core.view_first import PredictionUpdate, Region, predict_view_first

# The training job's name in napari's activity dock (the widget appends "paused" to it).
TRAINING_JOB = "Training U-Net"
FOLDER_JOB = "U-Net: segmenting a folder"

_Y = TypeVar("_Y")
_S = TypeVar("_S")
_R = TypeVar("_R")


class ClosingWorker(GeneratorWorker):
    """A generator worker that closes its generator when it ends, in the worker's thread.

    superqt leaves a quit generator suspended at its last yield, and napari 0.9 keeps
    every worker it makes in the window's task list for good: each cancelled job kept its
    whole frame alive (a training run holds a float32 copy of the image, four times a
    uint8 stack's size; session 29 probe: one suspended generator per cancelled Predict).
    Closed here, the job's ``finally`` clauses also run where they belong (live
    training saves its model there), not on the GUI thread or never.
    """

    def work(self) -> Any:
        try:
            return super().work()
        finally:
            self._gen.close()


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
class RunStarted:
    """First thing a training worker yields: the run, built and about to take its first step."""

    run: TrainingRun


class Inbox:
    """Thread-safe messages from the widget to a training worker.

    Keeps only the newest view region and pause setting (each replaces the one before),
    all strokes not yet taken (merged into one update: boxes of new strokes build on the
    ones before), and a stop request that may come before the run exists.
    """

    _KINDS = (LabelUpdate, RegionUpdate, SettleUpdate)  # the order take() hands them out

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._newest: dict[type, LiveMessage] = {}
        self._stop = threading.Event()

    def put(self, message: LabelUpdate | RegionUpdate | SettleUpdate) -> None:
        with self._lock:
            earlier = self._newest.get(type(message))
            if isinstance(earlier, LabelUpdate) and isinstance(message, LabelUpdate):
                message = earlier.then(message)
            self._newest[type(message)] = message

    def take(self) -> LiveMessage:
        """Return the next message, strokes first, then the view, then the pause."""
        with self._lock:
            for kind in self._KINDS:
                if kind in self._newest:
                    return self._newest.pop(kind)
            return None

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()


def _live_training_job(
    build_run: Callable[[], TrainingRun], inbox: Inbox, **kwargs: Any
) -> Generator[Any, None, TrainResult | None]:
    return (yield from _reported(_build_and_train(build_run, inbox, **kwargs)))


def _build_and_train(
    build_run: Callable[[], TrainingRun], inbox: Inbox, **kwargs: Any
) -> Generator[Any, None, TrainResult | None]:
    run = build_run()
    if inbox.stop_requested:  # stopped while the run was being built: nothing to keep
        return None
    yield RunStarted(run)
    live = live_training(run, **kwargs)
    message: LiveMessage = None
    while True:
        if inbox.stop_requested:
            run.stop()  # idempotent; training ends after the current step
        try:
            out = live.send(message)
        except StopIteration as finished:
            return finished.value
        yield out
        message = inbox.take()


def _segmentation_job(
    model: TrainedModel, image: np.ndarray, axes: str, tiles: TileConfig,
    view: Region | None, inbox: Inbox, with_confidence: bool, test_time_augmentation: bool,
    instances: InstanceConfig | None, spacing: tuple[float, ...],
) -> Generator[TileProgress | PredictionUpdate | InstancesUpdate, None, None]:
    yield from _reported(_segment(model, image, axes, tiles, view, inbox, with_confidence,
                                  test_time_augmentation, instances, spacing))


def _segment(
    model: TrainedModel, image: np.ndarray, axes: str, tiles: TileConfig,
    view: Region | None, inbox: Inbox, with_confidence: bool, test_time_augmentation: bool,
    instances: InstanceConfig | None, spacing: tuple[float, ...],
) -> Generator[TileProgress | PredictionUpdate | InstancesUpdate, None, None]:
    # Lazy data (a pyramid's level 0, zarr, dask) is read here, not on the GUI thread.
    image = np.asarray(image)
    # Instances need the whole class map; the parts are assembled only for them.
    class_map = None
    if instances is not None:
        class_map = np.zeros(shape_without_channels(image.shape, axes),
                             np.uint8 if model.num_classes < 256 else np.uint16)
    parts = predict_view_first(model, image, tiles, axes=axes, view=view,
                               with_confidence=with_confidence,
                               test_time_augmentation=test_time_augmentation)
    new_view: Region | None = None
    while True:
        try:
            event = parts.send(new_view)
        except StopIteration:
            break
        if class_map is not None and isinstance(event, PredictionUpdate):
            class_map[event.region] = event.class_map
        yield event
        # The user looked elsewhere: the parts left go from there outwards.
        message = inbox.take()
        new_view = message.region if isinstance(message, RegionUpdate) else None
    if instances is not None and class_map is not None:
        objects = instances_from_classes(class_map, label_axes(axes), spacing, instances)
        yield InstancesUpdate(objects, int(model.metadata.get("steps", 0)))


def live_training_worker(
    build_run: Callable[[], TrainingRun],
    inbox: Inbox,
    *,
    refresh_s: float,
    region: Region | None,
    tiles: TileConfig,
    with_confidence: bool,
    final_test_time_augmentation: bool,
    instances: InstanceConfig | None,
    checkpoint: Callable[[TrainedModel], object] | None = None,
) -> GeneratorWorker:
    """Return a (not yet started) worker that builds a run and trains it.

    It yields :class:`RunStarted`, then the records of
    :func:`~napari_unet.core.live.live_training`; errors while building the run (bad
    strokes, a mismatched model) arrive through ``errored`` like any other.
    """
    return create_worker(
        _live_training_job, build_run, inbox, refresh_s=refresh_s, region=region, tiles=tiles,
        with_confidence=with_confidence,
        final_test_time_augmentation=final_test_time_augmentation, instances=instances,
        checkpoint=checkpoint,
        _progress={"desc": TRAINING_JOB}, _worker_class=ClosingWorker,
        _start_thread=False, _ignore_errors=True,
    )


def prediction_worker(
    model: TrainedModel, image: np.ndarray, axes: str, tiles: TileConfig,
    view: Region | None, inbox: Inbox, with_confidence: bool, test_time_augmentation: bool,
    instances: InstanceConfig | None, spacing: tuple[float, ...],
) -> GeneratorWorker:
    """Return a (not yet started) worker that predicts the image, then splits objects.

    It predicts in parts from ``view`` outwards, and from the newest
    :class:`~napari_unet.core.live.RegionUpdate` put in ``inbox`` once one comes
    (:func:`~napari_unet.core.view_first.predict_view_first`), yielding its
    :class:`~napari_unet.core.inference.TileProgress` and
    :class:`~napari_unet.core.view_first.PredictionUpdate` records, then (if
    ``instances``) one :class:`~napari_unet.core.live.InstancesUpdate`. A cancelled job
    has yielded the parts it finished.
    """
    return create_worker(
        _segmentation_job, model, image, axes, tiles, view, inbox, with_confidence,
        test_time_augmentation, instances, spacing,
        _progress={"desc": "U-Net prediction"}, _worker_class=ClosingWorker,
        _start_thread=False, _ignore_errors=True,
    )


def _folder_job(model: TrainedModel, items: list[BatchItem], tiles: TileConfig,
                options: PredictOptions) -> Generator[FileEvent, None, BatchSummary]:
    return (yield from _reported(predict_files(model, items, tiles, options)))


def folder_prediction_worker(model: TrainedModel, items: list[BatchItem], tiles: TileConfig,
                             options: PredictOptions) -> GeneratorWorker:
    """Return a (not yet started) worker that predicts image files and writes the results.

    It reads, predicts and writes each file itself, yielding the records of
    :func:`~napari_unet.core.predict_files.predict_files`; a file that fails is one
    :class:`~napari_unet.core.predict_files.FileFailed` record, not the end of the job.
    """
    return create_worker(
        _folder_job, model, items, tiles, options,
        _progress={"desc": FOLDER_JOB}, _worker_class=ClosingWorker,
        _start_thread=False, _ignore_errors=True,
    )


def release_freed_memory_soon() -> None:
    """Give memory the finished job freed back to the OS, in a background thread.

    Called by the widget once it has dropped its references to a finished job. Trimming a
    large heap takes tens of milliseconds (over 100 ms measured), too long for the event
    loop; ctypes releases the GIL while it runs, so a thread costs the GUI nothing.
    """
    threading.Thread(target=release_freed_memory, name="napari-unet memory trim",
                     daemon=True).start()


_warm_up: threading.Thread | None = None


def start_warm_up() -> None:
    """Once per process, warm torch up in a background thread (see ``core.training.warm_up``).

    A plain daemon thread rather than a Qt worker: it is not a job the user started (no
    entry in napari's activity dock), and it must not hold Qt objects that may be deleted
    under it when the window closes first. A failure only costs the time it would save.
    """
    global _warm_up
    if _warm_up is not None:
        return

    def run() -> None:
        # An optimisation only: training reports real errors itself.
        with contextlib.suppress(Exception):
            warm_up()

    _warm_up = threading.Thread(target=run, name="napari-unet warm-up", daemon=True)
    _warm_up.start()


def wait_for_warm_up(timeout_s: float = 30.0) -> None:
    """Let a running warm-up finish (on shutdown, so no torch work is cut off mid-way)."""
    if _warm_up is not None:
        _warm_up.join(timeout_s)
