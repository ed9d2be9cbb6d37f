"""The trainer widget driven through a real napari viewer, real threads, under Xvfb."""

from __future__ import annotations

import gc
import time
import weakref

import numpy as np
import pytest
import tifffile
from napari.utils.notifications import notification_manager
from qtpy.QtCore import QElapsedTimer, Qt, QThreadPool, QTimer

from napari_unet import _autosave, _label_edits, _widget
from napari_unet.core.autosave import read_manifest
from napari_unet.core.inference import predict
from napari_unet.core.training import TrainingRun
from napari_unet.core.view_first import PassProgress

TRAIN_TIMEOUT_MS = 120_000


@pytest.fixture
def viewer_and_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei_with_strokes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    widget.refresh.value = 0.3
    yield viewer, widget
    widget.shutdown()


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.state.status == "idle", timeout=TRAIN_TIMEOUT_MS)


def _train_until(qtbot, widget, condition):
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    assert widget.state.status == "training"
    qtbot.waitUntil(condition, timeout=TRAIN_TIMEOUT_MS)
    qtbot.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)


class Heartbeat:
    """A 10 ms timer on the GUI thread; a long gap between ticks is a frozen window."""

    def __init__(self):
        self.clock = QElapsedTimer()
        self.gaps: list[int] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        self.gaps.append(self.clock.restart())

    def start(self):
        self.clock.start()
        self.timer.start()

    def stop(self) -> int:
        self.timer.stop()
        return max(self.gaps[1:], default=0)


def test_picks_layers_and_trains_with_a_live_overlay(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    assert widget.image_picker.value == [viewer.layers["nuclei"]]
    assert widget.labels_picker.value is viewer.layers["strokes"]
    assert not widget.predict_button.isEnabled()  # nothing to predict with yet

    snapshots: list[np.ndarray] = []
    widget.state.events.overlay_updates.connect(
        lambda: snapshots.append(np.array(viewer.layers["prediction"].data)))
    heartbeat = Heartbeat()
    heartbeat.start()
    pressed = time.perf_counter()
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(snapshots) >= 1, timeout=TRAIN_TIMEOUT_MS)
    first_overlay = time.perf_counter() - pressed
    startup_gap = heartbeat.stop()  # includes creating the overlay layer (once per session)
    steady = Heartbeat()
    steady.start()
    qtbot.waitUntil(lambda: len(snapshots) >= 6, timeout=TRAIN_TIMEOUT_MS)
    largest_gap = steady.stop()
    qtbot.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    print(f"\nfirst overlay {first_overlay:.2f} s after Train; largest event-loop gap: "
          f"{startup_gap} ms until the first overlay, {largest_gap} ms over "
          f"{len(steady.gaps)} ticks of training with refreshing overlay")

    prediction = viewer.layers["prediction"]
    changes = sum(not np.array_equal(a, b) for a, b in zip(snapshots, snapshots[1:]))
    assert changes >= 2  # the overlay really refreshed while training ran
    assert set(np.unique(prediction.data)) <= {1, 2}  # ids as painted
    # the overlay shows classes in the painting's colours; background is transparent
    strokes = viewer.layers["strokes"]
    np.testing.assert_allclose(prediction.colormap.map(np.array([2]))[0],
                               strokes.colormap.map(np.array([2]))[0])
    assert prediction.colormap.map(np.array([1]))[0][3] == 0
    assert widget.model is not None and widget.model.metadata["steps"] >= 1
    assert largest_gap < 500, f"GUI stalled for {largest_gap} ms"


def test_strokes_painted_during_training_reach_the_worker(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    strokes = viewer.layers["strokes"]
    viewer.layers.selection.active = strokes
    strokes.mode = "paint"
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state.step >= 2 and widget.state.overlay_updates >= 1,
                    timeout=TRAIN_TIMEOUT_MS)
    # the overlay layer appeared without taking the brush from the user
    assert "prediction" in viewer.layers
    assert list(viewer.layers.selection) == [strokes]
    assert viewer.layers.selection.active is strokes and strokes.mode == "paint"
    before = widget._run.model.metadata["painted_pixels"]["1"]
    strokes.brush_size = 5
    for x in range(100, 160, 2):  # a background stroke, through the layer's paint API
        strokes.paint((500, x), 1)
    qtbot.waitUntil(lambda: widget.state.labels_version >= 1, timeout=TRAIN_TIMEOUT_MS)
    after = widget._run.model.metadata["painted_pixels"]["1"]
    widget.stop()
    _wait_idle(qtbot, widget)
    assert after > before


