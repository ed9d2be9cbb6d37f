from dataclasses import replace

import numpy as np
import pytest

from napari_unet.core.config import TileConfig
from napari_unet.core.errors import InputError
from napari_unet.core.inference import one_window_blocks, predict
from napari_unet.core.live import RegionUpdate, SettleUpdate, live_training
from napari_unet.core.training import LabelUpdate, TrainingRun, TrainProgress
from napari_unet.core.view_first import PassProgress, PredictionUpdate
from tests.conftest import make_blobs, strokes_from_truth
from tests.core.test_stacks import _stack
from tests.core.test_training import FAST, TINY_MODEL


def test_overlay_comes_after_the_first_step_and_refreshes(blobs):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, replace(FAST, max_steps=30), model_config=TINY_MODEL)
    events = list(live_training(run, refresh_s=0.0, view_share=1.0))
    assert isinstance(events[0], TrainProgress) and isinstance(events[1], PredictionUpdate)
    predictions = [e for e in events if isinstance(e, PredictionUpdate)]
    assert len(predictions) == 31  # one per step with refresh 0, plus the final one
    assert predictions[-1].complete and predictions[-1].class_map.shape == image.shape
    assert predictions[-1].step == 30
    # only the pass after training says how far it is (one part: the whole image)
    assert all(p.pass_progress is None for p in predictions[:-1])
    assert predictions[-1].pass_progress == PassProgress(1, 1, final=True)
    assert [e.step for e in events if isinstance(e, TrainProgress)] == list(range(1, 31))


def test_refresh_interval_limits_predictions(blobs):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, replace(FAST, max_steps=20), model_config=TINY_MODEL)
    predictions = [e for e in live_training(run, refresh_s=3600)
                   if isinstance(e, PredictionUpdate)]
    assert len(predictions) == 2  # the first overlay, and the final full prediction


class _Clock:
    """Time that passes only when told: a step takes 1 s, predicting the view ``view_s``."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def _steps_take(run: TrainingRun, clock: _Clock, seconds: float,
                on_step=lambda: None) -> None:
    """Make each of ``run``'s steps advance ``clock`` by ``seconds``."""
    steps = run.steps

    def timed_steps(*args, **kw):
        gen, sent = steps(*args, **kw), None
        while True:
            try:
                progress = gen.send(sent)
            except StopIteration as finished:
                return finished.value
            clock.now += seconds
            on_step()
            sent = yield progress

    run.steps = timed_steps


def _steps_between_overlays(monkeypatch, blobs, view_s: float, **kwargs) -> list[int]:
    from napari_unet.core import live

    clock = _Clock()
    monkeypatch.setattr(live, "time", clock)
    predict_region = live.predict_region

    def slow_prediction(*args, **kw):
        clock.now += view_s
        return predict_region(*args, **kw)

    monkeypatch.setattr(live, "predict_region", slow_prediction)
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, replace(FAST, max_steps=60), model_config=TINY_MODEL)
    _steps_take(run, clock, 1.0)
    between, count = [], 0
    for event in live_training(run, refresh_s=2.0, **kwargs):
        if isinstance(event, TrainProgress):
            count += 1
        elif isinstance(event, PredictionUpdate) and event.pass_progress is None:
            between.append(count)
            count = 0
    return between[1:]  # the first overlay comes after the first step


def test_a_view_slow_to_predict_is_refreshed_less_often_so_training_goes_on(
        monkeypatch, blobs):
    """Steps of 1 s, refresh every 2 s: a cheap view every 2 steps; a view that takes 10 s
    to predict at most half the time (every 20 s: 10 steps), not after every step."""
    assert set(_steps_between_overlays(monkeypatch, blobs, view_s=0.1)) == {2}
    assert set(_steps_between_overlays(monkeypatch, blobs, view_s=10.0)) == {10}
    assert set(_steps_between_overlays(monkeypatch, blobs, view_s=10.0,
                                       view_share=1.0)) == {1}


