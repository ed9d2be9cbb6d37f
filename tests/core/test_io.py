import os
import stat
import sys

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_unet.core.errors import InputError
from napari_unet.core.io import (
    read_labels,
    read_tiff,
    smallest_label_dtype,
    write_labels,
    write_probabilities,
)


@pytest.mark.parametrize(
    ("max_label", "dtype"),
    [(1, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16), (70000, np.float32)],
)
def test_masks_use_the_smallest_imagej_dtype(tmp_path, max_label, dtype):
    labels = np.zeros((5, 7), dtype=np.int64)
    labels[2, 3] = max_label
    path = write_labels(tmp_path / "m.tif", labels)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.series[0].dtype == dtype
        assert tif.series[0].axes == "YX"
        np.testing.assert_array_equal(tif.asarray(), labels)


def test_3d_masks_are_imagej_z_stacks(tmp_path):
    labels = np.random.default_rng(0).integers(0, 4, (6, 10, 12))
    path = write_labels(tmp_path / "stack.tif", labels)
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["slices"] == 6  # Fiji reads Z, not time or channels
        assert tif.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tif.asarray(), labels)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), top=st.sampled_from([1, 200, 3000]),
       seed=st.integers(0, 1000))
def test_label_round_trip(tmp_path_factory, h, w, top, seed):
    labels = np.random.default_rng(seed).integers(0, top + 1, (h, w))
    path = write_labels(tmp_path_factory.mktemp("rt") / "m.tif", labels)
    back = read_labels(path)
    np.testing.assert_array_equal(back.reshape(h, w), labels)


def test_never_overwrites_silently(tmp_path):
    path = write_labels(tmp_path / "m.tif", np.ones((4, 4), dtype=np.uint8))
    with pytest.raises(InputError, match="already exists"):
        write_labels(path, np.zeros((4, 4), dtype=np.uint8))
    assert read_labels(path).max() == 1
    write_labels(path, np.zeros((4, 4), dtype=np.uint8), overwrite=True)
    assert read_labels(path).max() == 0


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_written_files_get_the_usual_permissions(tmp_path, umask_022):
    """A mask is readable by the user's group and others, as any file they write is.

    The temporary file it is written to first must not hand on owner-only permissions.
    """
    path = write_labels(tmp_path / "m.tif", np.ones((4, 4), dtype=np.uint8))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o660)  # a mask shared with the group, who may edit it
    write_labels(path, np.zeros((4, 4), dtype=np.uint8), overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert read_labels(path).max() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif"]  # no temporary left


def test_bad_labels_are_refused(tmp_path):
    with pytest.raises(InputError, match="integers"):
        write_labels(tmp_path / "f.tif", np.ones((3, 3), dtype=np.float32))
    with pytest.raises(InputError, match="negative"):
        write_labels(tmp_path / "n.tif", -np.ones((3, 3), dtype=np.int32))
    assert list(tmp_path.iterdir()) == []


def test_probabilities_are_an_imagej_channel_stack(tmp_path):
    probs = np.random.default_rng(0).random((3, 8, 9)).astype(np.float32)
    path = write_probabilities(tmp_path / "p.tif", probs)
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["channels"] == 3
        np.testing.assert_array_equal(tif.asarray(), probs)


def test_reads_axes_from_the_file_or_guesses_and_says_so(tmp_path):
    grey = np.arange(12, dtype=np.uint16).reshape(3, 4)
    tifffile.imwrite(tmp_path / "g.tif", grey)
    assert read_tiff(tmp_path / "g.tif").axes == "YX"
    rgb = np.zeros((5, 6, 3), dtype=np.uint8)
    rgb[..., 1] = 7
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    assert read_tiff(tmp_path / "rgb.tif").axes == "YXC"
    for axes in ("CYX", "ZYX", "TYX", "TZYX", "TZCYX"):
        shape = {"T": 2, "Z": 3, "C": 2, "Y": 5, "X": 6}
        data = np.zeros([shape[a] for a in axes], np.uint8)
        tifffile.imwrite(tmp_path / f"{axes}.tif", data, imagej=True, metadata={"axes": axes})
        found = read_tiff(tmp_path / f"{axes}.tif")
        assert (found.axes, found.axes_source) == (axes, "file")
    # a plain stack without metadata: tifffile says Q (unknown); we guess Z and say so
    tifffile.imwrite(tmp_path / "q.tif", np.zeros((4, 5, 6), np.uint8), photometric="minisblack")
    guessed = read_tiff(tmp_path / "q.tif")
    assert (guessed.axes, guessed.axes_source) == ("ZYX", "guessed")
    # axes given by the user win over the file
    given = read_tiff(tmp_path / "q.tif", axes="tyx")
    assert (given.axes, given.axes_source) == ("TYX", "given")


def test_anisotropy_from_imagej_metadata(tmp_path):
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((4, 5, 6), np.uint8), imagej=True,
                     resolution=(1 / 0.2, 1 / 0.2), metadata={"axes": "ZYX", "spacing": 1.0})
    assert read_tiff(tmp_path / "z.tif").anisotropy == pytest.approx(5.0)
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((4, 5, 6), np.uint8),
                     photometric="minisblack")
    assert read_tiff(tmp_path / "plain.tif").anisotropy is None


