"""Instance labels from class maps, and the object-level score."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from napari_unet.core.errors import InputError
from napari_unet.core.instances import (
    SEED_DEPTH_2D,
    SEED_DEPTH_3D,
    InstanceConfig,
    instances_from_classes,
    split_objects,
)
from napari_unet.core.metrics import match_instances


def _disc(shape, centre, radius):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_touching_discs_become_two_objects():
    mask = _disc((60, 80), (30, 25), 14) | _disc((60, 80), (30, 50), 14)
    objects = split_objects(mask)
    assert objects.max() == 2
    assert set(np.unique(objects[30, :30])) - {0} == {1}
    assert set(np.unique(objects[30, 45:])) - {0} == {2}
    assert (objects > 0).sum() == mask.sum()  # nothing lost at the neck


@pytest.mark.parametrize("angle", [30, 40, 45, 50, 60])
@pytest.mark.parametrize(("a", "b"), [(10, 7), (12, 7), (14, 6), (14, 9), (18, 8)])
def test_a_tilted_oval_is_one_object(a, b, angle):
    """A distance map on a pixel grid has twin tops of equal height along a diagonal
    ridge; skimage's h_maxima seeded each twin, cutting such ovals in two."""
    yy, xx = np.mgrid[:60, :60] - 30.0
    t = np.deg2rad(angle)
    u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
    oval = (u / a) ** 2 + (v / b) ** 2 <= 1
    assert split_objects(oval).max() == 1
    assert instances_from_classes(oval.astype(np.uint8) + 1).max() == 1


def test_smallest_object_defaults_to_four_pixels_across_in_2d_and_3d():
    assert (InstanceConfig().smallest(2), InstanceConfig().smallest(3)) == (16, 64)
    assert InstanceConfig(min_size=5).smallest(3) == 5
    stack = np.zeros((12, 40, 40), bool)
    stack[2:4, 2:7, 2:7] = True  # 5 x 5 x 2 = 50 voxels: a speck in 3D
    stack[2:10, 20:30, 20:30] = True  # 800 voxels: an object
    assert split_objects(stack).max() == 1
    assert split_objects(stack, config=InstanceConfig(min_size=16)).max() == 2
    assert split_objects(stack[3]).max() == 2  # 5 x 5 = 25 pixels: an object in 2D


def test_seed_depth_defaults_by_dimension_and_can_be_set():
    assert InstanceConfig().seed_depth(2) == SEED_DEPTH_2D
    assert InstanceConfig().seed_depth(3) == SEED_DEPTH_3D
    assert InstanceConfig(h=5.0).seed_depth(3) == 5.0
    # two discs overlapping a lot: one object with a deep seed, two with a shallow one
    mask = _disc((60, 80), (30, 30), 14) | _disc((60, 80), (30, 46), 14)
    assert split_objects(mask, config=InstanceConfig(h=1.0)).max() == 2
    assert split_objects(mask, config=InstanceConfig(h=8.0)).max() == 1
    with pytest.raises(InputError, match="h must be > 0"):
        InstanceConfig(h=0.0)


def test_small_objects_are_removed_and_ids_are_consecutive():
    mask = _disc((50, 50), (25, 25), 8)
    mask[2:4, 2:4] = True  # a 4-pixel speck
    assert split_objects(mask, config=InstanceConfig(min_size=10)).max() == 1
    assert split_objects(mask, config=InstanceConfig(min_size=1)).max() == 2


def test_classes_frames_and_anisotropic_stacks():
    class_map = np.ones((2, 40, 40), np.uint8)  # T, Y, X
    class_map[0][_disc((40, 40), (10, 10), 5)] = 2
    class_map[0][_disc((40, 40), (30, 30), 5)] = 3  # another class: its own object
    class_map[1][_disc((40, 40), (20, 20), 6)] = 2
    objects = instances_from_classes(class_map, "TYX")
    assert objects[0].max() == 2 and objects[1].max() == 1  # numbered per frame
    assert objects[0][10, 10] != objects[0][30, 30]
    only_class_2 = instances_from_classes(class_map, "TYX", config=InstanceConfig(classes=(2,)))
    assert only_class_2[0][30, 30] == 0
    # a ball spanning 3 coarse slices is one 3D object, not one per slice
    ball = np.ones((3, 30, 30), np.uint8)
    ball[:, 8:22, 8:22] = 2
    assert instances_from_classes(ball, "ZYX", spacing=(5.0, 1.0, 1.0)).max() == 1


