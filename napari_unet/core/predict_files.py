"""Predict image files and write their results: one file, or a batch of them.

The command line's ``predict`` and the trainer's *Predict folder…* run these same
generators, so a folder segmented from napari gives the files ``napari-unet predict``
would. Each file is read only once its header shows it fits in memory, predicted, and
written whole or not at all (:mod:`~napari_unet.core.io`); in a batch, a file that
cannot be done is reported and skipped, not the end of the run (which file names go
where is :mod:`~napari_unet.core.batch`'s job).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_unet.core.axes import check_axes
from napari_unet.core.batch import BatchItem
from napari_unet.core.config import TileConfig
from napari_unet.core.errors import InputError, NapariUnetError
from napari_unet.core.inference import (
    TileProgress,
    iter_predict,
    model_axes,
    windows_per_region,
)
from napari_unet.core.instances import InstanceConfig, instances_from_classes
from napari_unet.core.io import ImageData, read_tiff, write_labels, write_probabilities
from napari_unet.core.memory_budget import check_before_reading
from napari_unet.core.model import TrainedModel

# Where an image's axes came from, in words (ImageData.axes_source, and the fallback).
AXES_SOURCES = {"file": "from the file", "given": "as given", "fallback": "as the trainer's",
                "guessed": "guessed from the shape and the model"}


@dataclass(frozen=True)
class FileStarted:
    """A file's header was read and its prediction starts.

    ``number`` counts from 1 up to ``total`` files; ``axes_note`` says which axes were
    used and why (``"axes ZYX (5x256x256, from the file)"``); ``tiles_total`` is the
    number of :class:`~napari_unet.core.inference.TileProgress` steps to come.
    """

    number: int
    total: int
    item: BatchItem
    axes: str
    axes_source: str
    axes_note: str
    tiles_total: int


@dataclass(frozen=True)
class FileDone:
    """A file's results were written.

    ``shape`` and ``axes`` are the class map's; ``class_shares`` is each class's share
    of the pixels (0..1), by class name; ``objects`` the number of objects in the
    instances written (``None``: not asked for), in the fullest frame of a time-lapse.
    """

    number: int
    total: int
    item: BatchItem
    shape: tuple[int, ...]
    axes: str
    class_shares: dict[str, float]
    objects: int | None


@dataclass(frozen=True)
class FileFailed:
    """A file of a batch could not be done (unreadable, wrong channels, too large).

    ``message`` is the error's own, which may or may not name the file.
    """

    number: int
    total: int
    item: BatchItem
    message: str

    def describe(self, name: str) -> str:
        """Return the message, led by ``name`` (the file as shown) unless it names it."""
        return self.message if name in self.message else f"{name}: {self.message}"


@dataclass(frozen=True)
class BatchSummary:
    """What a batch did: the files written, and those that failed and why."""

    done: tuple[BatchItem, ...]
    failed: tuple[FileFailed, ...]


FileEvent = FileStarted | TileProgress | FileDone | FileFailed


@dataclass(frozen=True)
class PredictOptions:
    """How each file of a prediction is read, predicted and written.

    Parameters
    ----------
    axes
        The axes of every file, whatever it says (the command line's ``--axes``).
    fallback_axes
        Axes for a file that does not record its own, used where they fit its shape and
        the model (the trainer's *axes*: "the next images like this one"); else the axes
        are guessed from the shape and the model.
    test_time_augmentation
        Average over flips and rotations (8x slower, a little more accurate).
    device
        Where to compute (``None``: the best there is).
    instances
        How objects are split, for items with an ``instances`` file.
    overwrite
        Replace existing result files (an item marked ``redo`` always does).
    axes_hint
        Appended to set-up errors after the axes used, e.g. "use --axes to change".
    memory_remedies
        What the user can leave out when a file would not fit in memory, by part
        (``"instances"``, ``"probabilities"``; see
        :func:`~napari_unet.core.memory_budget.check_memory`).
    """

    axes: str | None = None
    fallback_axes: str | None = None
    test_time_augmentation: bool = False
    device: torch.device | None = None
    instances: InstanceConfig | None = None
    overwrite: bool = False
    axes_hint: str = ""
    memory_remedies: Mapping[str, str] | None = None


def _resolve_axes(model: TrainedModel, image: ImageData, fallback: str | None
                  ) -> tuple[str, str]:
    """Return the image's axes for the model, and where they came from.

    Raises
    ------
    NapariUnetError
        If the file's axes, or those guessed, do not fit the model.
    """
    shape = image.data.shape
    if image.axes_source == "guessed" and fallback is not None:
        with contextlib.suppress(InputError):  # another layout than the trainer's: guess
            return model_axes(model, shape, check_axes(shape, fallback)), "fallback"
    # A guess from the file's shape alone is worse than one that knows the model.
    known = None if image.axes_source == "guessed" else image.axes
    return model_axes(model, shape, known), image.axes_source


def _axes_note(shape: tuple[int, ...], axes: str, source: str) -> str:
    return f"axes {axes} ({'x'.join(map(str, shape))}, {AXES_SOURCES[source]})"


def predict_file(model: TrainedModel, item: BatchItem, tiles: TileConfig,
                 options: PredictOptions = PredictOptions(), *, number: int = 1,
                 total: int = 1) -> Generator[FileStarted | TileProgress, None, FileDone]:
    """Predict one image file and write its results.

    Parameters
    ----------
    model
        The trained model.
    item
        The image file and the files its class map (and, where set, probabilities
        and instances) go to.
    tiles
        Tile size and batch of the prediction.
    options
        How files are read, predicted and written.
    number, total
        The file's place in a batch, passed on in the records.

    Yields
    ------
    FileStarted
        Once, when the file's header has been read and its axes are known.
    TileProgress
        After each batch of tiles.

    Returns
    -------
    FileDone
        What was written.

    Raises
    ------
    InputError
        If the file cannot be read, does not fit the model or memory, or a result exists
        and may not be replaced (a set-up error names the axes it was read with).
    """
    image = read_tiff(item.image, options.axes, check_before_reading(
        f"predicting {item.image}", volumetric=model.config.spatial_dims == 3,
        probability_classes=model.num_classes if item.probabilities else 0,
        instances=item.instances is not None, remedies=options.memory_remedies))
    try:
        axes, source = _resolve_axes(model, image, options.fallback_axes)
    except NapariUnetError as err:
        note = _axes_note(image.data.shape, image.axes, image.axes_source)
        hint = f"; {options.axes_hint}" if options.axes_hint else ""
        raise type(err)(f"{err} [{item.image.name}: {note}{hint}]") from err
    tta = options.test_time_augmentation
    tiles_total = windows_per_region(model, image.data, [None], tiles, axes=axes,
                                     test_time_augmentation=tta)[0]
    yield FileStarted(number, total, item, axes, source,
                      _axes_note(image.data.shape, axes, source), tiles_total)
    prediction = yield from iter_predict(
        model, image.data, tiles, axes=axes, return_probabilities=item.probabilities is not None,
        test_time_augmentation=tta, device=options.device)
    lab_axes = axes.replace("C", "")
    overwrite = options.overwrite or item.redo
    class_map = prediction.class_map
    write_labels(item.out, class_map, axes=lab_axes, overwrite=overwrite)
    if item.probabilities is not None and prediction.probabilities is not None:
        write_probabilities(item.probabilities, prediction.probabilities, axes=lab_axes,
                            overwrite=overwrite)
    counts = np.bincount(class_map.ravel(), minlength=model.num_classes + 1)
    shares = {name: float(counts[i + 1] / class_map.size)
              for i, name in enumerate(model.class_names)}
    objects = None
    if item.instances is not None:
        # A 3D model knows its Z spacing; a 2D one splits stacks in the file's own.
        z = model.config.anisotropy if model.config.spatial_dims == 3 else (
            image.anisotropy or 1.0)
        spacing = tuple(z if a == "Z" else 1.0 for a in lab_axes if a != "T")
        found = instances_from_classes(class_map, lab_axes, spacing,
                                       options.instances or InstanceConfig())
        write_labels(item.instances, found, axes=lab_axes, overwrite=overwrite)
        objects = int(found.max())
    return FileDone(number, total, item, tuple(class_map.shape), lab_axes, shares, objects)


def predict_files(model: TrainedModel, items: Sequence[BatchItem], tiles: TileConfig,
                  options: PredictOptions = PredictOptions()
                  ) -> Generator[FileEvent, None, BatchSummary]:
    """Predict image files one after the other, skipping those that fail.

    One unreadable file, or one with other channels than the model's, must not end a
    batch of hundreds: it is reported (:class:`FileFailed`) and the next one is done.
    Closing the generator (a cancel) stops at the next batch of tiles; the files
    finished are complete, and the one under way leaves nothing or, at worst, a class
    map without its instances (:func:`~napari_unet.core.batch.plan_batch` redoes it).

    Yields
    ------
    FileStarted, TileProgress, FileDone, FileFailed
        As :func:`predict_file` does, with each file's :class:`FileDone` or
        :class:`FileFailed`.

    Returns
    -------
    BatchSummary
        The files done, and those that failed with why.
    """
    done: list[BatchItem] = []
    failed: list[FileFailed] = []
    for number, item in enumerate(items, 1):
        try:
            result = yield from predict_file(model, item, tiles, options, number=number,
                                             total=len(items))
        except (NapariUnetError, OSError) as err:
            failure = FileFailed(number, len(items), item, str(err))
            failed.append(failure)
            yield failure
            continue
        done.append(item)
        yield result
    return BatchSummary(tuple(done), tuple(failed))