def test_region_in_view_is_predicted_first_and_can_move(blobs):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, replace(FAST, max_steps=6), model_config=TINY_MODEL)
    gen = live_training(run, refresh_s=0.0, region=(slice(0, 20), slice(10, 40)),
                        tiles=TileConfig(tile_size=64), with_confidence=True)
    next(gen)
    first = next(gen)
    assert first.region == (slice(0, 20), slice(10, 40)) and not first.complete
    assert first.class_map.shape == first.confidence.shape == (20, 30)
    assert (first.confidence >= 0.5).all()  # two classes: the winner has at least half
    gen.send(RegionUpdate((slice(30, 64), slice(0, 64))))
    moved = next(gen)
    assert moved.region == (slice(30, 64), slice(0, 64))
    *_, last = gen
    assert last.complete


def test_labels_sent_reach_the_training(blobs):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, replace(FAST, max_steps=5), model_config=TINY_MODEL)
    gen = live_training(run, refresh_s=3600)
    next(gen)
    more = strokes.copy()
    more[1::7] = 1
    progress = gen.send(LabelUpdate(more))
    while not isinstance(progress, TrainProgress):
        progress = next(gen)
    assert progress.labels_version == 1
    assert run.model.metadata["painted_pixels"]["1"] > (strokes == 1).sum()


def test_stop_predicts_the_whole_image_and_returns_the_model(blobs):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, FAST, model_config=TINY_MODEL)  # open-ended
    gen = live_training(run, refresh_s=3600)
    for event in gen:
        if isinstance(event, TrainProgress) and event.step == 3:
            run.stop()
        if isinstance(event, PredictionUpdate) and event.complete and event.step == 3:
            break
    else:
        raise AssertionError("no final prediction")
    try:
        next(gen)
    except StopIteration as done:
        assert done.value.steps == 3
    else:
        raise AssertionError("generator should have finished")


def test_closing_the_generator_ends_training(blobs):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, FAST, model_config=TINY_MODEL)
    gen = live_training(run)
    next(gen)
    gen.close()
    assert run.model.metadata["steps"] == 1
    assert not run.model.network.training


def test_a_settled_run_predicts_each_slice_once_then_only_takes_messages():
    """Once settled, the model is fixed: the stack is predicted once with it, then no work
    is done (no predictions, no autosaves) until the view moves or new strokes come."""
    image, _, strokes = _stack(4)
    run = TrainingRun(image, strokes, replace(FAST, settle_steps=6), axes="ZYX", mode="2d",
                      model_config=TINY_MODEL)
    saves: list[int] = []
    view = (slice(2, 3), slice(0, 48), slice(0, 48))
    gen = live_training(run, refresh_s=3600, region=view, checkpoint_every_s=0.0,
                        checkpoint=lambda model: saves.append(model.metadata["steps"]))
    events, settled = [], 0
    while settled < 8:
        events.append(next(gen))
        settled += isinstance(events[-1], TrainProgress) and events[-1].settled
    first_settled = next(i for i, e in enumerate(events)
                         if isinstance(e, TrainProgress) and e.settled)
    after = [e for e in events[first_settled:] if isinstance(e, PredictionUpdate)]
    assert [u.region[0].start for u in after] == [2, 1, 3, 0]  # the view, then nearest first
    assert all(u.step == 6 for u in after)
    assert not isinstance(events[-1], PredictionUpdate)  # the last polls did nothing else
    assert saves == [1, 2, 3, 4, 5, 6]  # no new save of an unchanged model

    moved = gen.send(RegionUpdate((slice(0, 1), slice(0, 48), slice(0, 48))))
    assert isinstance(moved, PredictionUpdate) and moved.region[0] == slice(0, 1)
    assert moved.step == 6
    assert isinstance(next(gen), TrainProgress)  # the other slices are not redone

    more = strokes.copy()
    more[0] = strokes[2]
    resumed = gen.send(LabelUpdate(more))
    while not isinstance(resumed, TrainProgress):
        resumed = next(gen)
    assert resumed.step == 7 and not resumed.settled
    gen.close()


