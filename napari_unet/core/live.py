"""Live training: training steps interleaved with periodic predictions for an overlay.

One generator drives both, in the same thread, so the network is never read while it is
being updated and no lock is needed. The caller (the napari worker, or a test) receives
:class:`~napari_unet.core.training.TrainProgress` after every step and a
:class:`PredictionUpdate` whenever a refresh is due, and can send

- :class:`~napari_unet.core.training.LabelUpdate` to train on new strokes, and
- :class:`RegionUpdate` to change which part of the image is predicted first (the slice,
  frame or field of view being looked at), and
- :class:`SettleUpdate` to change after how many steps without new strokes training
  pauses,

at any yield. In a stack or time-lapse the other slices/frames are predicted in between,
nearest first. When the run settles (no new strokes for ``settle_steps``), the view and
then the rest of the image are predicted once with the settled model (with test-time
augmentation when the final prediction uses it: the paused overlay is then what Stop would
give), and nothing more is computed until new strokes or a new view arrive. When training
ends, the whole image is predicted once more, and instance labels are derived if asked for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace

import numpy as np

from napari_unet.core.axes import (
    CANONICAL_LABELS,
    label_axes,
    region_from_canonical,
    region_to_canonical,
    shape_without_channels,
)
from napari_unet.core.config import TileConfig
from napari_unet.core.errors import InputError, NapariUnetError
from napari_unet.core.inference import Prediction, model_axes, one_window_blocks, predict
from napari_unet.core.instances import InstanceConfig, instances_from_classes
from napari_unet.core.model import TrainedModel
from napari_unet.core.training import LabelUpdate, TrainingRun, TrainProgress, TrainResult

Region = tuple[slice, ...]


@dataclass(frozen=True)
class RegionUpdate:
    """Predict this region first: slices over the labels' axes (``None``: everything)."""

    region: Region | None


@dataclass(frozen=True)
class SettleUpdate:
    """Pause this many steps after the latest strokes (``None``: never).

    See ``TrainConfig.settle_steps``; raising it resumes a paused run.
    """

    steps: int | None

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise InputError(f"pause after at least 1 step, or never (None); got {self.steps}")


@dataclass(frozen=True)
class PassProgress:
    """How far a pass over the whole image has come.

    The passes are a paused run's redraw at best quality and the prediction after
    training ends. Each part's :class:`PredictionUpdate` carries one (a part is a block
    of a 2D model's plane, or a 3D model's frame), so the caller can say "part
    ``done + 1`` of ``total``" while the pass runs: on a large image with test-time
    augmentation it takes minutes.

    Attributes
    ----------
    done
        Parts predicted so far, this one included (for a paused run's redraw, also those
        predicted for an earlier view with the same model).
    total
        Parts in all.
    final
        True for the pass after training ended; False for the paused model's redraw.
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


@dataclass(frozen=True)
class InstancesUpdate:
    """Instance labels (one id per object) for the whole image, in the labels' axes."""

    instances: np.ndarray
    step: int


@dataclass(frozen=True)
class Notice:
    """Something the user should hear about that does not stop training."""

    message: str


LiveEvent = TrainProgress | PredictionUpdate | InstancesUpdate | Notice
LiveMessage = LabelUpdate | RegionUpdate | SettleUpdate | None

# Instances are recomputed at every whole-image refresh up to this size (a watershed of a
# megapixel takes ~0.5 s on one core); larger images get them once, after training.
LIVE_INSTANCES_MAX_PIXELS = 1024 * 1024


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