def test_labels_reconcile_length_one_axes(tmp_path):
    tifffile.imwrite(tmp_path / "l.tif", np.ones((5, 6), np.uint8))
    assert read_labels(tmp_path / "l.tif", (1, 5, 6)).shape == (1, 5, 6)
    with pytest.raises(InputError, match="need"):
        read_labels(tmp_path / "l.tif", (2, 5, 6))


def test_stack_outputs_are_imagej_hyperstacks(tmp_path):
    labels = np.random.default_rng(0).integers(0, 3, (2, 3, 5, 6)).astype(np.uint8)
    write_labels(tmp_path / "tz.tif", labels, axes="TZYX")
    with tifffile.TiffFile(tmp_path / "tz.tif") as tif:
        assert tif.series[0].axes == "TZYX"
        np.testing.assert_array_equal(tif.asarray(), labels)
    # a non-ImageJ order is written in ImageJ's order, which is what Fiji reads
    write_labels(tmp_path / "zt.tif", labels.transpose(1, 0, 2, 3), axes="ZTYX")
    with tifffile.TiffFile(tmp_path / "zt.tif") as tif:
        assert tif.series[0].axes == "TZYX"
        np.testing.assert_array_equal(tif.asarray(), labels)
    probs = np.random.default_rng(1).random((3, 4, 5, 6)).astype(np.float32)
    write_probabilities(tmp_path / "p.tif", probs, axes="ZYX")
    with tifffile.TiffFile(tmp_path / "p.tif") as tif:
        assert tif.series[0].axes == "ZCYX"
        np.testing.assert_array_equal(tif.asarray(), probs.transpose(1, 0, 2, 3))


def test_unsupported_layouts_and_files_are_explained(tmp_path):
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((4, 5, 6), np.uint8), imagej=True,
                     metadata={"axes": "ZYX"})
    (tmp_path / "x.tif").write_bytes(b"this is not a tiff")
    with pytest.raises(InputError, match="not a readable TIFF"):
        read_tiff(tmp_path / "x.tif")
    with pytest.raises(InputError, match="not found"):
        read_tiff(tmp_path / "missing.tif")
    with pytest.raises(InputError, match="name 2"):
        read_tiff(tmp_path / "z.tif", axes="YX")
    with pytest.raises(InputError, match="unknown letter"):
        read_tiff(tmp_path / "z.tif", axes="QYX")


def test_smallest_dtype_limit():
    with pytest.raises(InputError):
        smallest_label_dtype(2**24)
