"""Output layers in a real viewer: one image's results never overwrite another's."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_unet._outputs import (
    OutputTarget,
    clear_outputs,
    is_corrected_prediction,
    is_output,
    show_instances,
    show_prediction,
)
from napari_unet.core.live import InstancesUpdate
from napari_unet.core.view_first import PredictionUpdate


def _whole(value: int, shape=(20, 30), confidence: float | None = None) -> PredictionUpdate:
    class_map = np.full(shape, value, np.uint8)
    return PredictionUpdate(
        region=(slice(0, shape[0]), slice(0, shape[1])), class_map=class_map,
        confidence=None if confidence is None else np.full(shape, confidence, np.float32),
        step=1, complete=True,
    )


@pytest.fixture
def viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((20, 30), np.uint8), name="a")
    viewer.add_image(np.ones((20, 30), np.uint8), name="b")
    return viewer


@contextlib.contextmanager
def _trainer(viewer):
    """The trainer docked in ``viewer`` (after the layers there now), shut down after."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    try:
        yield widget
    finally:
        widget.shutdown()


def _target(layer: Image) -> OutputTarget:
    return OutputTarget((layer,), layer.data.shape, "YX", {})


def test_another_images_results_are_set_aside_not_overwritten(viewer):
    a, b = _target(viewer.layers["a"]), _target(viewer.layers["b"])
    assert show_prediction(viewer, a, _whole(2, confidence=0.9), None, 2)
    assert show_prediction(viewer, b, _whole(1, confidence=0.6), None, 2)  # same shape

    assert (viewer.layers["prediction"].data == 1).all()  # b's, under the usual name
    assert (viewer.layers["prediction (a)"].data == 2).all()  # a's, kept whole
    assert (viewer.layers["confidence (a)"].data == 0.9).all()
    assert (viewer.layers["confidence"].data == 0.6).all()
    # a again: its old layers are not found by name any more; b's are set aside in turn
    assert show_prediction(viewer, a, _whole(2), None, 2)
    assert (viewer.layers["prediction (b)"].data == 1).all()
    assert [layer.name for layer in viewer.layers if isinstance(layer, Labels)] == [
        "prediction (a)", "prediction (b)", "prediction"]


def test_a_users_own_layer_of_that_name_is_kept(viewer):
    viewer.add_labels(np.full((20, 30), 7, np.uint8), name="prediction")  # e.g. from a file
    assert show_prediction(viewer, _target(viewer.layers["a"]), _whole(2), None, 2)
    assert (viewer.layers["prediction (earlier)"].data == 7).all()
    assert (viewer.layers["prediction"].data == 2).all()


def test_clearing_empties_only_this_images_layers(viewer):
    a, b = _target(viewer.layers["a"]), _target(viewer.layers["b"])
    show_prediction(viewer, a, _whole(2), None, 2)
    show_prediction(viewer, b, _whole(1), None, 2)
    clear_outputs(viewer, a, ["prediction"])  # a's layer is "prediction (a)" now: untouched
    assert (viewer.layers["prediction (a)"].data == 2).all()
    clear_outputs(viewer, b, ["prediction", "confidence", "instances"])  # absent: skipped
    assert (viewer.layers["prediction"].data == 0).all()


def test_pickers_leave_out_results_under_any_name(viewer, make_napari_viewer):
    a, b = _target(viewer.layers["a"]), _target(viewer.layers["b"])
    show_prediction(viewer, a, _whole(2, confidence=0.5), None, 2)
    show_prediction(viewer, b, _whole(1, confidence=0.5), None, 2)
    outputs = [layer.name for layer in viewer.layers if is_output(layer)]
    assert outputs == ["prediction (a)", "confidence (a)", "prediction", "confidence"]
    with _trainer(viewer) as widget:
        assert [name for name, _ in widget._image_choices()] == ["a", "b"]
        assert widget._labels_choices() == []


