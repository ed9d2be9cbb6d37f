"""What the user is told while a folder is segmented (``_folder_prediction.FolderProgress``).

No Qt: the widget only shows what this returns (tests/gui/test_folder_prediction.py
drives the whole button).
"""

from __future__ import annotations

from pathlib import Path

from napari_unet._folder_prediction import FAILURES_TOLD, PARTS_PER_FILE, FolderProgress
from napari_unet.core.batch import BatchItem
from napari_unet.core.inference import TileProgress
from napari_unet.core.predict_files import FileDone, FileFailed, FileStarted


def _item(name: str) -> BatchItem:
    return BatchItem(Path("/data") / name, Path("/masks") / name)


def _started(number: int, total: int, name: str, tiles: int) -> FileStarted:
    return FileStarted(number, total, _item(name), "YX", "file", "axes YX", tiles)


def test_the_bar_moves_within_an_image_and_by_whole_images() -> None:
    run = FolderProgress(Path("/masks"), total=2)
    assert run.parts_total == 2 * PARTS_PER_FILE
    assert run.record(_started(1, 2, "a.tif", tiles=4)) == []
    assert (run.image, run.number, run.parts_done) == ("a.tif", 1, 0)
    run.record(TileProgress(2, 4))
    assert run.parts_done == PARTS_PER_FILE // 2
    assert run.record(TileProgress(3, 4, notice="the GPU ran out of memory")) == [
        "the GPU ran out of memory"]
    run.record(FileDone(1, 2, _item("a.tif"), (8, 8), "YX", {}, None))
    assert run.parts_done == PARTS_PER_FILE
    run.record(_started(2, 2, "b.tif", tiles=0))  # a file with no tiles does not divide by 0
    run.record(FileDone(2, 2, _item("b.tif"), (8, 8), "YX", {}, None))
    assert run.parts_done == run.parts_total
    assert not run.stopped
    assert run.summary() == "segmented 2 of 2 images into /masks"


def test_failures_are_told_a_few_at_a_time_then_named_in_the_summary() -> None:
    total = FAILURES_TOLD + 3
    run = FolderProgress(Path("/masks"), total=total)
    told = []
    for number in range(1, total + 1):
        name = f"img{number}.tif"
        run.record(_started(number, total, name, tiles=1))
        # The message names the file here, or not: the name leads it once, not twice.
        message = f"{name} has 3 channels" if number == 1 else "unreadable TIFF"
        told += run.record(FileFailed(number, total, _item(name), message))
    assert told == ["img1.tif has 3 channels", "img2.tif: unreadable TIFF",
                    "img3.tif: unreadable TIFF",
                    "further images that fail are named in the summary at the end"]
    assert run.failed == [f"img{n}.tif" for n in range(1, total + 1)]
    assert "6 could not be read or predicted" in run.summary()
    assert not run.stopped


def test_a_job_ended_early_says_so_and_how_to_finish_it() -> None:
    run = FolderProgress(Path("/masks"), total=3)
    run.record(_started(1, 3, "a.tif", tiles=1))
    run.record(FileDone(1, 3, _item("a.tif"), (8, 8), "YX", {}, None))
    assert run.stopped
    assert run.summary().startswith("segmented 1 of 3 images into /masks; stopped")
    assert "'Skip'" in run.summary()