@pytest.mark.parametrize("whole_up_to", [None, 0], ids=["whole strokes", "edited boxes"])
def test_undo_during_training_reaches_the_worker(viewer_and_widget, qtbot, monkeypatch,
                                                 whole_up_to):
    """Undo only refreshes the layer; the run must still stop learning the undone stroke."""
    if whole_up_to is not None:  # as for a stack too big to copy at every pause
        monkeypatch.setattr(_label_edits, "COPIED_WHOLE_BYTES", whole_up_to)
    viewer, widget = viewer_and_widget
    strokes = viewer.layers["strokes"]
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    strokes.brush_size = 5
    strokes.paint((300, 300), 2)  # painted before the run is even built: it still counts
    qtbot.waitUntil(lambda: widget.state.labels_version >= 1, timeout=TRAIN_TIMEOUT_MS)
    np.testing.assert_array_equal(widget._run.strokes, strokes.data)
    sent = []
    put = widget._inbox.put
    widget._inbox.put = lambda message: (sent.append(message), put(message))
    for x in range(100, 160, 2):
        strokes.paint((500, x), 1)
    qtbot.waitUntil(lambda: widget.state.labels_version >= 2, timeout=TRAIN_TIMEOUT_MS)
    painted = strokes.data.copy()
    strokes.undo()  # the last dab of the stroke
    assert (strokes.data != painted).any()
    qtbot.waitUntil(lambda: widget.state.labels_version >= 3, timeout=TRAIN_TIMEOUT_MS)
    np.testing.assert_array_equal(widget._run.strokes, strokes.data)
    assert len(sent) == 2
    assert all((message.labels is None) == (whole_up_to == 0) for message in sent)
    viewer.dims.set_point(0, 10)  # a redraw, not an edit: nothing is sent
    qtbot.wait(2 * _widget._LABELS_QUIET_MS)
    assert len(sent) == 2
    widget.stop()
    _wait_idle(qtbot, widget)


def test_painting_after_the_trainer_closed_mid_run_reaches_nothing_of_it(viewer_and_widget,
                                                                        qtbot):
    """The annotation layer outlives the dock: its edits must not call into a closed one."""
    viewer, widget = viewer_and_widget
    strokes = viewer.layers["strokes"]
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state.step >= 1, timeout=TRAIN_TIMEOUT_MS)
    watchers = len(strokes.events.paint.callbacks)
    widget.shutdown()
    assert len(strokes.events.paint.callbacks) < watchers
    strokes.paint((200, 200), 2)
    strokes.undo()
    qtbot.wait(2 * _widget._LABELS_QUIET_MS)


@pytest.mark.parametrize("copied_up_to", [None, 0], ids=["copied", "read in the writer"])
def test_undo_is_autosaved(viewer_and_widget, qtbot, monkeypatch, copied_up_to):
    if copied_up_to is not None:
        monkeypatch.setattr(_label_edits, "COPIED_WHOLE_BYTES", copied_up_to)
    viewer, widget = viewer_and_widget
    strokes = viewer.layers["strokes"]
    folder = widget._strokes_autosave.folder
    strokes.paint((40, 40), 1)
    qtbot.waitUntil(lambda: widget._strokes_autosave.saves >= 1, timeout=10_000)
    saved = tifffile.imread(folder / "annotations.tif")
    strokes.undo()
    qtbot.waitUntil(lambda: widget._strokes_autosave.saves >= 2, timeout=10_000)
    undone = tifffile.imread(folder / "annotations.tif")
    assert (undone != saved).any()
    np.testing.assert_array_equal(undone, strokes.data)


def test_training_pauses_on_old_strokes_and_painting_resumes_it(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    widget.settle_steps.value = 5
    shown_steps: list[int] = []
    apply = widget._apply_prediction
    widget._apply_prediction = lambda update: (shown_steps.append(update.step), apply(update))
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state.settled, timeout=TRAIN_TIMEOUT_MS)
    assert widget.state.step == 5 and widget.state.status == "training"
    assert "paused after 5 steps" in widget.status.text()
    assert widget.stop_button.isEnabled()
    assert "paused" in widget._worker.pbar.desc  # the activity dock says so too
    names: list[str] = []
    widget._worker.pbar.events.description.connect(lambda event: names.append(event.value))
    # The overlay catches up with the settled model once, with test-time augmentation
    # ("best quality" is on by default): what Stop would give. Then nothing is recomputed.
    qtbot.waitUntil(lambda: 5 in shown_steps, timeout=TRAIN_TIMEOUT_MS)
    best = predict(widget._run.model, viewer.layers["nuclei"].data,
                   test_time_augmentation=True).class_map
    plain = predict(widget._run.model, viewer.layers["nuclei"].data).class_map
    assert (best != plain).any()  # so the test can tell them apart
    qtbot.waitUntil(lambda: (viewer.layers["prediction"].data == best).all(),
                    timeout=TRAIN_TIMEOUT_MS)
    updates = len(shown_steps)
    qtbot.wait(1500)
    assert len(shown_steps) == updates and widget.state.step == 5

    strokes = viewer.layers["strokes"]
    strokes.brush_size = 5
    for x in range(100, 160, 2):
        strokes.paint((500, x), 1)
    qtbot.waitUntil(lambda: widget.state.labels_version >= 1 and widget.state.settled,
                    timeout=TRAIN_TIMEOUT_MS)
    assert widget.state.step == 10  # new strokes: another 5 steps, then paused again
    assert names[0] == "Training U-Net" and "paused" in names[-1]
    widget.settle_steps.value = 8  # a higher limit resumes at once, up to the new limit
    qtbot.waitUntil(lambda: widget.state.step == 13 and widget.state.settled,
                    timeout=TRAIN_TIMEOUT_MS)
    qtbot.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert widget.model.metadata["steps"] == 13
    assert widget.status.text() == "ready"


