"""The input matrix of issue 6: every pixel type, odd values and odd sizes train and predict
or are refused with a clear message; nothing crashes."""

from dataclasses import replace

import numpy as np
import pytest

from napari_unet.core.errors import InputError
from napari_unet.core.inference import predict
from napari_unet.core.training import TrainingRun
from tests.core.test_training import FAST, TINY_MODEL

QUICK = replace(FAST, max_steps=2)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32,
                                   np.uint32, np.int64, np.uint64, np.float16, np.float32,
                                   np.float64, bool])
def test_every_pixel_type_trains_and_predicts(blobs, dtype):
    image, strokes, _ = blobs
    typed = image > 100 if dtype is bool else image.astype(dtype)
    model = TrainingRun(typed, strokes, QUICK, model_config=TINY_MODEL).run_to_end().model
    class_map = predict(model, typed).class_map
    assert class_map.shape == image.shape and set(np.unique(class_map)) <= {1, 2}


def test_nan_inf_and_constant_images_give_finite_training(blobs):
    image, strokes, _ = blobs
    broken = image.astype(np.float32)
    broken[::5, ::3] = np.nan
    broken[1::7, ::4] = np.inf
    broken[2::9, ::2] = -np.inf
    for picture in (broken, np.full(image.shape, 7.0, np.float32)):
        run = TrainingRun(picture, strokes, QUICK, model_config=TINY_MODEL)
        losses = [p.loss for p in run.steps()]
        assert np.isfinite(losses).all()
        assert predict(run.model, picture).class_map.shape == image.shape
    with pytest.raises(InputError, match="no finite"):
        TrainingRun(np.full(image.shape, np.nan, np.float32), strokes, QUICK)


def test_image_smaller_than_a_patch_and_than_the_network_grid():
    image = np.random.default_rng(0).random((5, 7)).astype(np.float32)
    strokes = np.zeros((5, 7), np.uint8)
    strokes[0, 0], strokes[4, 6] = 1, 2
    model = TrainingRun(image, strokes, QUICK, model_config=TINY_MODEL).run_to_end().model
    assert predict(model, image).class_map.shape == (5, 7)


def test_non_numeric_and_mismatched_inputs_are_refused(blobs):
    image, strokes, _ = blobs
    with pytest.raises(InputError, match="integer"):
        TrainingRun(image, strokes.astype(str), QUICK)
    with pytest.raises(InputError, match="negative"):
        TrainingRun(image, strokes.astype(np.int16) - 1, QUICK)
    with pytest.raises(InputError, match="whole numbers"):
        TrainingRun(image, strokes + 0.5, QUICK)
    with pytest.raises(InputError, match="same pixels"):
        TrainingRun(image[:, :10], strokes, QUICK)
    with pytest.raises(InputError, match="up to 5|give the axes"):
        TrainingRun(image[None, None, None, None], strokes[None, None, None, None], QUICK)
    # complex pixels would lose their imaginary part without a word
    model = TrainingRun(image, strokes, QUICK, model_config=TINY_MODEL).run_to_end().model
    for bad, message in ((image + 1j * image, "complex pixels; convert it to real values"),
                         (image.astype(object), "must be numbers, got dtype object")):
        with pytest.raises(InputError, match=message):
            TrainingRun(bad, strokes, QUICK)
        with pytest.raises(InputError, match=message):
            predict(model, bad)
