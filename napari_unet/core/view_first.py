"""Predicting an image in parts, where the user looks first, and the records that carry them.

A whole-image prediction of a large image takes minutes on a CPU (with test-time
augmentation, ~14 min at 8k x 8k on 2 cores). Predicted in one piece, the overlay appears
only at the end; predicted in parts, from the view outwards, the part the user looks at
appears after seconds and the rest fills in around it, and a cancelled job keeps what it
did. The parts are

blocks that cost one window each (:func:`~napari_unet.core.inference.one_window_blocks`):
of each plane for a 2D model, of each frame's volume for a 3D one. The blocks the view
touches come first, then the rest of the view's plane (volume) nearest to the view's
centre first, then the other planes (frames) nearest to the view first.

Live training (:mod:`~napari_unet.core.live`) uses the same order for its passes over the
whole image; :func:`predict_view_first` is the same for a model that is not training.
While training, a large view itself is refreshed in parts of a few blocks each, from its
centre outwards (:func:`view_parts`), with training steps between them.
"""

from __future__ import annotations

from collections.abc import Collection, Generator
from dataclasses import dataclass, replace

import numpy as np

from napari_unet.core.axes import (
    CANONICAL_LABELS,
    SampleStack,
    label_axes,
    region_from_canonical,
    region_to_canonical,
    shape_without_channels,
)
from napari_unet.core.config import TileConfig
from napari_unet.core.generators import run_to_end
from napari_unet.core.inference import (
    DeviceLimits,
    Prediction,
    TileProgress,
    counted_on,
    grid_cells,
    iter_predict,
    model_axes,
    one_window_blocks,
    sample_stack,
    windows_per_region,
)
from napari_unet.core.model import TrainedModel

Region = tuple[slice, ...]
BlockKey = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class PassProgress:
    """How far a pass over the whole image has come.

    The passes are a paused run's redraw at best quality, the prediction after training
    ends, and :func:`predict_view_first`. Each part's :class:`PredictionUpdate` carries
    one (a part is a block of a 2D model's plane, or a 3D model's frame), so the caller
    can say "part ``done + 1`` of ``total``" while the pass runs: on a large image with
    test-time augmentation it takes minutes.

    Attributes
    ----------
    done
        Parts predicted so far, this one included (for a paused run's redraw, also those
        predicted for an earlier view with the same model).
    total
        Parts in all.
    final
        True for a pass with a model that no longer changes (after training ended, or a
        prediction job); False for the paused model's redraw.
    """

    done: int
    total: int
    final: bool


@dataclass(frozen=True)
class PredictionUpdate:
    """A prediction of part (or all) of the image.

    Attributes
    ----------
    region
        Slices over the labels' axes (the image's without ``C``) that ``class_map``
        covers.
    class_map
        Label ids ``1..K`` for the region.
    confidence
        Probability of the predicted class, float32, same shape; ``None`` if not asked for.
    step
        Training step the prediction was made after.
    complete
        True when the region is the whole image.
    pass_progress
        Where this part lies in a pass over the whole image (:class:`PassProgress`);
        ``None`` for the overlays of a running training.
    """

    region: Region
    class_map: np.ndarray
    confidence: np.ndarray | None
    step: int
    complete: bool
    pass_progress: PassProgress | None = None


def prediction_update(
    prediction: Prediction, region: Region, label_shape: tuple[int, ...], step: int
) -> PredictionUpdate:
    """Describe a :class:`Prediction` of ``region`` of labels of ``label_shape``.

    The confidence is the winning class's probability, when probabilities were computed.
    """
    confidence = None
    if prediction.probabilities is not None:
        confidence = prediction.probabilities.max(axis=0)
    complete = all(sl.start == 0 and sl.stop == s for sl, s in zip(region, label_shape))
    return PredictionUpdate(region, prediction.class_map, confidence, step, complete)


def _clip(region: Region | None, lab_axes: str, label_shape: tuple[int, ...]) -> Region:
    """``region`` (``None``: everything) as explicit slices inside labels of ``label_shape``."""
    canonical_shape = tuple(label_shape[lab_axes.index(a)] if a in lab_axes else 1
                            for a in CANONICAL_LABELS)
    return region_from_canonical(
        region_to_canonical(region, lab_axes, canonical_shape), lab_axes
    )