def test_stop_then_train_again_continues_and_reset_starts_over(viewer_and_widget, qtbot):
    _, widget = viewer_and_widget
    _train_until(qtbot, widget, lambda: widget.state.step >= 3)
    first = widget.model
    steps_first = first.metadata["steps"]
    assert steps_first >= 3
    weights_first = [p.detach().clone() for p in first.network.parameters()]

    started_from = []
    original_init = TrainingRun.__init__

    def spy(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        started_from.append([p.detach().clone() for p in self._network.parameters()])

    TrainingRun.__init__ = spy
    try:
        _train_until(qtbot, widget, lambda: widget.state.step >= 2)
    finally:
        TrainingRun.__init__ = original_init
    for a, b in zip(started_from[0], weights_first):
        assert (a == b).all()  # the second run started from the first run's weights
    assert widget.model.metadata["steps"] >= steps_first + 2

    qtbot.mouseClick(widget.reset_button, Qt.MouseButton.LeftButton)
    assert widget.model is None and not widget.predict_button.isEnabled()
    _train_until(qtbot, widget, lambda: widget.state.step >= 1)
    assert widget.model.metadata["steps"] < steps_first + 2


def test_a_corrected_prediction_trains_as_annotations(viewer_and_widget, qtbot, monkeypatch):
    viewer, widget = viewer_and_widget
    said: list[str] = []
    monkeypatch.setattr(_widget, "show_info", said.append)
    labels_trained_on = []
    original_init = TrainingRun.__init__

    def spy(self, image, labels, *args, **kwargs):
        labels_trained_on.append(np.array(labels))
        original_init(self, image, labels, *args, **kwargs)

    monkeypatch.setattr(TrainingRun, "__init__", spy)

    def correct(layer):  # the user fixes the overlay where it is wrong, 1 <-> 2
        for y, x in ((100, 100), (300, 300)):
            layer.paint((y, x), 3 - int(layer.data[y, x]))
        return np.array(layer.data)

    _train_until(qtbot, widget, lambda: widget.state.overlay_updates >= 1)
    first = viewer.layers["prediction"]
    corrected = correct(first)
    assert widget.labels_picker.value is viewer.layers["strokes"]  # nothing switched
    _train_until(qtbot, widget, lambda: viewer.layers["prediction"] is not first)
    assert first.name == "prediction (nuclei, edited)"  # kept, and a new overlay
    assert (first.data == corrected).all()
    assert (labels_trained_on[-1] == viewer.layers["strokes"].data).all()
    assert said[-1] == ("your corrections are kept in 'prediction (nuclei, edited)'; "
                        "choose it as annotations to train on them")

    # Corrected and chosen at once, before the next result sets it aside: trained on,
    # and still the layer trained on once renamed.
    second = viewer.layers["prediction"]
    corrected = correct(second)
    widget.labels_picker.value = second  # offered in the picker as soon as edited
    _train_until(qtbot, widget, lambda: viewer.layers["prediction"] is not second)
    assert (labels_trained_on[-1] == corrected).all()
    assert (second.data == corrected).all()  # training on it never writes into it
    assert widget.labels_picker.value is second
    assert said[-1] == (f"your corrected prediction, which you train on, is now "
                        f"'{second.name}'; new results go to 'prediction'")


def test_renamed_layers_stay_chosen_under_their_new_names(viewer_and_widget):
    viewer, widget = viewer_and_widget
    strokes, nuclei = viewer.layers["strokes"], viewer.layers["nuclei"]
    heard: list[str] = []
    widget.image_picker.changed.connect(lambda value: heard.append("image"))
    widget.labels_picker.changed.connect(lambda value: heard.append("labels"))
    strokes.name, nuclei.name = "my strokes", "my nuclei"
    assert widget.labels_picker.current_choice == "my strokes"  # listed as named now
    # another layer takes the old name: the chosen layer, not the name, stays chosen
    viewer.add_labels(np.zeros_like(strokes.data), name="strokes")
    assert widget.labels_picker.value is strokes
    assert widget.image_picker.value == [nuclei]
    assert heard == []  # nothing changed for the settings, autosave and axes to hear
    viewer.layers.remove(strokes)
    assert widget.labels_picker.value is viewer.layers["strokes"]
    assert heard == ["labels"]


def test_save_load_predict(viewer_and_widget, qtbot, tmp_path):
    viewer, widget = viewer_and_widget
    _train_until(qtbot, widget, lambda: widget.state.step >= 3)
    widget.save_model_to(tmp_path / "m.pt")
    widget.reset()
    viewer.layers.remove("prediction")
    widget.load_model_from(tmp_path / "m.pt")
    assert widget.model is not None and widget.predict_button.isEnabled()
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    prediction = viewer.layers["prediction"].data
    assert prediction.shape == viewer.layers["nuclei"].data.shape
    assert set(np.unique(prediction)) <= {1, 2} and prediction.min() >= 1


class _Cycle:
    """An object that only the cycle collector can free."""

    def __init__(self):
        self.me = self


def test_full_collections_skip_older_objects_only_while_a_job_runs(viewer_and_widget, qtbot):
    _, widget = viewer_and_widget
    assert gc.get_freeze_count() == 0
    garbage = _Cycle()
    made_before = weakref.ref(garbage)
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    assert gc.get_freeze_count() > 0  # what existed at Train is set aside
    del garbage
    gc.collect()
    assert made_before() is not None  # so a full collection does not walk it
    new_garbage = _Cycle()
    made_during = weakref.ref(new_garbage)
    del new_garbage
    gc.collect()
    assert made_during() is None  # the job's own cyclic garbage is collected as usual
    qtbot.waitUntil(lambda: widget.state.step >= 2, timeout=TRAIN_TIMEOUT_MS)
    qtbot.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: gc.get_freeze_count() == 0)  # the worker's own signal
    assert made_before() is None  # collected when the job ended: nothing leaks

    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)  # prediction too
    assert gc.get_freeze_count() > 0
    _wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: gc.get_freeze_count() == 0)


