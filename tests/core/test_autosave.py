"""Autosave folders, round trips, damaged files, and a writer killed mid-write."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import tifffile

from napari_unet.core.autosave import Autosaver, load_session, session_dir, user_data_dir
from napari_unet.core.live import Notice, live_training
from napari_unet.core.training import TrainingRun
from tests.core.test_training import FAST, TINY_MODEL


def test_session_folder_is_next_to_the_file_or_keyed_by_the_pixels(tmp_path):
    image = np.arange(100, dtype=np.uint16).reshape(10, 10)
    (tmp_path / "cells.tif").touch()
    assert session_dir(image, tmp_path / "cells.tif") == tmp_path / "cells.tif.napari-unet"
    keyed = session_dir(image)
    assert keyed.parent == user_data_dir() / "sessions"
    assert session_dir(image.copy()) == keyed  # the same pixels find the same folder
    assert session_dir(image + 1) != keyed
    assert str(user_data_dir()) == os.environ["NAPARI_UNET_DATA_DIR"]


def test_strokes_and_model_round_trip(blobs, tmp_path):
    image, strokes, _ = blobs
    saver = Autosaver(tmp_path / "s", "blobs", image.shape)
    assert load_session(tmp_path / "s").empty  # nothing yet, not even a folder
    saver.save_annotations(strokes, "YX")
    model = TrainingRun(image, strokes, replace(FAST, max_steps=2),
                        model_config=TINY_MODEL).run_to_end().model
    saver.save_model(model)
    saver.save_settings({"axes": "YX", "pause_after_steps": 700})
    session = load_session(tmp_path / "s", strokes.shape)
    np.testing.assert_array_equal(session.annotations, strokes)
    assert session.annotation_axes == "YX" and session.model.metadata["steps"] == 2
    assert session.saved_at > 0 and not session.notes
    assert session.settings == {"axes": "YX", "pause_after_steps": 700}
    saver.save_annotations(strokes, "YX")  # later saves keep the other entries
    assert load_session(tmp_path / "s").settings["pause_after_steps"] == 700
    # strokes of another image's shape are not offered; a damaged model is reported
    (tmp_path / "s" / "model.pt").write_bytes(b"half a file")
    other = load_session(tmp_path / "s", (3, 3))
    assert other.annotations is None and other.model is None
    assert any("shape" in n for n in other.notes) and any("model" in n for n in other.notes)
    # a length-1 axis more or less is the same pixels; the same pixel count transposed is not
    oblong = strokes[:, :40]
    Autosaver(tmp_path / "o", "oblong", oblong.shape).save_annotations(oblong, "YX")
    np.testing.assert_array_equal(
        load_session(tmp_path / "o", (1, *oblong.shape)).annotations[0], oblong)
    transposed = load_session(tmp_path / "o", oblong.shape[::-1])
    assert transposed.annotations is None
    assert any("saved strokes have shape" in n for n in transposed.notes)


def test_choosing_another_annotation_layer_keeps_the_first_ones_strokes(tmp_path):
    folder = tmp_path / "s"
    saver = Autosaver(folder, "img", (6, 8))
    strokes = np.zeros((6, 8), np.uint8)
    strokes[1, 1:4], strokes[4, 2:6] = 2, 1
    corrected = np.full((6, 8), 1, np.uint8)
    corrected[2:4, 2:5] = 2
    other = np.zeros((6, 8), np.uint8)
    other[5, 5] = 2

    saver.save_annotations(strokes, "YX", "strokes")
    saver.save_annotations(strokes + (strokes > 0), "YX", "strokes")  # same layer, later
    assert sorted(p.name for p in folder.glob("*.tif")) == ["annotations.tif"]
    saver.save_annotations(corrected, "YX", "prediction (img, edited)")
    session = load_session(folder, (6, 8))
    np.testing.assert_array_equal(session.annotations, corrected)
    assert session.annotation_layer == "prediction (img, edited)"
    assert list(session.earlier_annotations) == ["strokes"]
    np.testing.assert_array_equal(session.earlier_annotations["strokes"],
                                  strokes + (strokes > 0))  # its last save, not its first
    assert (folder / "annotations (strokes).tif").is_file()

    # a third layer, a name no file system takes as it is, then back to the first
    saver.save_annotations(other, "YX", "a/b: c?")
    assert set(load_session(folder).earlier_annotations) == {
        "strokes", "prediction (img, edited)"}
    saver.save_annotations(strokes, "YX", "a_b_ c_")  # the same file name, made safe
    saver.save_annotations(other, "YX", "a/b: c?")
    session = load_session(folder, (6, 8))
    np.testing.assert_array_equal(session.earlier_annotations["a_b_ c_"], strokes)
    saver.save_annotations(other, "YX", "third")  # "a/b: c?" kept beside it
    np.testing.assert_array_equal(load_session(folder).earlier_annotations["a/b: c?"], other)
    np.testing.assert_array_equal(load_session(folder).earlier_annotations["a_b_ c_"],
                                  strokes)
    saver.save_annotations(other, "YX", "a/b: c?")
    saver.save_annotations(strokes, "YX", "strokes")
    session = load_session(folder, (6, 8))
    assert session.annotation_layer == "strokes"
    np.testing.assert_array_equal(session.annotations, strokes)
    assert set(session.earlier_annotations) == {"prediction (img, edited)", "a/b: c?",
                                                "a_b_ c_", "third"}
    np.testing.assert_array_equal(session.earlier_annotations["a/b: c?"], other)
    assert not (folder / "annotations (strokes).tif").exists()  # superseded: no stale copy
    assert not session.notes


def test_a_layer_renamed_or_restored_is_the_same_layer(tmp_path):
    folder = tmp_path / "s"
    saver = Autosaver(folder, "img", (4, 4))
    ones, twos = np.ones((4, 4), np.uint8), np.full((4, 4), 2, np.uint8)
    saver.save_annotations(ones, "YX", "strokes")
    saver.save_annotations(twos, "YX", "prediction")
    # the prediction is set aside (renamed) while it is the chosen layer: still itself
    saver.save_annotations(twos, "YX", "prediction (img, edited)", aliases=("prediction",))
    session = load_session(folder)
    assert list(session.earlier_annotations) == ["strokes"]
    # after a restart, the restored strokes layer is chosen again and painted on
    saver.save_annotations(ones, "YX", "strokes (restored)", aliases=("strokes",))
    session = load_session(folder)
    assert session.annotation_layer == "strokes (restored)"
    assert list(session.earlier_annotations) == ["prediction (img, edited)"]
    assert sorted(p.name for p in folder.glob("*.tif")) == [
        "annotations (prediction (img, edited)).tif", "annotations.tif"]


def test_a_kept_layer_that_is_damaged_is_reported_and_the_rest_restored(tmp_path):
    folder = tmp_path / "s"
    saver = Autosaver(folder, "img", (6, 8))
    saver.save_annotations(np.full((6, 8), 2, np.uint8), "YX", "first")
    saver.save_annotations(np.full((6, 8), 1, np.uint8), "YX", "second")
    (folder / "annotations (first).tif").write_bytes(b"not a tiff")
    session = load_session(folder, (6, 8))
    assert session.earlier_annotations == {} and not session.empty
    assert any("'first'" in note and "unreadable" in note for note in session.notes)
    assert (session.annotations == 1).all()


def test_live_training_checkpoints_periodically_and_at_the_end(blobs):
    image, strokes, _ = blobs
    saved: list[int] = []
    run = TrainingRun(image, strokes, replace(FAST, max_steps=6), model_config=TINY_MODEL)
    list(live_training(run, refresh_s=3600,
                       checkpoint=lambda m: saved.append(m.metadata["steps"]),
                       checkpoint_every_s=0.0))
    assert saved == [1, 2, 3, 4, 5, 6, 6]  # after every step (interval 0), then at the end

    def broken(model):
        raise OSError("disk full")

    run = TrainingRun(image, strokes, replace(FAST, max_steps=3), model_config=TINY_MODEL)
    events = list(live_training(run, refresh_s=3600, checkpoint=broken,
                                checkpoint_every_s=0.0))
    notices = [e for e in events if isinstance(e, Notice)]
    assert notices and "disk full" in notices[0].message
    assert run.model.metadata["steps"] == 3  # training went on


WRITER = """
import sys
import numpy as np
from napari_unet.core.io import write_labels
path = sys.argv[1]
for k in range(2, 10_000):
    write_labels(path, np.full((64, 1024, 1024), k % 200 + 1, np.uint8), axes="ZYX",
                 overwrite=True)
"""


@pytest.mark.parametrize("attempt", range(3))
def test_a_writer_killed_mid_write_leaves_the_previous_good_file(tmp_path, attempt):
    """SIGKILL while a 64 MB mask is being written: the target is the last complete one."""
    from napari_unet.core.io import write_labels

    target = tmp_path / "mask.tif"
    write_labels(target, np.ones((64, 1024, 1024), np.uint8), axes="ZYX")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
    try:
        deadline = time.monotonic() + 60
        # wait until a write is in progress (its temporary file exists), then kill
        while not list(tmp_path.glob(".mask.tif.*.tmp")):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.005)
        time.sleep(0.01 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with tifffile.TiffFile(target) as tif:
        data = tif.asarray()
    assert data.shape == (64, 1024, 1024)
    assert data.min() == data.max()  # one complete version, not a mixture or a stub