def test_results_the_user_corrected_are_kept_not_overwritten(viewer):
    a = _target(viewer.layers["a"])
    show_prediction(viewer, a, _whole(2), None, 2)
    prediction = viewer.layers["prediction"]
    prediction.paint((5, 5), 1)  # a correction with the brush, as the user makes one
    corrected = prediction.data.copy()
    assert corrected[5, 5] == 1 and (corrected == 2).sum() > 0
    clear_outputs(viewer, a, ["prediction"])  # Predict starting does not empty it...
    assert (prediction.data == corrected).all()
    show_prediction(viewer, a, _whole(2), None, 2)  # ...nor does the next result write it
    assert viewer.layers["prediction (a, edited)"] is prediction
    assert (prediction.data == corrected).all()
    assert (viewer.layers["prediction"].data == 2).all()
    # results written by the trainer itself are no edit
    show_prediction(viewer, a, _whole(1), None, 2)
    assert [layer.name for layer in viewer.layers if isinstance(layer, Labels)] == [
        "prediction (a, edited)", "prediction"]


def test_a_corrected_prediction_is_offered_as_annotations(viewer):
    a = _target(viewer.layers["a"])
    show_prediction(viewer, a, _whole(2), None, 2)
    show_instances(viewer, a, InstancesUpdate(np.arange(600, dtype=np.int32).reshape(20, 30),
                                              step=1))
    prediction, instances = viewer.layers["prediction"], viewer.layers["instances"]
    with _trainer(viewer) as widget:
        assert widget._labels_choices() == []
        instances.paint((3, 3), 0)  # object numbers are no classes: never offered
        assert not is_corrected_prediction(instances)
        assert widget._labels_choices() == []

        prediction.paint((5, 5), 1)  # the user corrects the overlay with the brush...
        assert is_corrected_prediction(prediction)
        assert list(widget.labels_picker.choices) == [prediction]  # ...listed at once

        show_prediction(viewer, a, _whole(2), None, 2)  # the next result goes elsewhere
        assert prediction.name == "prediction (a, edited)"
        assert widget._labels_choices() == [("prediction (a, edited)", prediction)]
        widget.labels_picker.value = prediction
        assert widget._chosen_layers() == ([viewer.layers["a"]], prediction)


def test_an_edit_undone_is_no_edit(viewer):
    a = _target(viewer.layers["a"])
    show_prediction(viewer, a, _whole(2), None, 2)
    prediction = viewer.layers["prediction"]
    prediction.paint((5, 5), 1)
    prediction.paint((9, 9), 1)
    prediction.undo()
    assert is_corrected_prediction(prediction)  # one edit still stands
    prediction.undo()
    assert not is_corrected_prediction(prediction)
    show_prediction(viewer, a, _whole(1), None, 2)  # written in place, nothing set aside
    assert viewer.layers["prediction"] is prediction and (prediction.data == 1).all()
    assert [layer.name for layer in viewer.layers if isinstance(layer, Labels)] == [
        "prediction"]
    prediction.redo()  # the edit is back: kept as the user's again
    assert is_corrected_prediction(prediction)


def test_new_output_layers_leave_the_users_layer_selected_everywhere(viewer):
    """The model, the layer list and the layer controls all stay on the user's layer."""
    strokes = viewer.add_labels(np.zeros((20, 30), np.uint8), name="strokes")
    viewer.layers.selection.active = strokes
    heard: list[str] = []
    viewer.layers.selection.events.connect(lambda event: heard.append(event.type))

    assert show_prediction(viewer, _target(viewer.layers["a"]), _whole(2, confidence=0.9),
                           strokes, 2)

    assert "prediction" in viewer.layers and "confidence" in viewer.layers
    assert heard == []  # the selection was put back before anyone heard of a change
    assert list(viewer.layers.selection) == [strokes]
    assert viewer.layers.selection.active is strokes
    qt_viewer = viewer.window._qt_viewer
    rows = qt_viewer.layers.selectionModel().selectedIndexes()
    assert [index.data() for index in rows] == ["strokes"]
    assert qt_viewer.controls.currentWidget().layer is strokes
    # the new layers are whole napari layers: picking one shows its own controls
    viewer.layers.selection.active = viewer.layers["prediction"]
    assert qt_viewer.controls.currentWidget().layer is viewer.layers["prediction"]