def test_export_reads_back_and_never_overwrites_without_consent(
    viewer_and_widget, qtbot, tmp_path, monkeypatch
):
    viewer, widget = viewer_and_widget
    _train_until(qtbot, widget, lambda: widget.state.step >= 2)
    prediction = viewer.layers["prediction"]
    path = tmp_path / "mask.tif"
    assert widget.export_masks_to(path)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        np.testing.assert_array_equal(tif.asarray(), prediction.data)
    before = path.read_bytes()
    monkeypatch.setattr(widget, "_confirm_overwrite", lambda p: False)
    prediction.data = np.ones_like(prediction.data)
    assert not widget.export_masks_to(path)
    assert path.read_bytes() == before
    monkeypatch.setattr(widget, "_confirm_overwrite", lambda p: True)
    assert widget.export_masks_to(path)
    assert tifffile.imread(path).max() == 1


def test_writer_through_napari_save(viewer_and_widget, tmp_path):
    viewer, _ = viewer_and_widget
    strokes = viewer.layers["strokes"]
    viewer.layers.selection = {strokes}
    written = viewer.layers.save(str(tmp_path / "strokes.tif"), selected=True,
                                 plugin="napari-unet")
    assert written == [str(tmp_path / "strokes.tif")]
    np.testing.assert_array_equal(tifffile.imread(written[0]), strokes.data)


def test_worker_error_is_notified_and_widget_recovers(viewer_and_widget, qtbot, monkeypatch):
    _, widget = viewer_and_widget
    calls = {"n": 0}
    original = TrainingRun._train_step

    def failing_step(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated failure inside a training step")
        return original(self, batch)

    errors = []
    monkeypatch.setattr(TrainingRun, "_train_step", failing_step)
    monkeypatch.setattr(notification_manager, "receive_error",
                        lambda *exc_info: errors.append(exc_info[1]))
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert any("simulated failure" in str(e) for e in errors)
    assert widget.model is None  # a run that broke mid-step is not adopted
    assert widget.train_button.isEnabled()


def test_bad_input_is_a_notification_not_a_crash(viewer_and_widget, qtbot, monkeypatch):
    viewer, widget = viewer_and_widget
    shown = []
    monkeypatch.setattr(_widget, "show_error", shown.append)
    viewer.layers["strokes"].data = np.zeros_like(viewer.layers["strokes"].data)
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)  # the strokes are checked in the worker, as the run is built
    assert "no painted pixels" in shown[-1]
    viewer.add_labels(np.zeros((5, 5), np.uint8), name="tiny")
    widget.labels_picker.value = viewer.layers["tiny"]
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert "must cover the same pixels" in shown[-1]
    assert widget.model is None and "prediction" not in viewer.layers


