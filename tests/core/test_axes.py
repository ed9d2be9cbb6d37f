"""Axes: parsing, guessing, the canonical views, and regions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.core.axes import (
    SampleStack,
    default_mode,
    infer_axes,
    label_axes,
    labels_from_canonical,
    labels_to_canonical,
    pair_axes,
    parse_axes,
    region_from_canonical,
    region_to_canonical,
    to_canonical,
)
from napari_unet.core.errors import InputError

LAYOUTS = ["YX", "CYX", "YXC", "ZYX", "TYX", "TZYX", "ZCYX", "TCYX", "TZCYX", "CZYX"]


def test_parse_accepts_aliases_and_refuses_nonsense():
    assert parse_axes("zyx") == "ZYX"
    assert parse_axes("YXS") == "YXC"  # tifffile's S (RGB samples) is our C
    for bad, why in [("QYX", "unknown"), ("ZZYX", "once"), ("XY", "last"), ("ZY", "last")]:
        with pytest.raises(InputError, match=why):
            parse_axes(bad)


def test_guesses_from_shape_and_file():
    assert infer_axes((5, 6)) == "YX"
    assert infer_axes((4, 5, 6)) == "ZYX"
    assert infer_axes((2, 4, 5, 6)) == "TZYX"
    assert infer_axes((50, 60, 3)) == "YXC"
    assert infer_axes((4, 5, 6, 3), rgb=True) == "ZYXC"
    assert infer_axes((4, 5, 6), found="QYX") == "ZYX"
    assert infer_axes((3, 4, 5, 6), found="TQYX") == "TZYX"
    assert infer_axes((3, 5, 6), found="CYX") == "CYX"
    with pytest.raises(InputError, match="up to 5"):
        infer_axes((1, 2, 3, 4, 5, 6))


@settings(max_examples=60, deadline=None)
@given(layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 1000))
def test_canonical_round_trip_keeps_every_value(layout, seed):
    rng = np.random.default_rng(seed)
    sizes = {a: int(rng.integers(1, 5)) for a in "TCZ"} | {"Y": 3, "X": 4}
    image = rng.random([sizes[a] for a in layout])
    canonical = to_canonical(image, layout)
    assert canonical.shape == tuple(sizes[a] if a in layout else 1 for a in "TCZYX")
    # every value lands where its axes say
    index = {a: int(rng.integers(0, sizes[a])) for a in layout}
    assert canonical[tuple(index.get(a, 0) for a in "TCZYX")] == image[
        tuple(index[a] for a in layout)]
    labels = rng.integers(0, 9, [sizes[a] for a in label_axes(layout)])
    back = labels_from_canonical(labels_to_canonical(labels, label_axes(layout)),
                                 label_axes(layout))
    np.testing.assert_array_equal(back, labels)


def test_pair_axes_uses_the_labels_to_tell_channels_from_slices():
    assert pair_axes((3, 5, 6), (3, 5, 6)) == "ZYX"
    assert pair_axes((2, 5, 6), (5, 6)) == "CYX"
    assert pair_axes((5, 6, 3), (5, 6)) == "YXC"
    assert pair_axes((4, 2, 5, 6), (4, 5, 6), "ZCYX") == "ZCYX"
    with pytest.raises(InputError, match="same pixels"):
        pair_axes((5, 6), (5, 7))
    with pytest.raises(InputError, match="same pixels"):
        pair_axes((4, 2, 5, 6), (4, 5, 6), "CZYX")


def test_sample_stack_views_are_planes_or_frames_without_copies():
    image = np.arange(2 * 3 * 4 * 5 * 6).reshape(2, 3, 4, 5, 6)  # T C Z Y X
    planes, volumes = SampleStack(image, "2d"), SampleStack(image, "3d")
    assert (planes.num_samples, planes.sample_shape) == (8, (5, 6))
    assert (volumes.num_samples, volumes.sample_shape) == (2, (4, 5, 6))
    np.testing.assert_array_equal(planes.sample(5), image[1, :, 1])
    assert np.shares_memory(planes.sample(5), image)
    labels = np.arange(2 * 4 * 5 * 6).reshape(2, 4, 5, 6)
    np.testing.assert_array_equal(planes.label_samples(labels)[5], labels[1, 1])
    region = (slice(1, 2), slice(2, 4), slice(0, 5), slice(0, 6))
    assert [i for i, _ in planes.samples_in(region)] == [6, 7]
    assert [i for i, _ in volumes.samples_in(region)] == [1]


def test_regions_map_between_label_axes_and_canonical():
    shape = (1, 7, 20, 30)  # a ZYX stack seen canonically
    canonical = region_to_canonical((slice(3, 4), slice(-5, 10), slice(25, 99)), "ZYX", shape)
    assert canonical == (slice(0, 1), slice(3, 4), slice(0, 10), slice(25, 30))
    assert region_from_canonical(canonical, "ZYX") == canonical[1:]
    # an empty or out-of-range request still covers at least one pixel
    assert region_to_canonical((slice(9, 9),), "ZYX", shape)[1] == slice(6, 7)


def test_default_mode_is_2d_over_slices():
    # measured better on CPU at 60 s and 300 s (docs/benchmarks.md); 3D is chosen explicitly
    for shape in [(1, 1, 64, 64), (1, 8, 64, 64), (1, 40, 64, 64), (3, 60, 256, 256)]:
        assert default_mode(shape) == "2d"
