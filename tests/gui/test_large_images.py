"""Pyramids, lazily read images and images too large for memory, through the widget.

What a user opening an OME-Zarr, a whole-slide scan or a dask stack meets: training and
prediction at full resolution, no read on the GUI thread, and a job that would not fit in
memory refused before anything is read.
"""

from __future__ import annotations

import threading

import numpy as np
from napari.layers import Image
from qtpy.QtCore import Qt

from napari_unet import _widget
from napari_unet._image_layers import ChannelStack, bytes_added, pixels_for_job
from napari_unet.core import memory_budget
from tests.conftest import make_blobs, strokes_from_truth
from tests.gui.test_input_matrix import _train_briefly
from tests.gui.test_widget import _wait_idle


class LazyArray:
    """An array read on demand, like zarr or dask: napari slices it, numpy reads it whole.

    Records, for every whole read, whether it happened on the GUI (main) thread.
    """

    def __init__(self, data: np.ndarray) -> None:
        self._data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.whole_reads_on_gui_thread: list[bool] = []

    def __getitem__(self, key):
        return self._data[key]

    def __len__(self) -> int:
        return len(self._data)

    def __array__(self, dtype=None, copy=None):
        self.whole_reads_on_gui_thread.append(
            threading.current_thread() is threading.main_thread())
        return self._data if dtype is None else self._data.astype(dtype)


def _use_lazy_image(viewer, widget, name: str) -> LazyArray:
    """Choose a lazily read image of blobs, and strokes on it; return the image."""
    image, truth = make_blobs((80, 96))
    lazy = LazyArray(image)
    layer = viewer.add_image(lazy, name=name, contrast_limits=(0, 255))
    widget.image_picker.value = [layer]
    widget.labels_picker.value = viewer.add_labels(strokes_from_truth(truth, every=5),
                                                   name="strokes")
    return lazy


def _train_then_predict(qtbot, widget, steps: int = 3) -> None:
    _train_briefly(qtbot, widget, steps)
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)


def test_pyramid_trains_and_predicts_at_full_resolution(trainer, qtbot):
    """A multiscale layer: numpy reads of it give its smallest level; we use level 0."""
    viewer, widget, errors = trainer
    image, truth = make_blobs((96, 128))
    pyramid = [image, image[::2, ::2], image[::4, ::4]]
    layer = viewer.add_image(pyramid, multiscale=True, name="pyramid")
    widget.image_picker.value = [layer]
    assert widget.axes.value == "YX"
    strokes = widget.new_annotation_layer()
    assert strokes.data.shape == image.shape
    strokes.data = strokes_from_truth(truth, every=5)
    widget.labels_picker.value = strokes
    _train_then_predict(qtbot, widget)
    assert not errors
    assert widget.model is not None
    prediction = viewer.layers["prediction"].data
    assert prediction.shape == image.shape and set(np.unique(prediction)) <= {1, 2}
    assert prediction.min() == 1  # all of the full resolution was predicted


def test_lazy_image_is_read_in_the_worker_not_on_the_gui_thread(trainer, qtbot):
    viewer, widget, errors = trainer
    lazy = _use_lazy_image(viewer, widget, "lazy")
    _train_then_predict(qtbot, widget)
    assert not errors
    assert viewer.layers["prediction"].data.min() == 1
    # read once to train, once to predict: both in a worker
    assert lazy.whole_reads_on_gui_thread == [False, False]


def test_lazy_channel_layers_are_stacked_in_the_worker(trainer, qtbot):
    viewer, widget, errors = trainer
    image, truth = make_blobs((64, 80))
    channels = [LazyArray(image), LazyArray((255 - image).astype(np.uint8))]
    layers = [viewer.add_image(c, name=f"c{i}", contrast_limits=(0, 255))
              for i, c in enumerate(channels)]
    widget.image_picker.value = layers
    widget.labels_picker.value = viewer.add_labels(strokes_from_truth(truth, every=5),
                                                   name="strokes")
    _train_then_predict(qtbot, widget)
    assert not errors
    assert widget.model.in_channels == 2
    assert viewer.layers["prediction"].data.shape == image.shape
    for channel in channels:
        assert channel.whole_reads_on_gui_thread == [False, False]


