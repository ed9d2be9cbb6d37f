"""The widget on Z stacks, time-lapse, channel layers and RGB, driven through napari."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from qtpy.QtCore import Qt

from napari_unet import _widget
from napari_unet.core.metrics import foreground_iou
from tests.conftest import make_blobs, strokes_from_truth
from tests.gui.test_widget import TRAIN_TIMEOUT_MS, _wait_idle


def _blob_stack(n: int, shape=(48, 48)) -> tuple[np.ndarray, np.ndarray]:
    pairs = [make_blobs(shape, seed=s) for s in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


@pytest.fixture
def trainer(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    widget.refresh.value = 0.3
    widget.test_time_augmentation.value = False
    yield viewer, widget
    widget.shutdown()


def _paint(viewer, widget, strokes: np.ndarray, where: tuple) -> None:
    layer = widget.new_annotation_layer()
    data = layer.data.copy()
    data[where] = strokes
    layer.data = data


def test_z_stack_trains_from_one_slice_and_overlay_follows_the_slice(trainer, qtbot):
    viewer, widget = trainer
    image, truth = _blob_stack(5)
    viewer.add_image(image, name="stack")
    assert widget.axes.value == "ZYX"
    _paint(viewer, widget, strokes_from_truth(truth[1], every=5), (1,))
    viewer.dims.set_current_step(0, 3)  # looking at slice 3
    widget.mode.value = "2D over slices"
    widget.intensity_jitter.value = "on"  # stacks default to off: the choice must reach the run
    widget.edge_smoothing.value = "off"  # stacks in 2D mode default to on

    regions = []
    widget.state.events.overlay_updates.connect(
        lambda: regions.append(viewer.layers["prediction"].data.copy()))
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(regions) >= 1, timeout=TRAIN_TIMEOUT_MS)
    first = regions[0]
    assert first.shape == image.shape
    assert (first[3] > 0).all() and not first[0].any()  # the slice in view came first
    viewer.dims.set_current_step(0, 0)  # scroll to slice 0: it is predicted next
    qtbot.waitUntil(lambda: viewer.layers["prediction"].data[0].any(),
                    timeout=TRAIN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: widget.state.step >= 80, timeout=TRAIN_TIMEOUT_MS)
    widget.stop()
    _wait_idle(qtbot, widget)
    prediction = viewer.layers["prediction"].data
    assert (prediction > 0).all()  # every slice predicted after Stop
    assert widget.model.config.spatial_dims == 2
    assert widget.model.metadata["train_config"]["intensity_jitter"] == "on"
    assert widget.model.metadata["edge_weight"] == 0.0
    assert widget.model.metadata["region_weight"] == 0.0  # "off" switches both terms off
    unpainted = [0, 2, 3, 4]
    assert foreground_iou(prediction[unpainted], truth[unpainted]) > 0.3  # all-fg ~0.15


def test_predict_follows_the_slice_the_user_scrolls_to(trainer, qtbot):
    """Predict goes slice by slice from the one in view; scrolled elsewhere meanwhile, the
    slice scrolled to comes next, not last."""
    viewer, widget = trainer
    image, truth = _blob_stack(6, shape=(192, 192))
    viewer.add_image(image, name="stack")
    _paint(viewer, widget, strokes_from_truth(truth[0], every=5), (0,))
    widget.mode.value = "2D over slices"
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state.step >= 3, timeout=TRAIN_TIMEOUT_MS)
    widget.stop()
    _wait_idle(qtbot, widget)
    viewer.layers.remove("prediction")
    viewer.dims.set_current_step(0, 0)
    widget.test_time_augmentation.value = True  # 8 windows a slice: time to scroll
    order = []

    def shown(update):
        order.append(update.region[0].start)
        if len(order) == 1:
            viewer.dims.set_current_step(0, 5)  # the far end, predicted last so far

    apply = widget._apply_prediction
    widget._apply_prediction = lambda update: (shown(update), apply(update))
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert order[0] == 0 and sorted(order) == [0, 1, 2, 3, 4, 5]
    assert order.index(5) <= 3, order  # next, or after the one or two under way
    assert (viewer.layers["prediction"].data > 0).all()


def test_channel_layers_time_axis_instances_and_export(trainer, qtbot, tmp_path, monkeypatch):
    viewer, widget = trainer
    image, truth = _blob_stack(3)
    two_channels = np.stack([image, 255 - image], axis=1)  # T, C, Y, X
    layers = viewer.add_image(two_channels, channel_axis=1, name=["a", "b"])
    widget.image_picker.value = layers
    assert widget.axes.value == "ZYX"  # napari cannot know it is time
    widget.axes.value = "TYX"
    _paint(viewer, widget, strokes_from_truth(truth[0], every=5), (0,))
    assert viewer.layers["annotations"].data.shape == (3, 48, 48)
    widget.show_instances.value = True
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state.step >= 15, timeout=TRAIN_TIMEOUT_MS)
    widget.stop()
    _wait_idle(qtbot, widget)
    assert widget.model.in_channels == 2
    assert widget.model.metadata["axes"] == "CTYX"
    qtbot.waitUntil(lambda: widget.state.instance_updates >= 1, timeout=TRAIN_TIMEOUT_MS)
    instances = viewer.layers["instances"]
    assert instances.data.shape == (3, 48, 48) and instances.data.max() >= 1

    # Predict again through the button, then export the instances layer, selected.
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    viewer.layers.selection.active = viewer.layers["instances"]
    assert widget.export_masks_to(tmp_path / "objects.tif")
    with tifffile.TiffFile(tmp_path / "objects.tif") as tif:
        assert tif.series[0].axes == "TYX"
        np.testing.assert_array_equal(tif.asarray(), instances.data)

    # A model with two channels refuses one channel, with a message, changing nothing.
    shown = []
    monkeypatch.setattr(_widget, "show_error", shown.append)
    widget.image_picker.value = [viewer.layers["a"]]
    widget.axes.value = "TYX"
    before = viewer.layers["prediction"].data.copy()
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    assert "2-channel" in shown[-1] and widget.state.status == "idle"
    np.testing.assert_array_equal(viewer.layers["prediction"].data, before)


def test_rgb_image_and_bad_axes(trainer, qtbot, monkeypatch):
    viewer, widget = trainer
    grey, truth = make_blobs((64, 64))
    rgb = np.stack([grey, grey // 2, 255 - grey], axis=-1)
    viewer.add_image(rgb, name="rgb")
    assert widget.axes.value == "YXC"
    _paint(viewer, widget, strokes_from_truth(truth), (slice(None),))
    shown = []
    monkeypatch.setattr(_widget, "show_error", shown.append)
    widget.axes.value = "ZYX"  # wrong: 3 letters for an RGB layer with 3 dimensions + C
    widget.train()
    _wait_idle(qtbot, widget)  # some checks run as the worker builds the run
    assert "C" in shown[-1] or "do not fit" in shown[-1] or "same pixels" in shown[-1]
    widget.axes.value = "QYX"
    widget.train()
    assert "unknown letter" in shown[-1] and widget.state.status == "idle"
    widget.axes.value = "YXC"
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state.step >= 3, timeout=TRAIN_TIMEOUT_MS)
    widget.stop()
    _wait_idle(qtbot, widget)
    assert widget.model.in_channels == 3
    assert viewer.layers["prediction"].data.shape == (64, 64)


def test_3d_sample_trains_a_3d_model_from_three_slices(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei_3d_with_strokes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    try:
        assert widget.axes.value == "ZYX"  # from the layer's axis labels
        assert widget.labels_picker.value is viewer.layers["strokes 3D"]
        widget.test_time_augmentation.value = False
        widget.mode.value = "3D"
        qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: widget.state.overlay_updates >= 1, timeout=TRAIN_TIMEOUT_MS)
        assert widget._run.mode == "3d" and "3D" in widget.state.model_summary
        widget.stop()
        _wait_idle(qtbot, widget)
        assert widget.model.config.spatial_dims == 3
        assert viewer.layers["prediction"].data.shape == (32, 128, 128)
        assert (viewer.layers["prediction"].data > 0).all()
    finally:
        widget.shutdown()


# (axes typed in the widget, data axes of each layer, number of layers used as channels)
WIDGET_LAYOUTS = [
    ("YX", "YX", 1),
    ("ZYX", "ZYX", 1),
    ("TYX", "TYX", 1),
    ("TZYX", "TZYX", 1),
    ("CYX", "CYX", 1),  # one layer holding channels
    ("TCYX", "TCYX", 1),
    ("ZYX", "ZYX", 2),  # two layers as channels
]


@pytest.mark.parametrize(("axes", "data_axes", "layers"), WIDGET_LAYOUTS)
def test_each_layout_trains_and_predicts_in_the_widget(trainer, qtbot, axes, data_axes,
                                                       layers):
    viewer, widget = trainer
    sizes = {"T": 2, "Z": 3, "C": 2, "Y": 40, "X": 40}
    label_shape = tuple(sizes[a] for a in data_axes if a != "C")
    planes = int(np.prod(label_shape[:-2]))
    image, truth = _blob_stack(planes, (40, 40))
    image, truth = image.reshape(label_shape), truth.reshape(label_shape)
    if "C" in data_axes:
        image = np.stack([image, 255 - image], axis=data_axes.index("C"))
    added = [viewer.add_image(image if i == 0 else 255 - image, name=f"ch{i}")
             for i in range(layers)]
    widget.image_picker.value = added
    widget.axes.value = axes
    first = (0,) * (len(label_shape) - 2)
    _paint(viewer, widget, strokes_from_truth(truth[first], every=5), first)
    assert viewer.layers["annotations"].data.shape == label_shape
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    assert widget.state.status == "training"
    qtbot.waitUntil(lambda: widget.state.overlay_updates >= 1, timeout=TRAIN_TIMEOUT_MS)
    widget.stop()
    _wait_idle(qtbot, widget)
    channels = layers if layers > 1 else (2 if "C" in axes else 1)
    assert widget.model.in_channels == channels
    viewer.layers.remove("prediction")
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    prediction = viewer.layers["prediction"].data
    assert prediction.shape == label_shape and (prediction > 0).all()
