"""Train learns from the strokes on every image painted in the window, not only the one chosen."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_unet import _widget
from tests.conftest import make_blobs, strokes_from_truth
from tests.gui.test_widget import TRAIN_TIMEOUT_MS, _wait_idle


@pytest.fixture
def said(trainer, monkeypatch):
    """The trainer's viewer and widget, and the warnings and errors it shows, in order."""
    viewer, widget, errors = trainer
    monkeypatch.setattr(_widget, "show_warning", errors.append)
    return viewer, widget, errors


def _open_and_paint(viewer, widget, image: np.ndarray, strokes: np.ndarray, name: str):
    layer = viewer.add_image(image, name=name)
    widget.image_picker.value = [layer]
    labels = widget.new_annotation_layer()
    labels.data = strokes
    return layer, labels


def _train_a_little(qtbot, widget, statuses=None):
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state.step >= 3, timeout=TRAIN_TIMEOUT_MS)
    if statuses is not None:
        statuses.extend([widget.status.text(), widget.model_label.text()])
    qtbot.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    return widget.model.metadata


def test_training_on_a_second_image_keeps_learning_from_the_first(said, qtbot):
    viewer, widget, warnings = said
    a, truth_a = make_blobs((64, 64), seed=1)
    b, truth_b = make_blobs((64, 64), seed=2)
    strokes_a = strokes_from_truth(truth_a)
    # on the second image, a few corrective strokes of the background only
    strokes_b = np.where(strokes_from_truth(truth_b) == 1, 1, 0).astype(np.uint8)
    layer_a, labels_a = _open_and_paint(viewer, widget, a, strokes_a, "a")
    assert _train_a_little(qtbot, widget)["training_images"] == 1

    layer_b, labels_b = _open_and_paint(viewer, widget, 255 - b, strokes_b, "b")
    assert widget.labels_picker.value.name == labels_b.name
    widget.image_picker.value = [layer_a]  # back to the first image: its own strokes
    assert widget.labels_picker.value.name == labels_a.name
    widget.image_picker.value = [layer_b]
    assert widget.labels_picker.value.name == labels_b.name
    statuses: list[str] = []
    meta = _train_a_little(qtbot, widget, statuses)
    assert meta["training_images"] == 2 and "· 2 images" in statuses[0]
    assert statuses[1].endswith("; also learning from image 'a'")
    assert meta["painted_pixels"]["2"] == int((strokes_a == 2).sum())  # a's objects
    assert meta["painted_pixels"]["1"] == int((strokes_a == 1).sum() + strokes_b.sum())

    def refused_alone():
        qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
        _wait_idle(qtbot, widget)
        return warnings.pop().startswith("only one class is painted (label 1)")

    widget.learn_from_others.value = False  # b alone has only background strokes
    assert refused_alone()
    widget.learn_from_others.value = True
    assert _train_a_little(qtbot, widget)["training_images"] == 2
    viewer.layers.remove(labels_a.name)  # its strokes closed: the first image is left out
    assert refused_alone()
    assert not warnings

def test_an_image_that_cannot_train_with_this_one_is_left_out_with_a_notice(said, qtbot):
    viewer, widget, warnings = said
    a, truth_a = make_blobs((64, 64), seed=1)
    rgb = np.stack([a] * 3, axis=-1)
    _open_and_paint(viewer, widget, rgb, strokes_from_truth(truth_a), "rgb")
    assert widget.axes.value == "YXC"
    _open_and_paint(viewer, widget, a, strokes_from_truth(truth_a), "gray")
    meta = _train_a_little(qtbot, widget)
    assert meta["training_images"] == 1
    assert any("image 'rgb': it has 3 channel(s), the first image 1; trained without it"
               in w for w in warnings), warnings