def test_new_annotation_layer(viewer_and_widget):
    viewer, widget = viewer_and_widget
    layer = widget.new_annotation_layer()
    assert layer.data.shape == viewer.layers["nuclei"].data.shape
    assert str(layer.mode) == "paint"
    assert widget.labels_picker.value is viewer.layers[layer.name]


def test_closing_the_viewer_during_training_ends_the_worker(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei_with_strokes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state.step >= 2, timeout=TRAIN_TIMEOUT_MS)
    worker = widget._worker
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=30_000)
    assert QThreadPool.globalInstance().waitForDone(10_000)


def test_screenshot_shows_the_overlay(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-unet", "nuclei_with_strokes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    # 50 steps: in a probe the overlay covered 14-16 % of the canvas from step 40 on
    _train_until(qtbot, widget, lambda: widget.state.step >= 50)
    viewer.layers["strokes"].visible = False
    viewer.layers["prediction"].opacity = 1.0
    shot = viewer.screenshot(canvas_only=True, flash=False)
    rgb = shot[..., :3].astype(int)
    assert rgb.std() > 10  # not blank
    colour = (np.asarray(viewer.layers["prediction"].colormap.map(np.array([2]))[0][:3]) * 255)
    close = (np.abs(rgb - colour).sum(axis=-1) < 40).mean()
    print(f"\nfraction of screenshot pixels in the overlay colour: {close:.3f}")
    assert close > 0.05


def test_demo_command_opens_napari_with_the_trainer():
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "napari_unet.cli", "demo", "--no-show"],
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr


def test_cancel_from_the_activity_dock_or_stop_twice_keeps_the_model(viewer_and_widget, qtbot):
    _, widget = viewer_and_widget
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state.step >= 3, timeout=TRAIN_TIMEOUT_MS)
    widget._worker.quit()  # what the activity dock's cancel button calls
    _wait_idle(qtbot, widget)
    assert widget.model is not None and widget.model.metadata["steps"] >= 3
    assert widget.train_button.isEnabled() and widget.predict_button.isEnabled()

    # Stop pressed twice: training stops, then so does the prediction after it
    steps = widget.model.metadata["steps"]
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state.step >= steps + 3, timeout=TRAIN_TIMEOUT_MS)
    qtbot.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
    assert widget.state.status == "stopping" and widget.stop_button.isEnabled()
    qtbot.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
    assert widget.status.text() == "stopping the prediction; the parts done are kept…"
    assert not widget.stop_button.isEnabled()
    _wait_idle(qtbot, widget)
    assert widget.model.metadata["steps"] >= steps + 3  # the model trained on is kept
    assert widget.status.text() == "ready" and widget.predict_button.isEnabled()


