"""The label convention's helpers."""

import numpy as np
import pytest

from napari_unet.core import labels
from napari_unet.core.labels import painted_class_ids


@pytest.mark.parametrize("chunk", [labels._CHUNK_PIXELS, 7])
@pytest.mark.parametrize("shape", [(5,), (9, 4), (6, 5, 7), (3, 1, 4, 5)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64])
def test_painted_class_ids_are_the_sorted_ids_other_than_unpainted(monkeypatch, chunk,
                                                                   shape, dtype):
    monkeypatch.setattr(labels, "_CHUNK_PIXELS", chunk)  # parts smaller than one row, too
    rng = np.random.default_rng(0)
    strokes = np.where(rng.random(shape) < 0.3, rng.integers(1, 6, shape), 0).astype(dtype)
    expected = np.unique(strokes)
    np.testing.assert_array_equal(painted_class_ids(strokes), expected[expected != 0])
    view = strokes.T  # not contiguous
    np.testing.assert_array_equal(painted_class_ids(view), expected[expected != 0])
    assert painted_class_ids(np.zeros(shape, dtype)).size == 0
