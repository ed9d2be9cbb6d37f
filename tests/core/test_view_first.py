"""A whole image predicted in parts, from the view outwards (Predict, and the end of training)."""

import numpy as np
import pytest

from napari_unet.core.config import TileConfig
from napari_unet.core.inference import TileProgress, iter_predict, predict, windows_per_region
from napari_unet.core.view_first import (
    PassProgress,
    PredictionUpdate,
    block_key,
    predict_view_first,
)
from tests.core.test_inference import _random_model

TILES = TileConfig(tile_size=80, batch_size=3)  # a 24 px halo either side: 32 px blocks


def _assembled(updates: list[PredictionUpdate], shape: tuple[int, ...]) -> np.ndarray:
    """The parts written where they belong, 0 where none came."""
    overlay = np.zeros(shape, np.uint8)
    for update in updates:
        overlay[update.region] = update.class_map
    return overlay


def _split(events: list) -> tuple[list[TileProgress], list[PredictionUpdate]]:
    tiles = [e for e in events if isinstance(e, TileProgress)]
    updates = [e for e in events if isinstance(e, PredictionUpdate)]
    assert len(tiles) + len(updates) == len(events)
    return tiles, updates


def test_a_large_image_fills_in_from_the_view_and_equals_the_whole_prediction():
    model = _random_model()
    image = np.random.default_rng(0).random((150, 170), dtype=np.float32)
    view = (slice(100, 150), slice(0, 40))
    tiles, updates = _split(list(predict_view_first(model, image, TILES, view=view)))
    # 32 px blocks: 5 x 6 of them, each told as a part of the pass
    assert [u.pass_progress for u in updates] == [
        PassProgress(k, 30, final=True) for k in range(1, 31)]
    assert all(u.class_map.size <= 32 * 32 and not u.complete for u in updates)
    # the blocks the view touches first, nearest its centre first; the far corner last
    assert [(u.region[0].start, u.region[1].start) for u in updates[:4]] == [
        (96, 0), (128, 0), (96, 32), (128, 32)]
    assert (updates[-1].region[0].start, updates[-1].region[1].start) == (0, 160)
    # every pixel once, and the same as predicting the image whole
    cover = np.zeros(image.shape, int)
    for update in updates:
        cover[update.region] += 1
    assert (cover == 1).all()
    whole = predict(model, image, TILES).class_map
    assert (_assembled(updates, image.shape) == whole).all()
    # progress counts windows over the whole pass, one per block here
    assert [t.tiles_done for t in tiles] == list(range(1, 31))
    assert {t.tiles_total for t in tiles} == {30}


def test_test_time_augmentation_and_confidence_come_with_each_part():
    model = _random_model()
    image = np.random.default_rng(1).random((96, 96), dtype=np.float32)
    tiles, updates = _split(list(predict_view_first(
        model, image, TILES, with_confidence=True, test_time_augmentation=True)))
    assert len(updates) == 9 and tiles[-1].tiles_done == tiles[-1].tiles_total == 9 * 8
    whole = predict(model, image, TILES, return_probabilities=True, test_time_augmentation=True)
    plain = predict(model, image, TILES).class_map
    assert (_assembled(updates, image.shape) == whole.class_map).all()
    assert (plain != whole.class_map).any()  # so the test can tell them apart
    confidence = np.zeros(image.shape, np.float32)
    for update in updates:
        confidence[update.region] = update.confidence
    np.testing.assert_allclose(confidence, whole.probabilities.max(axis=0), atol=1e-5)


def test_a_stack_goes_plane_by_plane_from_the_one_in_view():
    model = _random_model()
    image = np.random.default_rng(2).random((4, 96, 70), dtype=np.float32)
    view = (slice(2, 3), slice(0, 96), slice(0, 70))
    _, updates = _split(list(predict_view_first(model, image, TILES, axes="ZYX", view=view)))
    planes = [u.region[0].start for u in updates]
    # 96 px is cut into 32 px blocks, 70 px fits one window: 3 blocks a plane
    assert planes == [2] * 3 + [1] * 3 + [3] * 3 + [0] * 3
    assert (_assembled(updates, image.shape)
            == predict(model, image, TILES, axes="ZYX").class_map).all()