def test_confidence_layer(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    widget.show_confidence.value = True
    viewer.layers.selection.active = viewer.layers["strokes"]
    _train_until(qtbot, widget, lambda: widget.state.step >= 3)
    assert viewer.layers.selection.active is viewer.layers["strokes"]
    confidence = viewer.layers["confidence"].data
    assert confidence.shape == viewer.layers["nuclei"].data.shape
    assert confidence.min() >= 0.5 - 1e-6 and confidence.max() <= 1.0 + 1e-6  # 2 classes


def test_large_image_predicts_the_view_first_then_everything(make_napari_viewer, qtbot):
    """Zoomed in on a large image: the view first; paused, the redraw at best quality
    block by block; after Stop the blocks left, the status saying how far each pass is."""
    from tests.conftest import make_blobs, strokes_from_truth

    viewer = make_napari_viewer(show=True)  # corner_pixels follow the view once drawn
    image, truth = make_blobs((1100, 1100))
    viewer.add_image(image, name="big")
    viewer.add_labels(strokes_from_truth(truth, every=25), name="strokes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    widget.settle_steps.value = 3
    camera = _widget.viewer_camera(viewer)
    camera.center = (200, 200)
    camera.zoom = 8
    qtbot.wait(300)
    updates = []
    original = widget._apply_prediction
    widget._apply_prediction = lambda update: (updates.append(update), original(update))
    # What the user reads after each part of a pass at best quality.
    said = []
    report = widget._on_pass_progress
    widget._on_pass_progress = lambda event: (report(event), said.append(
        (event, widget.status.text(), widget.progress.value(), widget.progress.maximum())))
    _train_until(qtbot, widget, lambda: len(said) >= 2)
    first = updates[0]
    assert not first.complete and first.pass_progress is None  # the field of view first...
    assert first.class_map.size < image.size / 2
    # ...paused, the redraw of every block (400 px: 3 x 3), from the view's outwards...
    redraw = [u for u in updates if u.pass_progress and not u.pass_progress.final]
    assert [u.pass_progress for u in redraw] == [
        PassProgress(k, 9, final=False) for k in range(1, len(redraw) + 1)]
    assert redraw[0].region[0].start == 0 and redraw[0].region[1].start == 0
    _, text, value, maximum = said[1]
    assert text.startswith("paused after 3 steps: ") and (value, maximum) == (2, 9)
    assert " Redrawing the overlay at best quality: part 3 of 9 · about " in text
    assert text.endswith(" left.")
    # ...then, after Stop, the blocks left, also from the view outwards
    final = [u for u in updates if u.pass_progress and u.pass_progress.final]
    parts = 9 - len(redraw)
    assert [u.pass_progress.done for u in final] == list(range(1, parts + 1))
    covered = np.zeros(image.shape, bool)
    for update in redraw + final:
        assert update.step == 3
        covered[update.region] = True
    assert covered.all()
    assert final[-1].region[0].stop == 1100
    assert viewer.layers["prediction"].data.min() >= 1
    stopping = [(text, value, maximum) for event, text, value, maximum in said if event.final]
    assert stopping[-2][0].startswith(
        f"predicting the whole image with the final model: part {parts} of {parts} · about ")
    assert stopping[-2][0].endswith(" left…") and stopping[-2][1:] == (parts - 1, parts)
    assert stopping[-1] == ("finishing…", 0, parts)
    assert widget.status.text() == "ready" and widget.progress.value() == 0

    # Predict fills in from the view outwards too, saying how far it is (plain, so it is
    # quick: 9 blocks of one window each)
    widget.test_time_augmentation.value = False
    viewer.layers.remove("prediction")
    updates.clear()
    tiles = []
    on_tile = widget._on_tile
    widget._on_tile = lambda p: (on_tile(p), tiles.append((p, widget.status.text(),
                                                           len(updates))))
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert len(tiles) == 9
    for i, (p, text, shown) in enumerate(tiles[:-1]):
        assert text.startswith(f"predicting the whole image: {100 * p.tiles_done // 9} %")
        assert (" · about " in text) == (i > 0)  # a rate needs two reports
        assert shown == i  # each part is on screen before the next one is predicted
    assert tiles[-1][1] == "predicting…"
    assert [u.pass_progress for u in updates] == [
        PassProgress(k, 9, final=True) for k in range(1, 10)]
    assert updates[0].region[0].start == 0 and updates[0].region[1].start == 0  # the view
    assert (_assembled(updates, image.shape) == viewer.layers["prediction"].data).all()
    assert viewer.layers["prediction"].data.min() >= 1
    assert widget.status.text() == "ready" and widget.progress.value() == 0

    # Stopped, Predict keeps the parts it did; the rest reads as not predicted, not as
    # the last pass's answer (the layer is emptied when Predict starts)
    widget.test_time_augmentation.value = True  # 8 windows a block: time to cancel
    updates.clear()
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(updates) >= 1, timeout=TRAIN_TIMEOUT_MS)
    qtbot.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)  # enabled: Predict runs
    assert widget.status.text() == "stopping the prediction; the parts done are kept…"
    _wait_idle(qtbot, widget)
    assert 1 <= len(updates) < 9
    kept = viewer.layers["prediction"].data
    done = _assembled(updates, image.shape)
    assert (kept[done > 0] == done[done > 0]).all() and (kept[done == 0] == 0).all()
    assert widget.status.text() == "ready" and widget.predict_button.isEnabled()
    widget.shutdown()


def _assembled(updates, shape):
    overlay = np.zeros(shape, np.uint8)
    for update in updates:
        overlay[update.region] = update.class_map
    return overlay


@pytest.mark.parametrize(("seconds", "said"), [
    (0.2, "1 s"), (42.4, "42 s"), (59.4, "59 s"), (61, "1 min"), (14 * 60 + 20, "14 min"),
    (3600 + 20 * 60, "1 h 20 min")])
def test_time_left_is_said_the_way_a_person_would(seconds, said):
    assert _widget.describe_duration(seconds) == said