def predict_region(
    model: TrainedModel,
    image: np.ndarray,
    region: Region | None,
    tiles: TileConfig,
    with_confidence: bool = False,
    test_time_augmentation: bool = False,
    axes: str | None = None,
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
    """
    axes = model_axes(model, image.shape, axes)
    lab_axes = label_axes(axes)
    label_shape = shape_without_channels(image.shape, axes)
    canonical_shape = tuple(label_shape[lab_axes.index(a)] if a in lab_axes else 1
                            for a in CANONICAL_LABELS)
    clipped = region_from_canonical(
        region_to_canonical(region, lab_axes, canonical_shape), lab_axes
    )
    result = predict(model, image, tiles, axes=axes, region=clipped,
                     return_probabilities=with_confidence,
                     test_time_augmentation=test_time_augmentation)
    return prediction_update(result, clipped, label_shape, int(model.metadata.get("steps", 0)))


def _block_key(block: Region) -> tuple[tuple[int, int], ...]:
    """Return ``block`` in a hashable form (slices are not hashable before Python 3.12)."""
    return tuple((sl.start, sl.stop) for sl in block)


def _plane_blocks(run: TrainingRun, region: Region | None,
                  block: tuple[int, int]) -> list[Region]:
    """Return the blocks of a 2D model's run that ``region`` touches, plane by plane.

    Blocks are the cells of one grid of ``block`` (Y, X) sides anchored at each plane's
    origin (cells on the far edges clipped to the plane), whatever the region: a block
    polished for one view is the same block for the next view and for the whole plane,
    so nothing is predicted twice with the same model.
    """
    canonical = region_to_canonical(region, run.label_axes, run.stack.label_shape)
    times, depths, rows, columns = canonical
    height, width = run.stack.label_shape[2:]
    (block_y, block_x) = block
    return [
        region_from_canonical((slice(t, t + 1), slice(z, z + 1),
                               slice(y, min(y + block_y, height)),
                               slice(x, min(x + block_x, width))), run.label_axes)
        for t in range(times.start, times.stop) for z in range(depths.start, depths.stop)
        for y in range(rows.start - rows.start % block_y, rows.stop, block_y)
        for x in range(columns.start - columns.start % block_x, columns.stop, block_x)
    ]


def _blocks_view_first(run: TrainingRun, view: Region | None,
                       tiles: TileConfig) -> list[Region]:
    """Return every block of a 2D model's image once, in the order the user wants them.

    Blocks cost one window each (:func:`~napari_unet.core.inference.one_window_blocks`):
    a settled run's block keeps new strokes waiting for one window at most, and the final
    pass fills the overlay outwards from the view instead of all at once at the end.

    The view's blocks first, then the rest of the view's planes, then the other planes
    nearest to the view first (as :func:`_sample_regions`); within a plane, blocks
    nearest to the view's centre first, so the overlay fills outwards from where the
    user looks.
    """
    shape = run.stack.label_shape
    block = one_window_blocks(run.model, tiles, shape[2:])
    _, _, rows, columns = region_to_canonical(view, run.label_axes, shape)
    centre = ((rows.start + rows.stop) / 2, (columns.start + columns.stop) / 2)

    def distance(block_region: Region) -> float:
        _, _, ys, xs = region_to_canonical(block_region, run.label_axes, shape)
        return (abs((ys.start + ys.stop) / 2 - centre[0])
                + abs((xs.start + xs.stop) / 2 - centre[1]))

    ordered: list[Region] = []
    seen: set[tuple[tuple[int, int], ...]] = set()
    planes = _sample_regions(run, view, include_near=True) or [None]
    for part in ([view] if view is not None else []) + planes:
        # sorted() is stable: where a part spans planes, ties keep their (T, Z) order
        for candidate in sorted(_plane_blocks(run, part, block), key=distance):
            key = _block_key(candidate)
            if key not in seen:
                seen.add(key)
                ordered.append(candidate)
    return ordered


def _sample_regions(
    run: TrainingRun, near: Region | None, include_near: bool = False
) -> list[Region]:
    """One region per sample (slice or frame) of the run's image, nearest to ``near`` first.

    Samples ``near`` touches are left out unless ``include_near``. A single image has none:
    it is one sample, predicted through the view region.
    """
    stack = run.stack
    if stack.num_samples == 1:
        return []
    shape = stack.label_shape
    view = region_to_canonical(near, run.label_axes, shape)
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
        regions.append((distance, region_from_canonical(canonical, run.label_axes)))
    regions.sort(key=lambda item: item[0])
    return [region for _, region in regions]


def live_training(
    run: TrainingRun,
    *,
    refresh_s: float = 2.0,
    region: Region | None = None,
    tiles: TileConfig | None = None,
    with_confidence: bool = False,
    final_test_time_augmentation: bool = False,
    instances: InstanceConfig | None = None,
    background_share: float = 0.25,
    checkpoint: Callable[[TrainedModel], object] | None = None,
    checkpoint_every_s: float = 30.0,
) -> Generator[LiveEvent, LiveMessage, TrainResult]:
    """Train ``run`` while predicting the region in view every ``refresh_s`` seconds.

    The first prediction comes right after the first step, so the user sees an overlay
    within seconds of pressing Train. In a stack or time-lapse, the other slices (frames)
    are predicted in between, nearest to the view first, using at most
    ``background_share`` of the time. While the run is settled (see
    ``TrainConfig.settle_steps``), the view is predicted once with the settled model, the
    other slices follow at full speed, and then only messages are taken (with
    ``final_test_time_augmentation``, see there). After training
    ends (bound reached or :meth:`TrainingRun.stop`), the whole image is predicted from
    the view outwards: a 2D model's large planes in blocks of one window each (see
    :func:`~napari_unet.core.inference.one_window_blocks`), so the overlay fills
    progressively; each part's :class:`PassProgress` says how far it is (also for a
    paused run's redraw).

    Parameters
    ----------
    run
        A set-up training run; its image is the one predicted.
    refresh_s
        Seconds between overlay refreshes of the region in view.
    region
        Region to predict first (slices over the labels' axes); ``None`` for everything.
    tiles
        Tiling for predictions.
    with_confidence
        Include the winning class's probability in each :class:`PredictionUpdate`.
    final_test_time_augmentation
        Use test-time augmentation for the final whole-image prediction and, with a 2D
        model, for the one prediction of a settled run (the view, then the other planes,
        in blocks of one tile's core: new strokes wait for at most one block). The
        overlays during training skip it: speed matters more there.
    instances
        Also yield :class:`InstancesUpdate`: at whole-image refreshes of images up to
        :data:`LIVE_INSTANCES_MAX_PIXELS`, and once at the end.
    background_share
        Largest fraction of time spent predicting slices outside the view during training.
    checkpoint
        Called with the model every ``checkpoint_every_s`` seconds and once when training
        ends (before the final prediction), in this generator's thread, between steps, so
        it never sees weights mid-update. Autosave passes its ``save_model`` here. A
        failure is reported as a :class:`Notice` and training goes on. A run that settles
        is saved at once, and its unchanged model is not saved again.
    """
    tiles = tiles or TileConfig()
    image, axes = run.image, run.axes
    label_shape = run.label_shape
    class_map = np.zeros(label_shape, np.uint8 if run.model.num_classes < 256 else np.uint16)
    steps = run.steps(wait_for_strokes=True)
    pending_labels: LabelUpdate | None = None
    next_refresh = 0.0  # refresh after the very first step
    background: list[Region] = []
    background_step = -1  # the step whose model the background list is predicted with
    background_time = 0.0
    refreshed_at = time.monotonic()
    next_checkpoint = time.monotonic() + checkpoint_every_s
    saved_step = 0
    shown: tuple[Region | None, int] | None = None  # (view region, step) last predicted
    # Blocks still to predict with test-time augmentation while settled, for which (view,
    # step), and the blocks of that step's model already done.
    polish: list[Region] = []
    polish_for: tuple[Region | None, int] | None = None
    polished: set[tuple[tuple[int, int], ...]] = set()

    def save(model: TrainedModel) -> Notice | None:
        if checkpoint is None:
            return None
        try:
            checkpoint(model)
        except (NapariUnetError, OSError) as err:
            return Notice(f"autosave of the model failed: {err}")
        return None

    def take(message: LiveMessage) -> None:
        nonlocal pending_labels, region, next_refresh, shown
        if isinstance(message, LabelUpdate):
            pending_labels = message
        elif isinstance(message, RegionUpdate):
            region = message.region
            next_refresh = 0.0  # show the new slice now, not at the next refresh
            shown = None
        elif isinstance(message, SettleUpdate):
            run.set_settle_steps(message.steps)  # validated by the sender (the widget)

    def show(update: PredictionUpdate) -> PredictionUpdate:
        class_map[update.region] = update.class_map
        return update

    def with_instances(step: int) -> InstancesUpdate | None:
        if instances is None:
            return None
        return InstancesUpdate(
            instances_from_classes(class_map, run.label_axes, run.spacing, instances), step
        )

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
            # Also save at once when the run settles: the paused model may stay the
            # current one for a long time.
            if checkpoint is not None and (now >= next_checkpoint or progress.settled) \
                    and progress.step != saved_step:
                next_checkpoint, saved_step = now + checkpoint_every_s, progress.step
                failed = save(run.model)
                if failed is not None:
                    take((yield failed))
            # A settled run's model does not change: predict the view once, at once, not
            # every refresh; the rest of the image gets all the time (no steps to share).
            # With test-time augmentation asked for, that once is the polished prediction.
            polishing = progress.settled and final_test_time_augmentation and run.mode == "2d"
            view_is_current = progress.settled and shown == (region, progress.step)
            if polishing:
                if polish_for != (region, progress.step):
                    if polish_for is None or polish_for[1] != progress.step:
                        polished.clear()  # a new settled model: everything again
                    polish = [block for block in _blocks_view_first(run, region, tiles)
                              if _block_key(block) not in polished]
                    polish_for = (region, progress.step)
                if polish:
                    block = polish.pop(0)
                    polished.add(_block_key(block))
                    update = show(replace(
                        predict_region(run.model, image, block, tiles, with_confidence, True,
                                       axes=axes),
                        pass_progress=PassProgress(len(polished), len(polished) + len(polish),
                                                   final=False)))
                    take((yield update))
                    if not polish and class_map.size <= LIVE_INSTANCES_MAX_PIXELS:
                        extra = with_instances(update.step)
                        if extra is not None:
                            take((yield extra))
            elif (now >= next_refresh or progress.settled) and not view_is_current:
                # Timed from the start of this prediction, so the interval the user sees is
                # the setting, not the setting plus the prediction's own time.
                next_refresh = now + refresh_s
                update = show(predict_region(run.model, image, region, tiles,
                                             with_confidence, axes=axes))
                shown = (region, progress.step)
                take((yield update))
                if update.complete and class_map.size <= LIVE_INSTANCES_MAX_PIXELS:
                    extra = with_instances(update.step)
                    if extra is not None:
                        take((yield extra))
                if progress.step != background_step:  # else: already done by this model
                    background, background_step = _sample_regions(run, region), progress.step
                background_time, refreshed_at = 0.0, time.monotonic()
            elif background and (progress.settled or
                                 background_time <= background_share * (now - refreshed_at)):
                started = time.monotonic()
                update = show(predict_region(run.model, image, background.pop(0), tiles,
                                             with_confidence, axes=axes))
                background_time += time.monotonic() - started
                take((yield update))
    finally:
        steps.close()
        # Here, not after the loop: when the worker is quit (widget or napari closed) the
        # generator is closed at a yield above and nothing below runs.
        final_save = save(run.model) if run.model.metadata.get("steps") else None
    if final_save is not None:
        yield final_save
    # From the view outwards, so the overlay fills where the user looks: a 3D model frame
    # by frame, a 2D model block by block. Blocks the settled model already predicted
    # with test-time augmentation are not predicted again (a run stopped while paused).
    if run.mode == "2d":
        polished_by_final = polish_for is not None and polish_for[1] == result.steps
        parts = [block for block in _blocks_view_first(run, region, tiles)
                 if not (polished_by_final and _block_key(block) in polished)]
    else:
        parts = _sample_regions(run, region, include_near=True) or [None]
    for done, part in enumerate(parts, 1):
        update = predict_region(run.model, image, part, tiles, with_confidence,
                                final_test_time_augmentation, axes=axes)
        yield show(replace(update, pass_progress=PassProgress(done, len(parts), final=True)))
    extra = with_instances(result.steps)
    if extra is not None:
        yield extra
    return result