def test_a_3d_model_goes_frame_by_frame_nearest_first():
    model = _random_model(spatial_dims=3)
    image = np.random.default_rng(3).random((3, 8, 32, 32), dtype=np.float32)
    view = (slice(2, 3), slice(4, 5), slice(0, 32), slice(0, 32))
    tiles, updates = _split(list(predict_view_first(model, image, axes="TZYX", view=view)))
    assert [u.region[0] for u in updates] == [slice(2, 3), slice(1, 2), slice(0, 1)]
    assert all(u.region[1:] == (slice(0, 8), slice(0, 32), slice(0, 32)) for u in updates)
    assert [u.pass_progress.done for u in updates] == [1, 2, 3]
    assert (_assembled(updates, image.shape)
            == predict(model, image, axes="TZYX").class_map).all()
    # a single volume is one part
    _, one = _split(list(predict_view_first(model, image[0], axes="ZYX")))
    assert len(one) == 1 and one[0].complete and one[0].pass_progress == PassProgress(1, 1, True)


def test_a_3d_model_cuts_a_volume_larger_than_a_tile_into_blocks_from_the_view():
    model = _random_model(spatial_dims=3)  # 24 px halo: a 64 x 80 x 80 tile's core 16 x 32
    tiles = TileConfig(tile_size_3d=(64, 80, 80))
    image = np.random.default_rng(5).random((70, 100, 30), dtype=np.float32)
    view = (slice(40, 41), slice(0, 50), slice(0, 30))  # slice 40, top half
    progress, updates = _split(list(predict_view_first(model, image, tiles, axes="ZYX",
                                                       view=view)))
    starts = [tuple(sl.start for sl in u.region) for u in updates]
    assert len(starts) == len(set(starts)) == 20  # Z 4 x 16 + 6, Y 3 x 32 + 4, X whole
    assert starts[:2] == [(32, 0, 0), (32, 32, 0)]  # the view's blocks, its centre's first
    assert starts[-1] == (0, 96, 0)  # the farthest
    assert [t.tiles_done for t in progress] == list(range(1, 21))  # one window a block
    assert (_assembled(updates, image.shape)
            == predict(model, image, tiles, axes="ZYX").class_map).all()


def test_a_view_sent_meanwhile_is_predicted_next():
    """The user scrolls to another slice while the pass runs: that slice comes next."""
    model = _random_model()
    image = np.random.default_rng(6).random((5, 40, 40), dtype=np.float32)
    plane = [(slice(z, z + 1), slice(0, 40), slice(0, 40)) for z in range(5)]
    untouched = [u.region[0].start for u in predict_view_first(model, image, TILES, axes="ZYX",
                                                               view=plane[0])
                 if isinstance(u, PredictionUpdate)]
    assert untouched == [0, 1, 2, 3, 4]
    gen = predict_view_first(model, image, TILES, axes="ZYX", view=plane[0])
    assert isinstance(next(gen), TileProgress)  # plane 0 under way...
    first = gen.send(plane[4])  # ...when the user scrolls to plane 4
    progress, updates = _split([first, *gen])
    assert [u.region[0].start for u in updates] == [0, 4, 3, 2, 1]
    assert [u.pass_progress for u in updates] == [
        PassProgress(k, 5, final=True) for k in range(1, 6)]
    assert [t.tiles_done for t in progress] == [2, 3, 4, 5]  # counted on across the move
    assert (_assembled(updates, image.shape)
            == predict(model, image, TILES, axes="ZYX").class_map).all()


def test_blocks_already_predicted_are_skipped():
    model = _random_model()
    image = np.random.default_rng(4).random((96, 96), dtype=np.float32)
    everything = [e for e in predict_view_first(model, image, TILES)
                  if isinstance(e, PredictionUpdate)]
    done = {block_key(u.region) for u in everything[:3]}
    tiles, rest = _split(list(predict_view_first(model, image, TILES, skip=done)))
    assert len(rest) == 6 and not done & {block_key(u.region) for u in rest}
    assert [u.pass_progress.total for u in rest] == [6] * 6
    assert tiles[-1].tiles_total == 6


@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize("region", [None, (slice(10, 50), slice(0, 100))])
def test_window_count_is_what_prediction_reports(region, tta):
    model = _random_model()
    image = np.zeros((120, 100), np.float32)
    reported = [t.tiles_total for t in iter_predict(model, image, TILES, region=region,
                                                    test_time_augmentation=tta)]
    assert set(reported) == set(windows_per_region(model, image, [region], TILES,
                                                   test_time_augmentation=tta))