def test_pixels_for_job_are_neither_copied_nor_read_on_the_gui_thread():
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    in_memory = Image(image)
    assert pixels_for_job([in_memory]) is image  # a copy froze the window (2 GiB: 6 s)
    assert bytes_added([in_memory]) == 0
    stacked = pixels_for_job([in_memory, Image(image + 1)])
    assert isinstance(stacked, ChannelStack) and stacked.shape == (2, 3, 4)
    np.testing.assert_array_equal(np.asarray(stacked), np.stack([image, image + 1]))
    lazy = LazyArray(image.astype(np.float32))
    deferred = pixels_for_job([in_memory, Image(lazy)])
    assert isinstance(deferred, ChannelStack) and lazy.whole_reads_on_gui_thread == []
    assert deferred.shape == (2, 3, 4) and deferred.dtype == np.float32
    read = np.asarray(deferred)
    np.testing.assert_array_equal(read, np.stack([image, image]).astype(np.float32))
    pyramid = Image([image, image[::2, ::2]], multiscale=True)
    np.testing.assert_array_equal(pixels_for_job([pyramid]), image)  # level 0, not the last
    assert bytes_added([pyramid, in_memory]) == 2 * image.nbytes


def test_job_too_large_for_memory_is_refused_before_anything_is_read(trainer, qtbot,
                                                                     monkeypatch):
    viewer, widget, errors = trainer
    lazy = _use_lazy_image(viewer, widget, "slide")
    widget.show_instances.value = True
    monkeypatch.setattr(memory_budget, "available_memory", lambda: 100_000)
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    assert len(errors) == 1
    assert errors[0].startswith("training on 'slide' needs about ")
    assert "switch off the instances layer" in errors[0]
    assert widget.state.status == "idle" and widget.model is None
    assert "prediction" not in viewer.layers and lazy.whole_reads_on_gui_thread == []

    # with the memory there, it trains; refused again, Predict keeps model and layers
    monkeypatch.setattr(memory_budget, "available_memory", lambda: None)
    widget.show_instances.value = False
    _train_then_predict(qtbot, widget)
    model, before = widget.model, viewer.layers["prediction"].data.copy()
    monkeypatch.setattr(memory_budget, "available_memory", lambda: 10_000)
    errors.clear()
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    assert len(errors) == 1 and errors[0].startswith("predicting 'slide' needs about ")
    assert widget.model is model and widget.state.status == "idle"
    np.testing.assert_array_equal(viewer.layers["prediction"].data, before)


def test_view_of_a_zoomed_out_pyramid_is_found_at_full_resolution(make_napari_viewer, qtbot):
    """napari gives a pyramid's corner pixels in the level on screen: scaled back up."""
    viewer = make_napari_viewer(show=True)  # corner_pixels follow the view once drawn
    image, truth = make_blobs((2048, 2048))
    layer = viewer.add_image([image, image[::2, ::2], image[::4, ::4]], multiscale=True,
                             name="pyramid")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    try:
        widget._remember_target([layer])
        camera = _widget.viewer_camera(viewer)
        camera.center = (1500, 1600)
        camera.zoom = 0.3  # one screen pixel over ~3 image pixels: napari shows level 1
        qtbot.wait(300)
        qtbot.waitUntil(lambda: layer.data_level == 1, timeout=5000)
        rows, cols = widget._region_in_view()
        assert rows.start < 1500 < rows.stop and cols.start < 1600 < cols.stop
        assert rows.stop - rows.start > 400 and cols.stop - cols.start > 400
    finally:
        widget.shutdown()