def test_matching_counts_and_leaves_painted_objects_out():
    truth = np.zeros((40, 40), np.int32)
    truth[2:10, 2:10], truth[20:30, 20:30], truth[2:8, 30:38] = 1, 2, 3
    pred = np.zeros_like(truth)
    pred[2:10, 2:11] = 7  # IoU 64/72: found
    pred[20:24, 20:24] = 8  # IoU 16/100: missed, and a false positive
    pred[34:38, 2:6] = 9  # nothing there: false positive
    score = match_instances(truth, pred)
    assert (score.true_positives, score.false_positives, score.false_negatives) == (1, 2, 2)
    assert score.average_precision == pytest.approx(1 / 5)
    painted = np.zeros(truth.shape, bool)
    painted[25, 25] = painted[35, 3] = True  # truth 2 and prediction 9 were painted on
    left_out = match_instances(truth, pred, ignore=painted)
    assert (left_out.true_positives, left_out.false_positives,
            left_out.false_negatives) == (1, 1, 1)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_instances_cover_exactly_the_foreground_of_big_objects(seed):
    rng = np.random.default_rng(seed)
    class_map = np.ones((48, 48), np.uint8)
    for _ in range(4):
        y, x, r = rng.integers(8, 40), rng.integers(8, 40), rng.integers(4, 8)
        class_map[_disc((48, 48), (y, x), r)] = 2
    objects = instances_from_classes(class_map, config=InstanceConfig(min_size=0))
    np.testing.assert_array_equal(objects > 0, class_map == 2)
    assert set(np.unique(objects)) == set(range(objects.max() + 1))
    assert match_instances(objects, objects).average_precision == 1.0


def _whole_image_seeds(mask: np.ndarray, h: float) -> np.ndarray:
    """The seeds' pixels as one reconstruction over the whole image finds them."""
    from scipy import ndimage as ndi
    from skimage.morphology import local_maxima, reconstruction

    distance = ndi.distance_transform_edt(mask)
    domes = reconstruction(distance - h, distance, method="dilation")
    return local_maxima(domes, connectivity=mask.ndim) & mask


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), h=st.sampled_from([0.5, 1.0, 2.0, 3.0]))
def test_components_split_alone_find_the_seeds_the_whole_image_does(seed, h):
    # Blobs of touching discs, apart from each other (no two components touch even at a
    # corner): each is reconstructed alone in its box, for speed, and must find the
    # same peaks as the whole image would.
    from scipy import ndimage as ndi

    from napari_unet.core.instances import _peaks

    rng = np.random.default_rng(seed)
    mask = np.zeros((40, 96, 96), bool) if seed % 2 else np.zeros((120, 160), bool)
    grid = np.indices(mask.shape)
    for _ in range(8):
        centre = [rng.integers(6, n - 6) for n in mask.shape]
        radius = rng.integers(3, 9)
        mask |= sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2
    components, count = ndi.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    assume(ndi.label(mask)[1] == count)  # no blobs that meet only at a corner
    distance = ndi.distance_transform_edt(mask)
    mine = _peaks(distance, ndi.label(mask)[0], h) > 0
    reference = _whole_image_seeds(mask, h)
    # Components with no peak above h are left to the caller, which seeds them whole:
    # where the whole image finds their plateau, they are left out here.
    heights = ndi.maximum(distance, components, np.arange(1, count + 1))
    low = np.isin(components, np.flatnonzero(heights <= h) + 1)
    np.testing.assert_array_equal(mine, reference & ~low)