def view_parts(region: Region | None, lab_axes: str, label_shape: tuple[int, ...],
               block: tuple[int, int], side: int, multiple: tuple[int, int] = (1, 1),
               ) -> list[Region | None]:
    """Cut a large view into parts of at most ``side`` x ``side`` pixels, centre first.

    A live overlay of a whole 2048 x 2048 slice took 8-9 s to predict on one CPU core,
    and new strokes waited all that time for the next training step (session 28). Cut
    into parts with training steps between them, the view's centre shows first, where
    the user looks, and strokes wait for one part at most.

    Parts are whole ``block`` cells (each one network window, see
    :func:`~napari_unet.core.inference.one_window_blocks`) on a grid anchored at the
    view's corner (floored to the model's size multiple), so together they cost as many
    windows as the view in one piece. A view no larger than ``side``, or one spanning
    several planes (slices, frames: a 2D model predicts each plane anyway), is one part,
    ``region`` itself.

    Parameters
    ----------
    region
        The view: slices over ``lab_axes``; ``None`` for everything.
    lab_axes
        The labels' axes.
    label_shape
        The labels' shape.
    block
        Y and X sides of a block that costs one window.
    side
        A part's largest height and width (at least one block).
    multiple
        The model's size multiple in Y and X.

    Returns
    -------
    list
        The parts, nearest to the view's centre first.
    """
    clipped = _clip(region, lab_axes, label_shape)
    y, x = lab_axes.index("Y"), lab_axes.index("X")
    if any(sl.stop - sl.start > 1 for i, sl in enumerate(clipped) if i not in (y, x)):
        return [region]
    if all(clipped[i].stop - clipped[i].start <= side for i in (y, x)):
        return [region]

    def cells(i: int, length: int, m: int) -> list[slice]:
        """Return the cells of a grid of ``length``, from the view's corner, along axis i."""
        span = clipped[i]
        return [slice(max(start, span.start), min(start + length, span.stop))
                for start in range(span.start - span.start % m, span.stop, length)]

    centre = [(clipped[i].start + clipped[i].stop) / 2 for i in (y, x)]
    parts: list[tuple[float, Region]] = []
    for y_part in cells(y, max(1, side // block[0]) * block[0], multiple[0]):
        for x_part in cells(x, max(1, side // block[1]) * block[1], multiple[1]):
            distance = abs((y_part.start + y_part.stop) / 2 - centre[0]) + \
                abs((x_part.start + x_part.stop) / 2 - centre[1])
            part = list(clipped)
            part[y], part[x] = y_part, x_part
            parts.append((distance, tuple(part)))
    parts.sort(key=lambda item: item[0])  # stable: ties keep row order
    return [part for _, part in parts]


def predict_region(
    model: TrainedModel,
    image: np.ndarray,
    region: Region | None,
    tiles: TileConfig,
    with_confidence: bool = False,
    test_time_augmentation: bool = False,
    axes: str | None = None,
    limits: DeviceLimits | None = None,
) -> PredictionUpdate:
    """Predict ``region`` of ``image`` (the whole image for ``None``).

    Parameters
    ----------
    model
        The model to predict with (during training: the run's averaged model).
    image
        The raw image, with axes ``axes``.
    region
        Slices over the labels' axes (the image's axes without ``C``), or ``None``.
    tiles
        Tiling for the prediction.
    with_confidence
        Also return the winning class's probability.
    test_time_augmentation
        Average over flips and rotations (8x slower, more accurate).
    axes
        The image's axes; ``None`` guesses as :func:`~napari_unet.core.inference.predict`.
    limits
        Out-of-memory lessons shared with the job's other parts
        (:class:`~napari_unet.core.inference.DeviceLimits`).
    """
    axes = model_axes(model, image.shape, axes)
    label_shape = shape_without_channels(image.shape, axes)
    clipped = _clip(region, label_axes(axes), label_shape)
    return run_to_end(_iter_predicted(model, image, clipped, tiles, with_confidence,
                                      test_time_augmentation, axes, limits))


def _iter_predicted(model: TrainedModel, image: np.ndarray, region: Region,
                    tiles: TileConfig, with_confidence: bool, test_time_augmentation: bool,
                    axes: str, limits: DeviceLimits | None,
                    ) -> Generator[TileProgress, None, PredictionUpdate]:
    """:func:`predict_region` for a clipped ``region``, yielding its tile progress."""
    result = yield from iter_predict(model, image, tiles, axes=axes, region=region,
                                     return_probabilities=with_confidence,
                                     test_time_augmentation=test_time_augmentation,
                                     limits=limits)
    return prediction_update(result, region, shape_without_channels(image.shape, axes),
                             int(model.metadata.get("steps", 0)))


def block_key(block: Region) -> BlockKey:
    """Return ``block`` in a hashable form (slices are not hashable before Python 3.12)."""
    return tuple((sl.start, sl.stop) for sl in block)


def sample_blocks(stack: SampleStack, lab_axes: str, region: Region | None,
                  block: tuple[int, ...]) -> list[Region]:
    """Return the blocks of the image that ``region`` touches, sample by sample.

    Blocks are the cells of one grid of ``block`` sides anchored at each sample's origin
    (cells on the far edges clipped to the sample), whatever the region: a block
    polished for one view is the same block for the next view and for the whole sample,
    so nothing is predicted twice with the same model.

    Parameters
    ----------
    stack
        The image as the model's samples (a 2D model's planes, a 3D model's frames).
    lab_axes
        The labels' axes, which ``region`` and the blocks are slices over.
    region
        Slices over ``lab_axes``; ``None`` for everything.
    block
        Block sides: ``(Y, X)`` in 2D mode, ``(Z, Y, X)`` in 3D mode.
    """
    times, *spatial = region_to_canonical(region, lab_axes, stack.label_shape)
    sizes = stack.label_shape[1:]
    if stack.mode == "2d":  # one plane at a time: a block is one plane deep
        block = (1, *block)

    per_axis = [grid_cells(touched, side, slice(0, size))
                for touched, side, size in zip(spatial, block, sizes)]
    return [
        region_from_canonical((slice(t, t + 1), z, y, x), lab_axes)
        for t in range(times.start, times.stop)
        for z in per_axis[0] for y in per_axis[1] for x in per_axis[2]
    ]


def blocks_view_first(model: TrainedModel, stack: SampleStack, lab_axes: str,
                      view: Region | None, tiles: TileConfig) -> list[Region]:
    """Return every block of the image once, in the order the user wants them.

    Blocks cost one window each (:func:`~napari_unet.core.inference.one_window_blocks`):
    a settled run's block keeps new strokes waiting for one window at most, and a pass
    over the whole image fills the overlay outwards from the view instead of all at once
    at the end.

    The view's blocks first, then the rest of the view's samples (planes of a 2D model,
    frames of a 3D one), then the other samples nearest to the view first (as
    :func:`samples_nearest_first`); within a sample, blocks nearest to the view's centre
    first, so the overlay fills outwards from where the user looks.

    Parameters
    ----------
    model
        The model (its receptive field and the tiling set the blocks' size).
    stack
        The image as the model's samples.
    lab_axes
        The labels' axes, which ``view`` and the blocks are slices over.
    view
        The region in view; ``None`` for everything (blocks from the image's centre).
    tiles
        The tiling the blocks will be predicted with.
    """
    shape = stack.label_shape
    block = one_window_blocks(model, tiles, stack.sample_shape)
    # Distances within a sample: in Y and X for a 2D model, also Z for a 3D one (a 2D
    # model's planes are ordered by samples_nearest_first).
    first_axis = 2 if stack.mode == "2d" else 1
    centre = [(sl.start + sl.stop) / 2
              for sl in region_to_canonical(view, lab_axes, shape)[first_axis:]]

    def distance(block_region: Region) -> float:
        slices = region_to_canonical(block_region, lab_axes, shape)[first_axis:]
        return sum(abs((sl.start + sl.stop) / 2 - c) for sl, c in zip(slices, centre))

    ordered: list[Region] = []
    seen: set[BlockKey] = set()
    samples = samples_nearest_first(stack, lab_axes, view, include_near=True) or [None]
    for part in ([view] if view is not None else []) + samples:
        # sorted() is stable: where a part spans samples, ties keep their (T, Z) order
        for candidate in sorted(sample_blocks(stack, lab_axes, part, block), key=distance):
            key = block_key(candidate)
            if key not in seen:
                seen.add(key)
                ordered.append(candidate)
    return ordered


def samples_nearest_first(stack: SampleStack, lab_axes: str, near: Region | None,
                          include_near: bool = False) -> list[Region]:
    """One region per sample (plane or frame) of the image, nearest to ``near`` first.

    Samples ``near`` touches are left out unless ``include_near``. A single image has none:
    it is one sample, predicted through the view region.

    Parameters
    ----------
    stack
        The image as the model's samples.
    lab_axes
        The labels' axes, which ``near`` and the regions are slices over.
    near
        The region in view; ``None`` for everything.
    include_near
        Also return the samples ``near`` touches.
    """
    if stack.num_samples == 1:
        return []
    shape = stack.label_shape
    view = region_to_canonical(near, lab_axes, shape)
    centre_t = (view[0].start + view[0].stop - 1) / 2
    centre_z = (view[1].start + view[1].stop - 1) / 2
    in_view = set()
    if near is not None and not include_near:
        in_view = {i for i, _ in stack.samples_in(view)}
    regions = []
    for index in range(stack.num_samples):
        if index in in_view:
            continue
        t, z = stack.sample_position(index)
        canonical = (slice(t, t + 1),
                     slice(z, z + 1) if stack.mode == "2d" else slice(0, shape[1]),
                     slice(0, shape[2]), slice(0, shape[3]))
        distance = (abs(t - centre_t), abs(z - centre_z) if stack.mode == "2d" else 0)
        regions.append((distance, region_from_canonical(canonical, lab_axes)))
    regions.sort(key=lambda item: item[0])
    return [region for _, region in regions]


def predict_view_first(
    model: TrainedModel,
    image: np.ndarray,
    tiles: TileConfig | None = None,
    *,
    axes: str | None = None,
    view: Region | None = None,
    with_confidence: bool = False,
    test_time_augmentation: bool = False,
    skip: Collection[BlockKey] = (),
) -> Generator[TileProgress | PredictionUpdate, Region | None, None]:
    """Predict the whole image part by part, from ``view`` outwards (see the module).

    Send a region at any yield when the user looks elsewhere (scrolls to another slice
    or frame, pans): once the part under way is done, the parts left are taken from the
    new view outwards.

    Parameters
    ----------
    model
        A trained model.
    image
        The raw image, with axes ``axes``.
    tiles
        Tiling for the prediction; defaults to :class:`TileConfig` defaults.
    axes
        The image's axes; ``None`` guesses (:func:`~napari_unet.core.inference.model_axes`).
    view
        The region the user looks at (slices over the labels' axes): predicted first.
        ``None``: start from the image's centre.
    with_confidence
        Include the winning class's probability in each update.
    test_time_augmentation
        Average over flips and rotations (8x slower, more accurate).
    skip
        Blocks (:func:`block_key`) already predicted with this model, left out.

    Yields
    ------
    TileProgress
        After every batch of windows, counted over the whole pass.
    PredictionUpdate
        After every part, with its :class:`PassProgress` (``final=True``). Memory stays
        bounded by a part: the caller assembles the parts if it needs the whole map.
    """
    tiles = tiles or TileConfig()
    axes = model_axes(model, image.shape, axes)
    lab_axes = label_axes(axes)
    stack = sample_stack(model, image, axes)
    done: set[BlockKey] = set(skip)
    limits = DeviceLimits()  # learnt once for the whole pass, not again in every part

    def left_from(around: Region | None) -> list[Region]:
        return [block for block in blocks_view_first(model, stack, lab_axes, around, tiles)
                if block_key(block) not in done]

    parts = left_from(view)
    sizes = dict(zip(map(block_key, parts), windows_per_region(
        model, image, parts, tiles, axes=axes, test_time_augmentation=test_time_augmentation)))
    total, before, count = sum(sizes.values()), 0, len(parts)
    while parts:
        part = parts.pop(0)
        update, moved_to = yield from counted_on(
            _iter_predicted(model, image, part, tiles, with_confidence,
                            test_time_augmentation, axes, limits), before, total)
        key = block_key(part)
        before += sizes[key]
        done.add(key)
        sent = yield replace(update, pass_progress=PassProgress(count - len(parts), count,
                                                                final=True))
        moved_to = sent if sent is not None else moved_to  # the newest view sent
        if moved_to is not None:
            parts = left_from(moved_to)