def test_the_pause_setting_can_change_while_training(blobs):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, replace(FAST, settle_steps=3), model_config=TINY_MODEL)
    gen = live_training(run, refresh_s=3600)
    event = next(gen)
    while not (isinstance(event, TrainProgress) and event.settled):
        event = next(gen)
    assert event.step == 3
    event = gen.send(SettleUpdate(5))  # raised: training goes on to step 5
    steps = []
    while not (isinstance(event, TrainProgress) and event.settled):
        if isinstance(event, TrainProgress):
            steps.append(event.step)
        event = next(gen)
    assert steps == [4, 5] and event.step == 5
    gen.send(SettleUpdate(None))  # never pause
    assert run.config.settle_steps is None and not run.settled
    with pytest.raises(InputError):
        SettleUpdate(0)
    gen.close()


def test_a_run_that_settles_is_autosaved_at_once(blobs):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, replace(FAST, settle_steps=4), model_config=TINY_MODEL)
    saves: list[int] = []
    gen = live_training(run, refresh_s=3600, checkpoint_every_s=3600,
                        checkpoint=lambda model: saves.append(model.metadata["steps"]))
    settled = 0
    while settled < 3:
        event = next(gen)
        settled += isinstance(event, TrainProgress) and event.settled
    assert saves == [4]  # not after 3600 s: a crash while paused loses nothing
    gen.close()


def _run_until_quiet(gen, quiet_polls=6):
    """Events until ``quiet_polls`` settled records in a row came with nothing between."""
    events, quiet = [], 0
    while quiet < quiet_polls:
        events.append(next(gen))
        settled = isinstance(events[-1], TrainProgress) and events[-1].settled
        quiet = quiet + 1 if settled else 0
    return events


def test_a_settled_run_polishes_the_overlay_with_test_time_augmentation():
    """Paused, the 2D model's overlay becomes what Stop would give: the view, then the
    other slices, block by block with test-time augmentation; Stop then predicts
    nothing again."""
    image, _, strokes = _stack(4, shape=(96, 96))
    run = TrainingRun(image, strokes, replace(FAST, settle_steps=6), axes="ZYX", mode="2d",
                      model_config=TINY_MODEL)
    tiles = TileConfig(tile_size=80)  # a 24 px halo either side leaves 32 px blocks
    assert one_window_blocks(run.model, tiles, (96, 96)) == (32, 32)
    gen = live_training(run, refresh_s=3600, region=(slice(2, 3), slice(0, 96), slice(0, 96)),
                        tiles=tiles, final_test_time_augmentation=True)
    events = _run_until_quiet(gen)
    first_settled = next(i for i, e in enumerate(events)
                         if isinstance(e, TrainProgress) and e.settled)
    polished = [e for e in events[first_settled:] if isinstance(e, PredictionUpdate)]
    assert [u.region[0].start for u in polished] == [2] * 9 + [1] * 9 + [3] * 9 + [0] * 9
    # each block says how far the redraw is
    assert [u.pass_progress for u in polished] == [
        PassProgress(k, 36, final=False) for k in range(1, 37)]
    assert all(u.step == 6 and u.class_map.shape == (1, 32, 32) for u in polished)
    # within a slice, from the view's centre outwards
    assert [(u.region[1].start, u.region[2].start) for u in polished[:5]] == [
        (32, 32), (0, 32), (32, 0), (32, 64), (64, 32)]
    overlay = np.zeros(image.shape, np.uint8)
    for update in polished:
        overlay[update.region] = update.class_map
    augmented = predict(run.model, image, tiles, axes="ZYX", test_time_augmentation=True)
    plain = predict(run.model, image, tiles, axes="ZYX")
    assert (overlay == augmented.class_map).all()
    assert (plain.class_map != augmented.class_map).any()  # so the test can tell them apart

    run.stop()
    rest = list(gen)
    # already polished
    assert not any(isinstance(e, PredictionUpdate) for e in rest)


