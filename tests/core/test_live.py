from dataclasses import replace

from napari_unet.core.config import TileConfig
from napari_unet.core.live import PredictionUpdate, RegionUpdate, live_training
from napari_unet.core.training import LabelUpdate, TrainingRun, TrainProgress
from tests.core.test_training import FAST, TINY_MODEL


def test_overlay_comes_after_the_first_step_and_refreshes(blobs):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, replace(FAST, max_steps=30), model_config=TINY_MODEL)
    events = list(live_training(run, refresh_s=0.0))
    assert isinstance(events[0], TrainProgress) and isinstance(events[1], PredictionUpdate)
    predictions = [e for e in events if isinstance(e, PredictionUpdate)]
    assert len(predictions) == 31  # one per step with refresh 0, plus the final one
    assert predictions[-1].complete and predictions[-1].class_map.shape == image.shape
    assert predictions[-1].step == 30
    assert [e.step for e in events if isinstance(e, TrainProgress)] == list(range(1, 31))


def test_refresh_interval_limits_predictions(blobs):
    image, strokes, _ = blobs
    run = TrainingRun(image, strokes, replace(FAST, max_steps=20), model_config=TINY_MODEL)
    predictions = [e for e in live_training(run, refresh_s=3600)
                   if isinstance(e, PredictionUpdate)]
    assert len(predictions) == 2  # the first overlay, and the final full prediction


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
