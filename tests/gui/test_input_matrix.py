"""Every kind of input from the reliability matrix, through the widget in a real viewer.

Refusals must be a notification that changes nothing (no model, no output layer, the widget
ready again); odd-but-valid inputs must train and predict.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt

from napari_unet import _widget
from napari_unet.core.checkpoint import save_model
from tests.bad_files import corrupt_checkpoint, crafted_checkpoint, newer_checkpoint
from tests.conftest import make_blobs, strokes_from_truth
from tests.gui.test_widget import TRAIN_TIMEOUT_MS, _wait_idle


def _use(viewer, widget, image: np.ndarray, strokes: np.ndarray, name: str, **kwargs) -> None:
    layer = viewer.add_image(image, name=name, **kwargs)
    widget.image_picker.value = [layer]
    widget.labels_picker.value = viewer.add_labels(strokes, name=f"{name} strokes")


def _train_briefly(qtbot, widget, steps: int = 2) -> None:
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state.step >= steps or widget.state.status == "idle",
                    timeout=TRAIN_TIMEOUT_MS)
    widget.stop()
    _wait_idle(qtbot, widget)


def _as(dtype, image: np.ndarray) -> np.ndarray:
    if dtype is bool:
        return image > image.mean()
    if np.dtype(dtype).kind == "f":
        return image.astype(dtype) / 255.0 - 0.2
    if dtype is np.int32:
        return image.astype(np.int32) * 1000 - 50_000
    return image.astype(dtype) * (257 if dtype is np.uint16 else 1)


def test_every_pixel_type_and_odd_images_train_and_predict(trainer, qtbot):
    viewer, widget, errors = trainer
    image, truth = make_blobs((48, 56))
    strokes = strokes_from_truth(truth, every=5)
    holes = image.astype(np.float32)
    holes[5:9, 5:30], holes[20, :] = np.nan, np.inf
    tiny, tiny_truth = make_blobs((12, 10))
    cases = {f"{np.dtype(d).name}": (_as(d, image), strokes)
             for d in (np.uint8, np.uint16, np.int32, np.float32, np.float64, bool)}
    cases |= {"nan_inf": (holes, strokes),
              "constant": (np.full(image.shape, 3, np.uint16), strokes),
              "tiny": (tiny, strokes_from_truth(tiny_truth, every=3))}
    for name, (img, lab) in cases.items():
        original = img.copy()
        _use(viewer, widget, img, lab, name)
        widget.reset()
        _train_briefly(qtbot, widget)
        assert not errors, (name, errors)
        assert widget.model is not None, name
        prediction = viewer.layers["prediction"].data
        assert prediction.shape == lab.shape and set(np.unique(prediction)) <= {1, 2}, name
        # the jobs read the layer's own array: nothing may write into it (NaNs included)
        assert viewer.layers[name].data is img, name
        np.testing.assert_array_equal(img, original, err_msg=name)


def test_five_dimensional_layer_trains_and_six_is_refused(trainer, qtbot, monkeypatch):
    viewer, widget, errors = trainer
    image, truth = make_blobs((32, 40))
    stack = np.stack([image, 255 - image])[None, None].repeat(2, 0).repeat(3, 1)  # TZCYX
    strokes = np.zeros((2, 3, 32, 40), np.uint8)
    strokes[1, 2] = strokes_from_truth(truth, every=4)
    _use(viewer, widget, stack, strokes, "5d", axis_labels=tuple("TZCYX"))
    assert widget.axes.value == "TZCYX"
    _train_briefly(qtbot, widget)
    assert not errors and widget.model.in_channels == 2
    assert viewer.layers["prediction"].data.shape == (2, 3, 32, 40)

    viewer.layers.remove("prediction")
    widget.reset()
    warnings: list[str] = []
    monkeypatch.setattr(_widget, "show_warning", warnings.append)
    _use(viewer, widget, np.zeros((2, 2, 2, 2, 16, 16), np.uint8),
         np.zeros((2, 2, 2, 16, 16), np.uint8), "6d")
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert any("6 dimensions" in w for w in warnings), warnings  # said when chosen
    assert "6 dimensions" in errors[-1]  # and refused at Train
    assert widget.model is None and "prediction" not in viewer.layers


def test_bad_model_files_are_refused_and_the_current_model_kept(trainer, qtbot, tmp_path):
    viewer, widget, errors = trainer
    image, truth = make_blobs((48, 56))
    _use(viewer, widget, image, strokes_from_truth(truth, every=5), "blobs")
    _train_briefly(qtbot, widget)
    model = widget.model
    marker = tmp_path / "pwned"
    (tmp_path / "notes.txt").write_text("not a model")
    files = {
        "refused": crafted_checkpoint(model, tmp_path / "evil.pt", marker),
        "upgrade": newer_checkpoint(model, tmp_path / "newer.pt"),
        "not a readable model file": corrupt_checkpoint(tmp_path / "corrupt.pt"),
        "not a readable model file ": tmp_path / "notes.txt",
        "not found": tmp_path / "missing.pt",
    }
    for expected, path in files.items():
        widget.load_model_from(path)
        assert expected.strip() in errors[-1], (expected, errors[-1])
        assert widget.model is model  # the model in use is untouched
    assert not marker.exists()

    # A model for another channel count refuses to predict; one for other classes refuses
    # to continue on strokes with a class it does not know.
    save_model(model, tmp_path / "good.pt")
    rgb = np.stack([image, image // 2, 255 - image], axis=-1)
    viewer.add_image(rgb, name="rgb")
    widget.image_picker.value = [viewer.layers["rgb"]]
    before = viewer.layers["prediction"].data.copy()
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert "channel" in errors[-1]
    np.testing.assert_array_equal(viewer.layers["prediction"].data, before)

    widget.image_picker.value = [viewer.layers["blobs"]]
    three = viewer.layers["blobs strokes"].data.copy()
    three[0, :5] = 3
    viewer.layers["blobs strokes"].data = three
    steps = model.metadata["steps"]
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert "label 3" in errors[-1]
    assert widget.model is model and widget.model.metadata["steps"] == steps
