import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.core.errors import InputError
from napari_unet.core.sampling import IGNORE_INDEX, PatchSampler


def _sampler(labels, patch=16, seed=0, augment=False, image=None):
    """A sampler over one sample: ``labels`` spatial, ``image`` ``(C, *spatial)``."""
    if image is None:
        image = np.random.default_rng(1).random((1, *labels.shape), dtype=np.float32)
    return PatchSampler(image[np.newaxis], labels[np.newaxis], patch,
                        np.random.default_rng(seed), augment=augment)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(8, 60), w=st.integers(8, 60), seed=st.integers(0, 10_000),
    augment=st.booleans(),
)
def test_only_painted_pixels_carry_loss(h, w, seed, augment):
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random((h, w)) < 0.05, rng.integers(1, 4, (h, w)), 0).astype(np.uint8)
    labels[0, 0], labels[-1, -1] = 1, 2  # at least two classes
    # Encode each pixel's own label in the image so we can check patch/target alignment.
    image = labels[np.newaxis].astype(np.float32)
    batch = _sampler(labels, patch=16, seed=seed, augment=augment, image=image).sample(3)
    assert batch.images.shape == (3, 1, 16, 16) and batch.targets.shape == (3, 16, 16)
    painted = batch.targets != IGNORE_INDEX
    assert painted.any()  # every patch is placed over a painted pixel
    # Exact alignment check; jitter changes values, and padding of small images mirrors the
    # image while the padded labels stay unpainted.
    if not augment and h >= 16 and w >= 16:
        np.testing.assert_array_equal(batch.images[:, 0][painted], batch.targets[painted] + 1)
        np.testing.assert_array_equal(batch.images[:, 0][~painted], 0)


def test_classes_are_balanced_whatever_the_stroke_lengths():
    labels = np.zeros((200, 200), dtype=np.uint8)
    labels[10:190, 10:190:4] = 1  # long background strokes: thousands of pixels
    labels[100, 100] = 2  # a single object pixel
    sampler = _sampler(labels, patch=8, seed=3)
    seen_object = sum((sampler.sample(1).targets == 1).any() for _ in range(400))
    assert 150 < seen_object < 250  # about half the patches, not 1 in 8000


def test_image_smaller_than_patch_is_padded_with_unpainted():
    labels = np.array([[1, 0, 2], [0, 0, 0]], dtype=np.uint8)
    batch = _sampler(labels, patch=16).sample(2)
    assert batch.images.shape == (2, 1, 16, 16)
    assert (batch.targets != IGNORE_INDEX).sum() == 4  # 2 painted pixels x 2 patches


def test_new_labels_replace_old_ones():
    labels = np.zeros((32, 32), dtype=np.uint8)
    labels[5, 5], labels[20, 20] = 1, 2
    sampler = _sampler(labels)
    assert sampler.class_pixel_counts == {1: 1, 2: 1}
    new = np.zeros_like(labels)
    new[:, 3] = 1
    new[:, 9] = 3
    sampler.set_labels(new[np.newaxis])
    assert sampler.class_pixel_counts == {1: 32, 3: 32}
    with pytest.raises(InputError, match="differs"):
        sampler.set_labels(np.zeros((1, 5, 5), dtype=np.uint8))


def test_3d_patches():
    labels = np.zeros((10, 30, 30), dtype=np.uint8)
    labels[4, 3:8, 3:8], labels[6, 20:25, 20:25] = 1, 2
    batch = _sampler(labels, patch=8, augment=True).sample(2)
    assert batch.images.shape == (2, 1, 8, 8, 8)


@pytest.mark.parametrize("jitter", [False, True])
def test_intensity_jitter_only_when_asked(jitter):
    # Values from a small set: without jitter a patch holds only image values (flipped and
    # rotated), with jitter they are scaled and shifted away from them.
    labels = np.ones((32, 32), dtype=np.uint8)
    image = np.random.default_rng(0).integers(0, 5, (1, 32, 32)).astype(np.float32)
    sampler = PatchSampler(image[np.newaxis], labels[np.newaxis], 16,
                           np.random.default_rng(0), augment=True, intensity_jitter=jitter)
    values = np.unique(sampler.sample(8).images)
    only_image_values = set(values.tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert only_image_values is not jitter


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), volumes=st.booleans(), density=st.sampled_from(
    [0.01, 0.3]))
def test_boxes_reindexed_alone_match_a_full_reindex(seed, volumes, density):
    """Painting, erasing and new classes in a few boxes: the sampler must end up where a
    full pass over the new labels puts it, and draw the same patches."""
    rng = np.random.default_rng(seed)
    shape = (3, 4, 20, 24) if volumes else (5, 20, 24)  # samples of 3D or 2D
    labels = np.where(rng.random(shape) < density, rng.integers(1, 3, shape), 0)
    labels = labels.astype(np.uint8)
    labels[0, ..., 0, 0], labels[1, ..., 0, 0] = 1, 2  # two classes, whatever is drawn
    image = rng.random((shape[0], 1, *shape[1:]), dtype=np.float32)
    boxed = PatchSampler(image, labels, 8, np.random.default_rng(0), augment=False)
    boxes = []
    for _ in range(3):
        index = int(rng.integers(shape[0]))
        spatial = tuple(slice(int(a), int(a) + int(rng.integers(1, s - a + 1)))
                        for a, s in ((int(rng.integers(s)), s) for s in shape[1:]))
        labels[index][spatial] = rng.integers(0, 5, labels[index][spatial].shape)
        boxes.append((index, spatial))
    boxed.update_boxes(labels, boxes)
    full = PatchSampler(image, labels, 8, np.random.default_rng(0), augment=False)
    np.testing.assert_array_equal(boxed.class_ids, full.class_ids)
    assert boxed.class_pixel_counts == full.class_pixel_counts
    assert boxed.painted_samples == full.painted_samples
    drawn, expected = boxed.sample(4), full.sample(4)
    np.testing.assert_array_equal(drawn.images, expected.images)
    np.testing.assert_array_equal(drawn.targets, expected.targets)


def test_erasing_every_stroke_in_boxes_is_refused_and_changes_nothing():
    labels = np.zeros((2, 10, 10), np.uint8)
    labels[0, 1, 1], labels[1, 5, 5] = 1, 2
    image = np.zeros((2, 1, 10, 10), np.float32)
    sampler = PatchSampler(image, labels.copy(), 4, np.random.default_rng(0))
    counts = sampler.class_pixel_counts
    with pytest.raises(InputError, match="no painted pixels"):
        sampler.update_boxes(np.zeros_like(labels), [(0, (slice(0, 10), slice(0, 10))),
                                                     (1, (slice(0, 10), slice(0, 10)))])
    assert sampler.class_pixel_counts == counts