def test_strokes_and_model_are_autosaved_and_offered_back(make_napari_viewer, qtbot,
                                                          monkeypatch):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei_with_strokes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    widget.refresh.value = 0.3
    widget.test_time_augmentation.value = False
    widget.settle_steps.value = 700
    widget.edge_smoothing.value = "off"
    folder = widget._strokes_autosave.folder
    # Settings alone, with nothing painted since the widget opened, make no session folder.
    qtbot.wait(_autosave.STROKES_QUIET_MS + 500)
    assert not folder.exists()
    strokes = viewer.layers["strokes"]
    strokes.paint((40, 40), 1)  # a little more painting: saved after a pause
    qtbot.waitUntil(lambda: widget._strokes_autosave.saves >= 1, timeout=10_000)
    assert read_manifest(folder)["settings"]["pause_after_steps"] == 700  # kept with them
    saved = tifffile.imread(folder / "annotations.tif")
    np.testing.assert_array_equal(saved, strokes.data)
    _train_until(qtbot, widget, lambda: widget.state.step >= 3)
    steps = widget.model.metadata["steps"]
    # The user corrects the prediction and trains on that instead: the strokes' autosave
    # is kept beside it, not overwritten.
    prediction = viewer.layers["prediction"]
    prediction.paint((10, 10), 3 - int(prediction.data[10, 10]))  # 1 <-> 2: an edit
    widget.labels_picker.value = prediction
    prediction.paint((60, 60), 3 - int(prediction.data[60, 60]))
    qtbot.waitUntil(lambda: widget._strokes_autosave.saves >= 2, timeout=10_000)
    corrected = np.array(prediction.data)
    np.testing.assert_array_equal(tifffile.imread(folder / "annotations.tif"), corrected)
    widget.shutdown()
    viewer.close()

    # The same image opened again, in a new viewer: the work is offered back.
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei_with_strokes")
    viewer.layers.remove("strokes")
    offers = []

    def accept(self, session):
        offers.append(session)
        return True

    monkeypatch.setattr(_widget.UNetTrainerWidget, "_ask_restore", accept)
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    assert len(offers) == 1 and offers[0].folder == folder
    np.testing.assert_array_equal(viewer.layers["strokes (restored)"].data, saved)
    restored = viewer.layers["prediction (restored)"]  # the latest choice, chosen again
    np.testing.assert_array_equal(restored.data, corrected)
    assert widget.labels_picker.value is restored
    # the restored strokes are the image's own: another image trained on learns from them
    assert widget._painted.labels_for([viewer.layers["nuclei"]]) is restored
    saves = widget._strokes_autosave.saves
    restored.paint((80, 80), 3 - int(restored.data[80, 80]))  # its saves are its own
    qtbot.waitUntil(lambda: widget._strokes_autosave.saves > saves, timeout=10_000)
    assert sorted(p.name for p in folder.glob("*.tif")) == [
        "annotations (strokes).tif", "annotations.tif"]
    assert widget.model is not None and widget.model.metadata["steps"] == steps
    assert widget.predict_button.isEnabled()
    # and so are the settings it was trained with
    assert widget.settle_steps.value == 700 and widget.refresh.value == 0.3
    assert widget.test_time_augmentation.value is False
    assert widget.edge_smoothing.value == "off"
    # A setting changed after training, and never trained with, is kept as well.
    widget.settle_steps.value = 900
    qtbot.waitUntil(lambda: read_manifest(folder).get("settings", {}).get(
        "pause_after_steps") == 900, timeout=10_000)
    # a session folder from elsewhere: values that do not fit are skipped, not fatal
    skipped = widget._apply_settings({"mode": "4D", "refresh_s": "fast",
                                      "best_quality": 1, "pause_after_steps": 300})
    assert skipped == ["mode", "refresh_s", "best_quality"]
    assert widget.settle_steps.value == 300 and widget.mode.value == "auto"
    widget.shutdown()


