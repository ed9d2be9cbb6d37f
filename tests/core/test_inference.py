import functools
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.core.config import ModelConfig, TileConfig, TrainConfig
from napari_unet.core.errors import InputError
from napari_unet.core.inference import (
    iter_predict,
    one_window_blocks,
    plan_tiles,
    predict,
    windows_per_region,
)
from napari_unet.core.model import TrainedModel
from napari_unet.core.normalization import Normalization
from napari_unet.core.training import TrainingRun
from napari_unet.core.unet import build_unet


def _random_model(in_channels=1, num_classes=3, depth=2, seed=0, **config) -> TrainedModel:
    torch.manual_seed(seed)
    net = build_unet(ModelConfig(in_channels=in_channels, num_classes=num_classes,
                                 depth=depth, base_channels=8, **config)).eval()
    norm = Normalization((0.0,) * in_channels, (1.0,) * in_channels)
    return TrainedModel(net, norm, ("background", "a", "b")[:num_classes])


@pytest.mark.parametrize("shape", [(203, 157), (64, 64), (97, 300)])
def test_tiled_equals_untiled(shape):
    model = _random_model()
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    whole = predict(model, image, TileConfig(tile_size=512), return_probabilities=True)
    tiled = predict(model, image, TileConfig(tile_size=48, batch_size=3),
                    return_probabilities=True)
    assert whole.probabilities.shape == (3, *shape)
    np.testing.assert_allclose(tiled.probabilities, whole.probabilities, atol=1e-5)
    np.testing.assert_array_equal(tiled.class_map, whole.class_map)