def test_blocks_lie_on_one_grid_so_stop_predicts_only_what_polishing_left():
    """Zoomed in on a large image, the settled model polishes the grid cells the view
    touches first; stopped then, the run predicts only the other cells, nearest first."""
    image, truth = make_blobs((160, 160))
    run = TrainingRun(image, strokes_from_truth(truth), replace(FAST, settle_steps=6),
                      model_config=TINY_MODEL)
    tiles = TileConfig(tile_size=80)  # 32 px blocks: cells start at 0, 32, ... 128
    gen = live_training(run, refresh_s=3600, region=(slice(40, 70), slice(40, 70)),
                        tiles=tiles, final_test_time_augmentation=True)
    polished = []
    while len(polished) < 4:
        event = next(gen)
        if isinstance(event, PredictionUpdate) and event.step == 6:
            polished.append(event)
    corners = {(u.region[0].start, u.region[1].start) for u in polished}
    assert corners == {(32, 32), (32, 64), (64, 32), (64, 64)}

    run.stop()
    final = [e for e in gen if isinstance(e, PredictionUpdate)]
    # the redraw counts every block of the image; the pass after Stop only those it does
    assert [u.pass_progress for u in polished] == [
        PassProgress(k, 25, final=False) for k in range(1, 5)]
    assert [u.pass_progress for u in final] == [
        PassProgress(k, 21, final=True) for k in range(1, 22)]
    starts = [(u.region[0].start, u.region[1].start) for u in final]
    assert len(starts) == 21 and set(starts) == {
        (y, x) for y in range(0, 160, 32) for x in range(0, 160, 32)} - corners
    assert max(starts[:4]) < (128, 128) and (128, 128) in starts[-4:]  # outwards
    overlay = np.zeros(truth.shape, np.uint8)
    for update in polished + final:
        overlay[update.region] = update.class_map
    augmented = predict(run.model, image, tiles, test_time_augmentation=True).class_map
    assert (overlay == augmented).all()


def test_the_final_pass_fills_a_large_image_block_by_block_from_the_view():
    image, truth = make_blobs((160, 160))
    run = TrainingRun(image, strokes_from_truth(truth), FAST, model_config=TINY_MODEL)
    tiles = TileConfig(tile_size=80)
    gen = live_training(run, refresh_s=3600, region=(slice(120, 160), slice(0, 40)),
                        tiles=tiles)
    for event in gen:
        if isinstance(event, TrainProgress) and event.step == 3:
            run.stop()
            break
    rest = list(gen)
    final = [e for e in rest if isinstance(e, PredictionUpdate) and e.step == 3]
    assert [(u.region[0].start, u.region[1].start) for u in final[:2]] == [(128, 0), (96, 0)]
    # each block says how far the pass is, so a caller can say it
    assert [u.pass_progress for u in final] == [
        PassProgress(k, 25, final=True) for k in range(1, 26)]
    assert all(u.class_map.size <= 32 * 32 for u in final)
    overlay = np.zeros(truth.shape, np.uint8)
    for update in final:
        overlay[update.region] = update.class_map
    assert (overlay == predict(run.model, image, tiles).class_map).all()


def test_the_final_pass_follows_a_view_sent_after_stop():
    image, _, strokes = _stack(5)
    run = TrainingRun(image, strokes, FAST, axes="ZYX", mode="2d", model_config=TINY_MODEL)
    gen = live_training(run, refresh_s=3600, region=(slice(0, 1), slice(0, 48), slice(0, 48)))
    for event in gen:
        if isinstance(event, TrainProgress) and event.step == 3:
            run.stop()
            break
    event = next(gen)
    while not (isinstance(event, PredictionUpdate) and event.pass_progress):
        event = next(gen)
    assert event.region[0] == slice(0, 1)  # the slice in view first...
    moved = gen.send(RegionUpdate((slice(4, 5), slice(0, 48), slice(0, 48))))
    assert moved.region[0] == slice(4, 5)  # ...then the one scrolled to
    rest = [e.region[0].start for e in gen if isinstance(e, PredictionUpdate)]
    assert rest == [3, 2, 1]


def test_new_strokes_interrupt_polishing_after_one_block():
    image, _, strokes = _stack(4)
    run = TrainingRun(image, strokes, replace(FAST, settle_steps=6), axes="ZYX", mode="2d",
                      model_config=TINY_MODEL)
    gen = live_training(run, refresh_s=3600, region=(slice(2, 3), slice(0, 48), slice(0, 48)),
                        tiles=TileConfig(tile_size=32), final_test_time_augmentation=True)
    event = next(gen)
    while not isinstance(event, PredictionUpdate) or event.step < 6:
        event = next(gen)
    more = strokes.copy()
    more[0] = strokes[2]
    resumed = gen.send(LabelUpdate(more))
    assert isinstance(resumed, TrainProgress)  # no block predicted in between
    assert resumed.step == 7 and not resumed.settled
    gen.close()


