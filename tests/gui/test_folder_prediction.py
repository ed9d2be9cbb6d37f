"""Predict folder…: the trainer segments a folder of images in the background."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tifffile
import torch
from qtpy.QtCore import Qt

from napari_unet import _widget
from napari_unet.core import predict_files as core_predict_files
from napari_unet.core.checkpoint import save_model
from napari_unet.core.config import ModelConfig
from napari_unet.core.inference import predict
from napari_unet.core.io import read_tiff
from napari_unet.core.model import TrainedModel
from napari_unet.core.normalization import Normalization
from napari_unet.core.unet import build_unet
from tests.conftest import make_blobs

TIMEOUT_MS = 120_000
ASK_EXISTING = _widget.UNetTrainerWidget._ask_existing  # before the guard replaces it


def _model(z_context: int = 0) -> TrainedModel:
    torch.manual_seed(0)
    net = build_unet(ModelConfig(in_channels=1, num_classes=2, depth=2, base_channels=8,
                                 z_context=z_context)).eval()
    return TrainedModel(net, Normalization((40.0,), (60.0,)), ("background", "nucleus"))


@pytest.fixture
def said(monkeypatch):
    """The notifications the trainer shows, by kind."""
    shown: dict[str, list[str]] = {"info": [], "warning": [], "error": []}
    for kind in shown:
        monkeypatch.setattr(_widget, f"show_{kind}", shown[kind].append)
    return shown


@pytest.fixture
def folder(tmp_path):
    """Two 2D images, a plain 3D TIFF that records no axes, and a file that is no TIFF."""
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "a.tif", make_blobs((48, 56), seed=1)[0])
    tifffile.imwrite(images / "b.tif", make_blobs((40, 64), seed=2)[0])
    tifffile.imwrite(images / "c.tif", np.stack([make_blobs((40, 48), seed=s)[0]
                                                 for s in range(3)]),
                     photometric="minisblack")  # three planes, not RGB
    (images / "broken.tif").write_bytes(b"not a tiff")
    return images


def _loaded(widget, tmp_path, model: TrainedModel) -> TrainedModel:
    save_model(model, tmp_path / "m.pt")
    widget.load_model_from(tmp_path / "m.pt")
    return widget.model


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.state.status == "idle", timeout=TIMEOUT_MS)


def test_a_folder_is_segmented_in_the_background_as_the_command_line_would(
        trainer, qtbot, tmp_path, folder, said, monkeypatch):
    viewer, widget, _ = trainer
    viewer.add_image(np.zeros((3, 40, 48), np.uint8), name="movie")
    widget.axes.value = "TYX"  # the trainer's image is a time-lapse: so is c.tif
    widget.show_instances.value = True
    model = _loaded(widget, tmp_path, _model(z_context=1))
    assert widget.folder_button.isEnabled()
    out = tmp_path / "masks"  # made by the job
    answers = iter([str(folder), str(out)])
    monkeypatch.setattr(widget, "_ask_folder", lambda title, start="": next(answers))
    statuses = []
    widget.state.events.folder_number.connect(lambda n: statuses.append(widget.status.text()))

    qtbot.mouseClick(widget.folder_button, Qt.MouseButton.LeftButton)
    assert widget.state.status == "predicting" and not widget.train_button.isEnabled()
    _wait_idle(qtbot, widget)

    assert any("segmenting a folder: image 2 of 4 (b.tif)" in s for s in statuses)
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "c.tif", "instances"]
    assert sorted(p.name for p in (out / "instances").iterdir()) == ["a.tif", "b.tif", "c.tif"]
    for name, axes in (("a.tif", "YX"), ("b.tif", "YX"), ("c.tif", "TYX")):
        image = tifffile.imread(folder / name)
        written = read_tiff(out / name)
        assert written.axes == axes
        np.testing.assert_array_equal(written.data,
                                      predict(model, image, axes=axes).class_map)
    assert [w for w in said["warning"] if "broken.tif is not a readable TIFF" in w]
    assert said["warning"][-1] == (f"segmented 3 of 4 images into {out}; 1 could not be "
                                   "read or predicted: broken.tif")
    assert widget.state.pass_kind == "" and widget.status.text() == "ready"
    assert widget.train_button.isEnabled() and widget.model is model


def test_results_that_exist_are_replaced_or_skipped_as_the_user_says(
        trainer, qtbot, tmp_path, folder, said, monkeypatch):
    _, widget, _ = trainer
    _loaded(widget, tmp_path, _model())
    (folder / "broken.tif").unlink()
    (folder / "c.tif").unlink()
    out = tmp_path / "masks"
    assert widget.predict_folder(folder, out)
    _wait_idle(qtbot, widget)
    assert said["info"][-1] == f"segmented 2 of 2 images into {out}"
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    tifffile.imwrite(folder / "d.tif", make_blobs((40, 40), seed=4)[0])
    asked = []

    def answer(choice):
        def ask(plan):
            asked.append([p.name for p in plan.existing])
            return choice
        monkeypatch.setattr(widget, "_ask_existing", ask)

    answer("cancel")
    assert not widget.predict_folder(folder, out) and widget.state.status == "idle"
    assert asked == [["a.tif", "b.tif"]] and not (out / "d.tif").exists()
    answer("skip")
    assert widget.predict_folder(folder, out)
    _wait_idle(qtbot, widget)
    assert said["info"][-1] == f"segmented 1 of 1 images into {out}"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "d.tif"} == \
        written
    answer("skip")  # nothing left to do
    assert not widget.predict_folder(folder, out)
    assert "has its results" in said["info"][-1]
    answer("replace")
    assert widget.predict_folder(folder, out)
    _wait_idle(qtbot, widget)
    assert said["info"][-1] == f"segmented 3 of 3 images into {out}"
    assert all(p.stat().st_mtime_ns != written[p.name] for p in out.iterdir()
               if p.name in written)


def test_a_folder_job_that_cannot_start_says_why_and_writes_nothing(
        trainer, tmp_path, folder, said):
    _, widget, _ = trainer
    assert not widget.predict_folder(folder, tmp_path / "masks")
    assert said["error"] == ["no model yet: train one or load one"]
    _loaded(widget, tmp_path, _model())
    assert not widget.predict_folder(folder, folder)
    assert "another folder for the masks" in said["error"][-1]
    assert not widget.predict_folder(tmp_path / "nowhere", tmp_path / "masks")
    assert "is not a folder" in said["error"][-1]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not widget.predict_folder(empty, tmp_path / "masks")
    assert "no TIFF" in said["error"][-1]
    assert not (tmp_path / "masks").exists() and widget.state.status == "idle"
    assert sorted(p.name for p in folder.iterdir()) == ["a.tif", "b.tif", "broken.tif",
                                                        "c.tif"]


def test_stop_ends_a_folder_job_keeping_the_images_done(
        trainer, qtbot, tmp_path, folder, said, monkeypatch):
    _, widget, _ = trainer
    _loaded(widget, tmp_path, _model())
    real = core_predict_files.iter_predict

    def slow(*args, **kwargs):  # a folder of large images, in effect
        gen = real(*args, **kwargs)
        while True:
            try:
                progress = next(gen)
            except StopIteration as finished:
                return finished.value
            time.sleep(0.3)
            yield progress

    monkeypatch.setattr(core_predict_files, "iter_predict", slow)
    out = tmp_path / "masks"
    assert widget.predict_folder(folder, out)
    qtbot.waitUntil(lambda: widget.state.folder_number == 2, timeout=TIMEOUT_MS)
    assert widget.progress.maximum() == 400 and 100 <= widget.progress.value() < 200
    qtbot.mouseClick(widget.stop_button, Qt.MouseButton.LeftButton)
    assert widget.state.status == "cancelling"
    assert "stopping; the images done are kept" in widget.status.text()
    _wait_idle(qtbot, widget)
    assert sorted(p.name for p in out.iterdir()) == ["a.tif"]  # whole files only
    assert said["warning"][-1].startswith(f"segmented 1 of 4 images into {out}; stopped")


def test_a_failure_ending_a_folder_job_is_notified_with_what_was_done(
        trainer, qtbot, tmp_path, folder, said, monkeypatch):
    from napari.utils.notifications import notification_manager

    _, widget, _ = trainer
    _loaded(widget, tmp_path, _model())
    real, calls = core_predict_files.iter_predict, []

    def failing_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(core_predict_files, "iter_predict", failing_on_the_second)
    errors = []
    monkeypatch.setattr(notification_manager, "receive_error",
                        lambda kind, error, tb: errors.append(str(error)))
    out = tmp_path / "masks"
    assert widget.predict_folder(folder, out)
    _wait_idle(qtbot, widget)
    assert len(errors) == 1 and "illegal memory access" in errors[0]
    assert said["warning"][-1].startswith(f"segmented 1 of 4 images into {out}; stopped")
    assert sorted(p.name for p in out.iterdir()) == ["a.tif"]
    assert widget.train_button.isEnabled() and widget.folder_button.isEnabled()


@pytest.mark.parametrize(("button", "answer"), [("Replace them", "replace"),
                                                ("Skip those images", "skip"),
                                                ("Cancel", "cancel")])
def test_the_question_about_existing_results_gives_the_answer_clicked(
        trainer, qtbot, tmp_path, folder, button, answer):
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_unet._folder_prediction import plan_folder

    _, widget, _ = trainer
    out = tmp_path / "masks"
    out.mkdir()
    (out / "a.tif").write_bytes(b"")
    plan = plan_folder(folder, out, instances=False)
    texts = []

    def click():
        box = QApplication.activeModalWidget()
        texts.append(box.text())
        next(b for b in box.buttons() if b.text().replace("&", "") == button).click()

    QTimer.singleShot(300, click)
    assert ASK_EXISTING(widget, plan) == answer
    assert texts == [f"1 of the 4 images in images have results in {out} already."]


def test_a_folder_of_images_that_all_fail_does_not_flood_the_window(
        trainer, qtbot, tmp_path, said):
    _, widget, _ = trainer
    _loaded(widget, tmp_path, _model())
    images = tmp_path / "stacks"
    images.mkdir()
    for n in range(8):  # RGB: the model reads one channel
        tifffile.imwrite(images / f"{n}.tif", np.zeros((32, 32, 3), np.uint8))
    assert widget.predict_folder(images, tmp_path / "masks")
    _wait_idle(qtbot, widget)
    told, summary = said["warning"][:-1], said["warning"][-1]
    assert len(told) == 4 and all("channel" in w for w in told[:3])
    assert "named in the summary" in told[3]
    assert summary == (f"segmented 0 of 8 images into {tmp_path / 'masks'}; 8 could not be "
                       "read or predicted: 0.tif, 1.tif, 2.tif, 3.tif, 4.tif and 3 more")
