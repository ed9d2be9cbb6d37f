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
ends, the whole image is predicted once more, from the view outwards (a
:class:`RegionUpdate` sent meanwhile moves where it continues), and instance labels are
derived if asked for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace

import numpy as np

from napari_unet.core.config import TileConfig
from napari_unet.core.errors import InputError, NapariUnetError
from napari_unet.core.inference import DeviceLimits, one_window_blocks
from napari_unet.core.instances import InstanceConfig, instances_from_classes
from napari_unet.core.model import TrainedModel
from napari_unet.core.training import LabelUpdate, TrainingRun, TrainProgress, TrainResult
from napari_unet.core.view_first import (
    BlockKey,
    PassProgress,
    PredictionUpdate,
    Region,
    block_key,
    blocks_view_first,
    predict_region,
    predict_view_first,
    samples_nearest_first,
    view_parts,
)


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
    view_share: float = 0.5,
    view_part_side: int = 1024,
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
    the view outwards, in blocks of one window each (a 2D model's large planes, a 3D
    model's large volumes; see :func:`~napari_unet.core.view_first.predict_view_first`),
    so the overlay fills progressively; each part's :class:`PassProgress` says how far
    it is (also for a paused run's redraw).

    Parameters
    ----------
    run
        A set-up training run; its image is the one predicted.
    refresh_s
        Seconds between overlay refreshes of the region in view, or more where predicting
        the view takes long (see ``view_share``).
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
    view_share
        Largest fraction of time spent refreshing the view during training: a view that
        takes longer to predict than ``view_share * refresh_s`` (a whole large image in
        view, on a CPU) is refreshed less often, so that training keeps the rest.
        ``1.0``: every ``refresh_s`` whatever a refresh costs.
    view_part_side
        A view larger than this in Y or X is refreshed in parts at most this many pixels
        square, from its centre outwards, with training steps between them (see
        :func:`~napari_unet.core.view_first.view_parts`): the centre shows first, and new
        strokes wait for one part, not for the whole view. The parts share
        ``view_share`` of the time with the steps as they come.
    checkpoint
        Called with the model every ``checkpoint_every_s`` seconds and once when training
        ends (before the final prediction), in this generator's thread, between steps, so
        it never sees weights mid-update. Autosave passes its ``save_model`` here. A
        failure is reported as a :class:`Notice` and training goes on. A run that settles
        is saved at once, and its unchanged model is not saved again.
    """
    if not 0.0 < view_share <= 1.0:
        raise InputError(f"view_share must be in (0, 1], got {view_share}")
    tiles = tiles or TileConfig()
    image, axes = run.image, run.axes
    label_shape = run.label_shape
    class_map = np.zeros(label_shape, np.uint8 if run.model.num_classes < 256 else np.uint16)
    steps = run.steps(wait_for_strokes=True)
    pending_labels: LabelUpdate | None = None
    next_refresh = 0.0  # refresh after the very first step
    background: list[Region] = []
    background_step = -1  # the step whose model the background list is predicted with
    # The other slices' share is kept over the run, not per refresh, and paid in arrears:
    # one slice of a 1024 x 1024 stack took 2.2 s to predict on a CPU core, and granted at
    # every refresh it left training 6 % of the time (session 28: 7 steps in 16 s).
    background_time = 0.0  # seconds spent on them since background_since
    background_since = time.monotonic()
    background_cost = 0.0  # seconds the latest of them (or the view) took to predict
    was_settled = False
    next_checkpoint = time.monotonic() + checkpoint_every_s
    saved_step = 0
    shown: tuple[Region | None, int] | None = None  # (view region, step) last predicted
    # What a large view's parts are made of (see view_parts).
    block_yx = one_window_blocks(run.model, tiles, run.stack.sample_shape)[-2:]
    multiple_yx = run.model.config.size_multiples[-2:]
    # The parts of the view's refresh under way (a large view's; else the view whole),
    # when that refresh started and the seconds spent predicting it so far.
    view_left: list[Region | None] = []
    pass_start = pass_time = 0.0
    # Blocks still to predict with test-time augmentation while settled, for which (view,
    # step), and the blocks of that step's model already done.
    polish: list[Region] = []
    polish_for: tuple[Region | None, int] | None = None
    polished: set[BlockKey] = set()

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
            # Boxes build on the ones before them: none may be dropped.
            pending_labels = message if pending_labels is None else pending_labels.then(message)
        elif isinstance(message, RegionUpdate):
            region = message.region
            next_refresh = 0.0  # show the new slice now, not at the next refresh
            shown = None
            view_left.clear()  # the old view's parts are not wanted any more
        elif isinstance(message, SettleUpdate):
            run.set_settle_steps(message.steps)  # validated by the sender (the widget)

    def show(update: PredictionUpdate) -> PredictionUpdate:
        class_map[update.region] = update.class_map
        return update

    # Out-of-memory lessons of the overlays, kept for the whole run: the GPU the model
    # trains on is as full at the next refresh, and the user is told once.
    limits = DeviceLimits()

    def overlay(part: Region | None, test_time_augmentation: bool = False,
                pass_progress: PassProgress | None = None,
                ) -> Generator[LiveEvent, LiveMessage, tuple[PredictionUpdate, float]]:
        """Predict ``part``, yield it (and what out-of-memory taught, if anything new).

        Returns the update and the seconds spent predicting it (not waiting at yields).
        """
        before, started = replace(limits), time.monotonic()
        update = show(replace(
            predict_region(run.model, image, part, tiles, with_confidence,
                           test_time_augmentation, axes=axes, limits=limits),
            pass_progress=pass_progress))
        seconds = time.monotonic() - started
        take((yield update))
        if limits != before:
            take((yield Notice(f"overlays: {limits.describe()}")))
        return update, seconds

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
            if was_settled and not progress.settled:  # resumed: the pause's time was theirs
                background_time, background_since = 0.0, now
            was_settled = progress.settled
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
                view_left.clear()  # the polished blocks redraw the view anyway
                if polish_for != (region, progress.step):
                    if polish_for is None or polish_for[1] != progress.step:
                        polished.clear()  # a new settled model: everything again
                    polish = [block for block in blocks_view_first(
                                  run.model, run.stack, run.label_axes, region, tiles)
                              if block_key(block) not in polished]
                    polish_for = (region, progress.step)
                if polish:
                    block = polish.pop(0)
                    polished.add(block_key(block))
                    where = PassProgress(len(polished), len(polished) + len(polish),
                                         final=False)
                    update, _ = yield from overlay(block, test_time_augmentation=True,
                                                   pass_progress=where)
                    if not polish and class_map.size <= LIVE_INSTANCES_MAX_PIXELS:
                        extra = with_instances(update.step)
                        if extra is not None:
                            take((yield extra))
            elif (starting := not view_left and not view_is_current and (
                    now >= next_refresh or progress.settled)) or (
                    view_left and (progress.settled
                                   or pass_time <= view_share * (now - pass_start))):
                # The view, part by part when it is large, with steps between the parts
                # while their time is over its share (paid in arrears: the centre comes
                # at once). A whole 2048 x 2048 sensor image in view took 8-9 s to predict
                # on one CPU core: refreshed in one piece every 2 s, it left training one
                # step per refresh (session 27 probe: 7 steps in 40 s), and new strokes
                # waited for all of it.
                if starting:
                    view_left[:] = view_parts(region, run.label_axes, label_shape,
                                              block_yx, view_part_side, multiple_yx)
                    # Timed from the start of the refresh, so the interval the user sees
                    # is the setting, not the setting plus the prediction's own time.
                    pass_start, pass_time = now, 0.0
                    shown = (region, progress.step)  # before: a view sent meanwhile resets it
                update, seconds = yield from overlay(view_left.pop(0))
                pass_time += seconds
                if shown is not None and not view_left:  # (else: more to come, or the
                    # user looked elsewhere meanwhile: show that now)
                    next_refresh = pass_start + max(refresh_s, pass_time / view_share)
                    if update.complete and class_map.size <= LIVE_INSTANCES_MAX_PIXELS:
                        extra = with_instances(update.step)
                        if extra is not None:
                            take((yield extra))
                    if progress.step != background_step:  # else: already done by this model
                        background = samples_nearest_first(run.stack, run.label_axes, region)
                        background_step = progress.step
                background_cost = background_cost or seconds
            elif background and (progress.settled or background_time + background_cost
                                 <= background_share * (now - background_since)):
                _, seconds = yield from overlay(background.pop(0))
                background_time += seconds
                background_cost = seconds
    finally:
        steps.close()
        # Here, not after the loop: when the worker is quit (widget or napari closed) the
        # generator is closed at a yield above and nothing below runs.
        final_save = save(run.model) if run.model.metadata.get("steps") else None
    if final_save is not None:
        received = yield final_save
        if isinstance(received, RegionUpdate):
            region = received.region
    # From the view outwards, block by block, so the overlay fills where the user looks
    # first; a new view sent meanwhile (the user scrolled or panned) is predicted next.
    # Blocks the settled model already predicted with test-time augmentation are not
    # predicted again (a run stopped while paused).
    polished_by_final = polish_for is not None and polish_for[1] == result.steps
    final_pass = predict_view_first(
        run.model, image, tiles, axes=axes, view=region, with_confidence=with_confidence,
        test_time_augmentation=final_test_time_augmentation,
        skip=polished if polished_by_final else (),
    )
    new_view: Region | None = None
    while True:
        try:
            event = final_pass.send(new_view)
        except StopIteration:
            break
        new_view = None
        if isinstance(event, PredictionUpdate):  # tile progress: the parts' count says it
            received = yield show(event)
            if isinstance(received, RegionUpdate):
                new_view = received.region
    extra = with_instances(result.steps)
    if extra is not None:
        yield extra
    return result