def test_a_3d_model_is_not_polished_while_settled():
    """A 3D model's block with test-time augmentation takes about a minute on a CPU: too
    long to keep new strokes waiting. Its settled overlay stays the plain prediction."""
    image, _, strokes = _stack(4)
    run = TrainingRun(image, strokes, replace(FAST, settle_steps=3), axes="ZYX", mode="3d",
                      model_config=TINY_MODEL)
    gen = live_training(run, refresh_s=3600, final_test_time_augmentation=True)
    events = _run_until_quiet(gen)
    settled_updates = [e for e in events if isinstance(e, PredictionUpdate) and e.step == 3]
    assert len(settled_updates) == 1
    plain = predict(run.model, image, axes="ZYX").class_map
    assert (settled_updates[0].class_map == plain).all()
    gen.close()


def test_a_large_view_is_refreshed_in_parts_from_its_centre_with_steps_between(blobs):
    """A view larger than ``view_part_side``: each refresh comes in parts, the centre's
    first, with a training step between parts (new strokes wait for one part, not the
    whole view); a view sent meanwhile drops the old view's parts."""
    image, truth = make_blobs((120, 160))
    strokes = strokes_from_truth(truth, every=6)
    run = TrainingRun(image, strokes, replace(FAST, max_steps=40), model_config=TINY_MODEL)
    tiles = TileConfig(tile_size=80)  # blocks of 32 px: parts of 64 x 64
    gen = live_training(run, refresh_s=0.0, tiles=tiles, view_part_side=64, view_share=1.0)
    overlays, kinds, event = [], [], next(gen)
    try:
        while True:
            if isinstance(event, TrainProgress):
                kinds.append("step")
            if isinstance(event, PredictionUpdate) and event.pass_progress is None:
                kinds.append("overlay")  # (not the pass after training: it has no steps)
                overlays.append(event)
                if len(overlays) == 9:  # the user scrolls: a view of the left half
                    event = gen.send(RegionUpdate((slice(0, 120), slice(0, 80))))
                    continue
            event = next(gen)
    except StopIteration:
        pass
    corners = [(u.region[0].start, u.region[1].start) for u in overlays]
    # nearest the centre (60, 80) first
    assert corners[:6] == [(0, 64), (64, 64), (0, 0), (64, 0), (0, 128), (64, 128)]
    assert corners[6:9] == corners[:3]  # the next refresh, from the centre again
    first_pass = np.zeros(truth.shape, int)
    for update in overlays[:6]:
        first_pass[update.region] += 1
        assert update.class_map.shape == tuple(s.stop - s.start for s in update.region)
    assert (first_pass == 1).all()  # the parts cover the view once
    # a step between every two parts
    assert "overlay, overlay" not in ", ".join(kinds) and kinds.count("step") == 40
    # the new view (120 x 80, centre (60, 40)) straight away, not the old view's parts
    assert corners[9:12] == [(0, 0), (64, 0), (0, 64)]
    assert all(u.region[1].stop <= 80 for u in overlays[9:])