def test_choosing_another_image_saves_pending_work_with_its_own_settings(
        make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei_with_strokes")
    viewer.add_image(np.zeros((4, 64, 64), np.float32), name="stack")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    widget.image_picker.value = [viewer.layers["nuclei"]]
    folder, axes = widget._strokes_autosave.folder, widget.axes.value
    viewer.layers["strokes"].paint((40, 40), 1)
    widget.settle_steps.value = 321
    # Within the quiet moment, another image: its axes replace these in the widget...
    widget.image_picker.value = [viewer.layers["stack"]]
    assert widget.axes.value != axes
    widget._strokes_autosave.wait()
    # ...but the work saved for the first image keeps the first image's settings.
    qtbot.waitUntil(lambda: read_manifest(folder).get("settings", {}).get(
        "pause_after_steps") == 321, timeout=10_000)
    assert read_manifest(folder)["settings"]["axes"] == axes
    np.testing.assert_array_equal(tifffile.imread(folder / "annotations.tif"),
                                  viewer.layers["strokes"].data)
    widget.shutdown()


def test_more_bad_input_is_refused_with_a_message(viewer_and_widget, qtbot, monkeypatch):
    from napari.layers import Image

    viewer, widget = viewer_and_widget
    shown = []
    monkeypatch.setattr(_widget, "show_error", shown.append)
    # a Labels layer is never offered as the image to segment
    assert viewer.layers["strokes"] not in widget.image_picker.choices
    assert all(isinstance(c, Image) for c in widget.image_picker.choices)
    # one class painted
    strokes = viewer.layers["strokes"]
    original = strokes.data.copy()
    strokes.data = np.where(original > 0, 1, 0).astype(original.dtype)
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert "only one class" in shown[-1]
    # one number per object (an instance mask), not classes
    strokes.data = (np.arange(original.size) // 50).reshape(original.shape).astype(np.int32)
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert "a mask with one number per object must first become classes" in shown[-1]
    # an image of NaNs only
    viewer.add_image(np.full(original.shape, np.nan, np.float32), name="empty")
    widget.image_picker.value = [viewer.layers["empty"]]
    strokes.data = original
    widget.labels_picker.value = strokes
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert "no finite" in shown[-1]
    assert widget.model is None and "prediction" not in viewer.layers


@pytest.mark.parametrize("removed", ["strokes", "nuclei"])
def test_deleting_a_layer_during_training_stops_and_keeps_the_model(
    viewer_and_widget, qtbot, monkeypatch, removed
):
    viewer, widget = viewer_and_widget
    warnings = []
    monkeypatch.setattr(_widget, "show_warning", warnings.append)
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state.step >= 2, timeout=TRAIN_TIMEOUT_MS)
    viewer.layers.remove(removed)
    _wait_idle(qtbot, widget)
    assert any(removed in w and "training stops" in w for w in warnings)
    assert widget.model is not None and widget.model.metadata["steps"] >= 2


def test_switching_layers_mid_run_leaves_the_run_alone(viewer_and_widget, qtbot):
    viewer, widget = viewer_and_widget
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.state.step >= 2, timeout=TRAIN_TIMEOUT_MS)
    other = viewer.add_image(np.zeros((64, 64), np.uint8), name="other")
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="other strokes")
    widget.image_picker.value = [other]
    widget.labels_picker.value = viewer.layers["other strokes"]
    steps = widget.state.step
    qtbot.waitUntil(lambda: widget.state.step >= steps + 3, timeout=TRAIN_TIMEOUT_MS)
    widget.stop()
    _wait_idle(qtbot, widget)
    # the run trained and predicted the image it started on
    assert viewer.layers["prediction"].data.shape == viewer.layers["nuclei"].data.shape
    assert widget.model.metadata["steps"] >= steps + 3


def test_closing_the_viewer_while_predicting_ends_the_worker(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei_with_strokes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net trainer")
    _train_until(qtbot, widget, lambda: widget.state.step >= 1)
    widget.test_time_augmentation.value = True  # a long prediction to interrupt
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    assert widget.state.status == "predicting"
    worker = widget._worker
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=30_000)
    assert QThreadPool.globalInstance().waitForDone(10_000)


def test_setting_up_a_run_happens_off_the_gui_thread(viewer_and_widget, qtbot, monkeypatch):
    """A slow setup (a huge image's normalisation, stroke indexing) never freezes the window;
    Stop during setup cancels it without a model, and strokes painted meanwhile are used."""
    viewer, widget = viewer_and_widget
    original = TrainingRun.__init__
    release = {"go": False}

    def slow_init(self, *args, **kwargs):
        deadline = time.monotonic() + 20
        while not release["go"] and time.monotonic() < deadline:
            time.sleep(0.01)
        original(self, *args, **kwargs)

    monkeypatch.setattr(TrainingRun, "__init__", slow_init)
    heartbeat = Heartbeat()
    heartbeat.start()
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    assert widget.state.status == "training" and "setting up" in widget.status.text()
    qtbot.wait(1500)
    assert heartbeat.stop() < 500  # the GUI kept ticking while the run was being built
    qtbot.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
    release["go"] = True
    _wait_idle(qtbot, widget)
    assert widget.model is None and "prediction" not in viewer.layers

    # Strokes painted while the run is set up reach it once it starts.
    release["go"] = False
    qtbot.mouseClick(widget.train_button, Qt.MouseButton.LeftButton)
    strokes = viewer.layers["strokes"]
    data = strokes.data.copy()
    data[:3, :3] = 2
    strokes.data = data
    qtbot.wait(_widget._LABELS_QUIET_MS + 300)  # the strokes have been sent by now
    release["go"] = True
    qtbot.waitUntil(lambda: widget.state.labels_version >= 1, timeout=TRAIN_TIMEOUT_MS)
    widget.stop()
    _wait_idle(qtbot, widget)
    assert widget.model is not None


def test_memory_is_handed_back_after_each_job_once_it_is_dropped(
    viewer_and_widget, qtbot, monkeypatch
):
    _, widget = viewer_and_widget
    trims = []
    # Record what the widget still holds when it asks for the trim: trimming while the run
    # or the worker is still referenced would give nothing back.
    monkeypatch.setattr(_widget, "release_freed_memory_soon",
                        lambda: trims.append((widget._run, widget._worker, widget._inbox)))
    _train_until(qtbot, widget, lambda: widget.state.step >= 2)
    assert trims == [(None, None, None)]
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, widget)
    assert trims == [(None, None, None)] * 2
