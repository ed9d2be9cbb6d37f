"""Training on the strokes of several images at once (TrainingRun's ``more``)."""

from dataclasses import replace

import numpy as np
import pytest

from napari_unet.core.config import ModelConfig, TrainConfig
from napari_unet.core.errors import InputError
from napari_unet.core.inference import predict
from napari_unet.core.metrics import foreground_iou
from napari_unet.core.sampling import MixedSampler, PatchSampler
from napari_unet.core.training import TrainingImage, TrainingRun
from tests.conftest import make_blobs, strokes_from_truth

TINY_MODEL = ModelConfig(depth=2, base_channels=8)
FAST = TrainConfig(patch_size=32, batch_size=4, learning_rate=5e-3, warmup_steps=5, seed=0,
                   device="cpu")


@pytest.fixture(scope="module")
def two_looks():
    """Bright squares on a dark background, and dark squares on a bright one."""
    a, truth_a = make_blobs((96, 96), seed=1)
    b, truth_b = make_blobs((96, 96), seed=2)
    return (a, strokes_from_truth(truth_a), truth_a), (255 - b, strokes_from_truth(truth_b),
                                                       truth_b)


def test_strokes_on_a_second_image_teach_the_model_how_it_looks(two_looks):
    (a, strokes_a, truth_a), (b, strokes_b, truth_b) = two_looks

    def scores(more, steps):
        run = TrainingRun(a, strokes_a, replace(FAST, max_steps=steps),
                          model_config=TINY_MODEL, more=more)
        model = run.run_to_end().model
        return [foreground_iou(predict(model, image).class_map, truth, strokes == 0)
                for image, strokes, truth in two_looks], model

    (alone_a, alone_b), _ = scores([], 150)
    assert alone_a > 0.9 and alone_b < 0.2  # the first image's look says nothing of b's
    (both_a, both_b), model = scores([TrainingImage(b, strokes_b, name="b")], 500)
    print(f"IoU a {alone_a:.3f} -> {both_a:.3f}, b {alone_b:.3f} -> {both_b:.3f}")
    assert both_a > 0.8 and both_b > 0.8
    assert model.metadata["training_images"] == 2
    painted = {str(k): int(np.sum(strokes_a == k) + np.sum(strokes_b == k)) for k in (1, 2)}
    assert model.metadata["painted_pixels"] == painted


def test_one_class_painted_on_each_image_is_enough_together(two_looks):
    (a, strokes_a, _), (b, strokes_b, _) = two_looks
    only_background = np.where(strokes_b == 1, 1, 0).astype(np.uint8)
    only_objects = np.where(strokes_a == 2, 2, 0).astype(np.uint8)
    run = TrainingRun(a, only_objects, replace(FAST, max_steps=2), model_config=TINY_MODEL,
                      more=[TrainingImage(b, only_background)])
    assert run.model.num_classes == 2
    run.run_to_end()
    # the first image's strokes may change to one class: the other image has the second
    run.update_labels(np.where(strokes_a == 2, 2, 0).astype(np.uint8))
    with pytest.raises(InputError, match="only one class"):
        TrainingRun(a, only_objects, FAST, model_config=TINY_MODEL,
                    more=[TrainingImage(b, np.where(strokes_b == 2, 2, 0).astype(np.uint8))])


def test_another_image_that_cannot_train_with_the_first_is_named_and_explained(two_looks):
    (a, strokes_a, _), (b, strokes_b, _) = two_looks
    stack = np.stack([a, a, a])
    cases = {
        "image 2: nothing is painted on it": TrainingImage(b, np.zeros_like(strokes_b)),
        r"rgb: it has 3 channel\(s\), the first image 1": TrainingImage(
            np.stack([b] * 3, axis=-1), strokes_b, axes="YXC", name="rgb"),
        "image 2: the image has shape": TrainingImage(b, strokes_b[:50]),
        "objects: the labels go up to 300": TrainingImage(
            b, np.where(strokes_b > 0, 300, 0).astype(np.uint16), name="objects"),
    }
    for message, other in cases.items():
        with pytest.raises(InputError, match=message):
            TrainingRun(a, strokes_a, FAST, model_config=TINY_MODEL, more=[other])
    with pytest.raises(InputError, match="flat: a 3D model needs a Z axis"):
        TrainingRun(stack, np.stack([strokes_a] * 3), FAST, mode="3d",
                    model_config=TINY_MODEL, more=[TrainingImage(b, strokes_b, name="flat")])
    fitted = TrainingRun(a, strokes_a, replace(FAST, max_steps=1),
                         model_config=TINY_MODEL).run_to_end().model
    with pytest.raises(InputError, match="image 2: .*label 3 is painted"):
        TrainingRun(a, strokes_a, FAST, init=fitted,
                    more=[TrainingImage(b, np.where(strokes_b == 2, 3, strokes_b))])


def test_each_class_is_drawn_as_often_and_shared_by_the_images_that_have_it():
    rng = np.random.default_rng(0)
    image = np.zeros((1, 1, 32, 32), np.float32)
    both = np.zeros((1, 32, 32), np.uint8)
    both[0, :4], both[0, -4:] = 1, 2  # classes 1 and 2 painted
    background = np.zeros((1, 32, 32), np.uint8)
    background[0, 10, 10] = 1  # one corrective background pixel
    samplers = [PatchSampler(image, labels, 8, rng, augment=False)
                for labels in (both, background)]
    mixed = MixedSampler(samplers, rng)
    counts = {0: [], 1: []}
    for i, sampler in enumerate(samplers):
        draw = sampler.draw_patch

        def counted(class_id=None, i=i, draw=draw):
            counts[i].append(class_id)
            return draw(class_id)

        sampler.draw_patch = counted
    batch = mixed.sample(4000)
    assert batch.images.shape == (4000, 1, 8, 8)
    share_of_second = len(counts[1]) / 4000
    assert 0.2 < share_of_second < 0.3  # half of the background patches: a quarter
    assert set(counts[1]) == {1}
    assert (batch.sources == 1).sum() == len(counts[1])  # each patch says its image
    assert 0.45 < counts[0].count(2) / 4000 < 0.55
    assert mixed.class_pixel_counts == {1: 4 * 32 + 1, 2: 4 * 32}
    with pytest.raises(InputError, match="different shapes"):
        MixedSampler([samplers[0], PatchSampler(image, background, 16, rng)], rng)



def test_images_that_cannot_train_with_the_first_can_be_left_out_with_why(two_looks):
    (a, strokes_a, _), (b, strokes_b, _) = two_looks
    rgb = TrainingImage(np.stack([b] * 3, axis=-1), strokes_b, axes="YXC", name="rgb")
    empty = TrainingImage(b, np.zeros_like(strokes_b), name="empty")
    run = TrainingRun(a, strokes_a, replace(FAST, max_steps=2), model_config=TINY_MODEL,
                      more=[rgb, TrainingImage(b, strokes_b, name="b"), empty],
                      leave_out_unfit=True)
    assert run.training_images == 2
    assert run.left_out == ["rgb: it has 3 channel(s), the first image 1; trained without it",
                            "empty: nothing is painted on it; trained without it"]
    assert run.run_to_end().model.metadata["training_images"] == 2