def test_a_large_view_cut_in_parts_costs_no_more_windows_than_in_one_piece():
    from napari_unet.core.inference import windows_per_region
    from napari_unet.core.view_first import view_parts
    from tests.core.test_inference import _random_model

    model = _random_model(num_classes=2)
    tiles = TileConfig(tile_size=80)
    image = np.zeros((3, 300, 260), np.float32)
    block = one_window_blocks(model, tiles, (300, 260))
    assert block == (32, 32)
    view = (slice(1, 2), slice(10, 290), slice(0, 250))
    parts = view_parts(view, "ZYX", image.shape, block, side=100, multiple=(4, 4))
    assert len(parts) == 9  # of at most 3 x 3 blocks: 96 px square, from (8, 0)
    # the one nearest the view's centre (150, 125) first
    assert parts[0] == (slice(1, 2), slice(104, 200), slice(96, 192))
    covered = np.zeros(image.shape, int)
    for part in parts:
        covered[part] += 1
        assert all(s.stop - s.start <= 96 for s in part[1:])  # whole blocks, <= side
    assert (covered[view] == 1).all() and covered.sum() == 280 * 250
    in_parts = windows_per_region(model, image, parts, tiles, axes="ZYX")
    one_piece = windows_per_region(model, image, [view], tiles, axes="ZYX")[0]
    assert sum(in_parts) == one_piece == 9 * 8  # one window per block the view touches
    assert in_parts[0] == 9
    # a view no larger than a part's side, or one spanning several planes, is one part
    assert view_parts(None, "YX", (90, 100), block, 100) == [None]
    several = (slice(0, 2), slice(0, 300), slice(0, 260))
    assert view_parts(several, "ZYX", image.shape, block, 100) == [several]
    # a part is at least a block, whatever the side asked for
    assert len(view_parts(None, "YX", (64, 64), block, 10)) == 4


def test_strokes_wait_for_one_part_of_a_large_view_not_all_of_it(monkeypatch):
    """Steps of 0.1 s and parts that take 1 s to predict (a 2048 x 2048 view on a CPU
    core costs 6-9 s in one piece): steps come between parts, and the view keeps to its
    half of the time."""
    from napari_unet.core import live

    clock = _Clock()
    monkeypatch.setattr(live, "time", clock)
    predict_region = live.predict_region
    spent = {"training": 0.0, "view": 0.0}
    gaps, since_step = [], [0.0]

    def slow_prediction(*args, **kw):
        clock.now += 1.0
        spent["view"] += 1.0
        return predict_region(*args, **kw)

    def count_step():
        spent["training"] += 0.1
        gaps.append(clock.now - since_step[0])
        since_step[0] = clock.now

    monkeypatch.setattr(live, "predict_region", slow_prediction)
    image, truth = make_blobs((160, 160))
    run = TrainingRun(image, strokes_from_truth(truth), replace(FAST, max_steps=5000),
                      model_config=TINY_MODEL)
    _steps_take(run, clock, 0.1, count_step)
    gen = live_training(run, refresh_s=2.0, tiles=TileConfig(tile_size=80),
                        view_part_side=64)
    parts = 0
    while clock.now < 60:
        event = next(gen)
        parts += isinstance(event, PredictionUpdate)
    gen.close()
    assert parts >= 20  # 9 parts a refresh: the view is refreshed, not starved
    assert max(gaps) <= 1.0 + 0.1 + 1e-9  # one part at most between two steps
    assert spent["view"] <= 0.5 * clock.now + 1.0, spent


def test_slices_slow_to_predict_leave_training_its_share_of_the_time(monkeypatch):
    """Steps of 0.1 s and slices that take 2 s to predict (a 1024 x 1024 stack on a CPU
    core): the view takes at most half the time, the other slices a quarter, and training
    keeps the rest, not one step per slice predicted (session 28: 7 steps in 16 s)."""
    from napari_unet.core import live

    clock = _Clock()
    monkeypatch.setattr(live, "time", clock)
    predict_region = live.predict_region
    spent = {"training": 0.0, "view": 0.0, "other slices": 0.0}
    view = (slice(2, 3), slice(None), slice(None))

    def slow_prediction(model, image, region, *args, **kw):
        clock.now += 2.0
        spent["view" if region[0] == view[0] else "other slices"] += 2.0
        return predict_region(model, image, region, *args, **kw)

    monkeypatch.setattr(live, "predict_region", slow_prediction)
    image, _, strokes = _stack(6)
    run = TrainingRun(image, strokes, replace(FAST, max_steps=5000), axes="ZYX", mode="2d",
                      model_config=TINY_MODEL)

    def count_step():
        spent["training"] += 0.1

    _steps_take(run, clock, 0.1, count_step)
    gen = live_training(run, refresh_s=2.0, region=view)
    while clock.now < 120:
        next(gen)
    gen.close()
    total = sum(spent.values())
    assert spent["view"] <= 0.5 * total + 2.0
    assert 0 < spent["other slices"] <= 0.25 * total + 2.0
    assert spent["training"] >= 0.2 * total, spent