def test_trained_model_tiles_without_seams(blobs):
    image, strokes, _ = blobs
    big = np.tile(image, (3, 3))
    config = TrainConfig(patch_size=32, max_steps=20, seed=0, device="cpu")
    model = TrainingRun(big, np.tile(strokes, (3, 3)), config,
                        model_config=ModelConfig(depth=3, base_channels=8)).run_to_end().model
    whole = predict(model, big, TileConfig(tile_size=256), return_probabilities=True)
    tiled = predict(model, big, TileConfig(tile_size=128), return_probabilities=True)
    np.testing.assert_allclose(tiled.probabilities, whole.probabilities, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40)).map(lambda s: (s[0] * 8, s[1] * 8)),
    tile=st.integers(16, 200), halo=st.integers(0, 40),
)
def test_tile_cores_cover_every_pixel_once(shape, tile, halo):
    windows = plan_tiles(shape, tile, halo, multiple=8)
    cover = np.zeros(shape, dtype=int)
    padded_halo = -(-halo // 8) * 8
    for w in windows:
        cover[w.core] += 1
        window_shape = tuple(s.stop - s.start for s in w.window)
        assert max(window_shape) <= max(-(-tile // 8) * 8, 2 * padded_halo + 8)
        assert all(s.start % 8 == 0 and s.stop % 8 == 0 for s in w.window)  # pooling grids
        for core, win, size in zip(w.core, w.window, shape):
            # the halo around the core, where the image has it, and nothing more
            assert win.start == max(core.start - padded_halo, 0) or len(windows) == 1
            assert win.stop == min(core.stop + padded_halo, size) or len(windows) == 1
    assert (cover == 1).all()


def test_class_map_uses_painted_ids_and_probabilities_sum_to_one():
    model = _random_model(num_classes=3)
    out = predict(model, np.random.default_rng(0).random((40, 40)), return_probabilities=True)
    assert out.class_map.dtype == np.uint8
    assert set(np.unique(out.class_map)) <= {1, 2, 3}
    np.testing.assert_allclose(out.probabilities.sum(axis=0), 1, atol=1e-5)
    np.testing.assert_array_equal(out.probabilities.argmax(axis=0) + 1, out.class_map)


def test_odd_and_tiny_images():
    model = _random_model()
    for shape in [(1, 1), (3, 200), (17, 5)]:
        assert predict(model, np.ones(shape)).class_map.shape == shape


def test_wrong_channel_count_is_explained():
    model = _random_model(in_channels=2)
    with pytest.raises(InputError, match="2-channel"):
        predict(model, np.zeros((3, 32, 32)))
    with pytest.raises(InputError, match="up to 5"):
        predict(model, np.zeros((2, 2, 2, 2, 32, 32)))
    with pytest.raises(InputError, match="no Z"):
        predict(_random_model(spatial_dims=3), np.zeros((32, 32)), axes="YX")


def test_multichannel_input():
    model = _random_model(in_channels=2)
    assert predict(model, np.zeros((2, 30, 30))).class_map.shape == (30, 30)


def test_tile_config_is_validated():
    with pytest.raises(InputError):
        replace(TileConfig(), tile_size=4)


def test_test_time_augmentation_is_exact_under_tiling_and_averages_orientations():
    model = _random_model()
    image = np.random.default_rng(1).random((75, 90), dtype=np.float32)
    whole = predict(model, image, TileConfig(tile_size=512), return_probabilities=True,
                    test_time_augmentation=True)
    tiled = predict(model, image, TileConfig(tile_size=48), return_probabilities=True,
                    test_time_augmentation=True)
    np.testing.assert_allclose(tiled.probabilities, whole.probabilities, atol=1e-5)
    np.testing.assert_allclose(whole.probabilities.sum(axis=0), 1, atol=1e-5)
    # The average over the 8 orientations of the whole image, computed by hand (on a size
    # that needs no padding: the engine turns each window of the padded image, so the
    # padding would land elsewhere).
    image = image[:72, :88]
    whole = predict(model, image, return_probabilities=True, test_time_augmentation=True)
    by_hand = np.zeros_like(whole.probabilities)
    for k in range(4):
        for flip in (False, True):
            view = np.rot90(image, k)
            view = view[:, ::-1] if flip else view
            p = predict(model, np.ascontiguousarray(view), return_probabilities=True)
            p = p.probabilities[:, :, ::-1] if flip else p.probabilities
            by_hand += np.rot90(p, -k, axes=(1, 2))
    np.testing.assert_allclose(whole.probabilities, by_hand / 8, atol=1e-5)
    assert predict(model, image, test_time_augmentation=True).class_map.shape == (72, 88)


@pytest.mark.parametrize(("spatial_dims", "shape", "tiles"), [
    (2, (300, 215), TileConfig(tile_size=64)),  # many tiles, odd sizes: padding by reflection
    (2, (3, 5), TileConfig(tile_size=64)),  # smaller than the network's grid
    (3, (9, 40, 27), TileConfig(tile_size_3d=(16, 32, 32))),
])
def test_tile_by_tile_normalisation_equals_the_whole_image_path(spatial_dims, shape, tiles):
    """Prediction normalises and pads each tile on its own (memory bounded by the tile);
    it must give exactly what normalising and padding the whole image first gives."""
    from napari_unet.core.inference import _pad_to_multiple, _TileSource

    torch.manual_seed(0)
    network = build_unet(ModelConfig(depth=2, base_channels=8, spatial_dims=spatial_dims))
    normalization = Normalization(low=(10.0,), high=(200.0,))
    model = TrainedModel(network, normalization, ("a", "b"), {})
    image = np.random.default_rng(1).normal(100, 40, shape).astype(np.float32)
    image.flat[0] = np.nan
    normalised = normalization.apply(image[None])  # the NaN becomes 0
    multiples = model.config.size_multiples
    whole = _pad_to_multiple(normalised, multiples)
    source = _TileSource(image[None], normalization, multiples)
    assert source.shape == whole.shape
    for window in [tuple(slice(0, s) for s in whole.shape[1:]),
                   tuple(slice(s // 3, s) for s in whole.shape[1:])]:
        np.testing.assert_array_equal(source[(slice(None), *window)],
                                      whole[(slice(None), *window)])
    # and through the engine: the same as a model given the image normalised beforehand
    unscaled = TrainedModel(network, Normalization(low=(0.0,), high=(1.0,)), ("a", "b"), {})
    np.testing.assert_array_equal(predict(model, image, tiles).class_map,
                                  predict(unscaled, normalised[0], tiles).class_map)


@pytest.mark.parametrize("tile_size", [64, 80, 128])
def test_a_one_window_block_is_predicted_in_one_window_wherever_it_lies(tile_size):
    model = _random_model()  # depth 2: 23 px receptive radius, padded to 24
    tiles = TileConfig(tile_size=tile_size)
    side, other = one_window_blocks(model, tiles, (300, 40))
    assert side == tile_size - 48 and other == 40  # a side that fits one tile stays whole
    image = np.random.default_rng(0).random((300, 40), dtype=np.float32)
    for start in range(0, 300, side):
        region = (slice(start, min(start + side, 300)), slice(0, 40))
        steps = iter_predict(model, image, tiles, region=region)
        progress = next(steps)
        assert progress.tiles_total == 1
    with pytest.raises(InputError, match="3D model's samples have 3 axes"):
        one_window_blocks(_random_model(spatial_dims=3), tiles, (300, 40))


def test_a_3d_model_block_is_one_window_too():
    model = _random_model(spatial_dims=3)  # 24 px halo on every axis
    tiles = TileConfig(tile_size_3d=(64, 80, 80))
    assert one_window_blocks(model, tiles, (70, 100, 30)) == (16, 32, 30)
    image = np.random.default_rng(0).random((70, 100, 30), dtype=np.float32)
    region = (slice(48, 64), slice(64, 96), slice(0, 30))
    assert next(iter_predict(model, image, tiles, axes="ZYX", region=region)).tiles_total == 1


def test_test_time_augmentation_keeps_memory_bounded_by_the_tile():
    """The 8 flips are averaged window by window: the class map alone needs no image of
    probabilities, the same result in less memory."""
    import tracemalloc

    model = _random_model()
    tiles = TileConfig(tile_size=200)  # 24 px halo: blocks of 152, 4 x 4 of them here
    image = np.random.default_rng(0).random((600, 520), dtype=np.float32)
    peaks, maps = [], []
    for probabilities in (False, True):  # asked for, they are kept whole: one piece
        tracemalloc.start()
        steps = iter_predict(model, image, tiles, test_time_augmentation=True,
                             return_probabilities=probabilities)
        reports = []
        while True:
            try:
                reports.append(next(steps))
            except StopIteration as finished:
                maps.append(finished.value.class_map)
                break
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        done = [r.tiles_done for r in reports]
        assert done == sorted(set(done)) and done[-1] == reports[-1].tiles_total
        assert {r.tiles_total for r in reports} == set(windows_per_region(
            model, image, [None], tiles, return_probabilities=probabilities,
            test_time_augmentation=True))
    assert (maps[0] == maps[1]).all()
    assert peaks[0] < peaks[1] / 3, peaks  # numpy's peak: 2.4 against 19.4 MiB here


@settings(max_examples=25, deadline=None)
@given(y0=st.integers(0, 150), x0=st.integers(0, 110), h=st.integers(1, 80),
       w=st.integers(1, 80))
def test_a_region_is_what_the_whole_image_gives_there_for_the_windows_it_touches(y0, x0, h, w):
    """The cores cover the region only (its context is read, not predicted): any region
    equals the whole image's prediction there, and costs one window per block of the
    tile's core it needs (a region's halo ring once cost a row and column more)."""
    model, image, whole = _region_case()
    tiles = TileConfig(tile_size=80)  # 24 px halo: cores of 32
    region = (slice(y0, min(y0 + h, 203)), slice(x0, min(x0 + w, 157)))
    got = predict(model, image, tiles, region=region).class_map
    np.testing.assert_array_equal(got, whole[region])
    spans = [(sl.stop - sl.start + sl.start % 4 + 3) // 4 * 4 for sl in region]
    assert windows_per_region(model, image, [region], tiles)[0] <= \
        np.prod([-(-span // 32) for span in spans])


@functools.lru_cache(maxsize=1)
def _region_case():
    model = _random_model(num_classes=3)
    image = np.random.default_rng(5).random((203, 157), dtype=np.float32)
    return model, image, predict(model, image, TileConfig(tile_size=512)).class_map

