"""Predicting image files and writing their results (core.predict_files)."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.core.batch import BatchItem, plan_batch
from napari_unet.core.config import ModelConfig, TileConfig
from napari_unet.core.inference import TileProgress, predict
from napari_unet.core.instances import InstanceConfig, instances_from_classes
from napari_unet.core.io import read_tiff
from napari_unet.core.model import TrainedModel
from napari_unet.core.normalization import Normalization
from napari_unet.core.predict_files import (
    FileDone,
    FileFailed,
    FileStarted,
    PredictOptions,
    predict_file,
    predict_files,
)
from napari_unet.core.unet import build_unet
from tests.conftest import make_blobs

TILES = TileConfig(tile_size=64, batch_size=2)


def _model(z_context: int = 0) -> TrainedModel:
    torch.manual_seed(0)
    net = build_unet(ModelConfig(in_channels=1, num_classes=2, depth=2, base_channels=8,
                                 z_context=z_context)).eval()
    return TrainedModel(net, Normalization((40.0,), (60.0,)), ("background", "nucleus"))


def _run(gen):
    """All records a generator yields, and what it returns."""
    records = []
    while True:
        try:
            records.append(next(gen))
        except StopIteration as finished:
            return records, finished.value


def test_a_batch_writes_what_each_image_alone_gives_and_reports_a_bad_file(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for seed, name in ((1, "a.tif"), (2, "c.tif")):
        tifffile.imwrite(images / name, make_blobs((48, 56 + seed), seed=seed)[0])
    (images / "b.tif").write_bytes(b"not a tiff")
    paths = sorted(images.iterdir())
    items, _ = plan_batch(paths, tmp_path / "out", instances=tmp_path / "objects")
    for folder in ("out", "objects"):
        (tmp_path / folder).mkdir()
    model = _model()
    options = PredictOptions(instances=InstanceConfig(min_size=4))

    records, summary = _run(predict_files(model, items, TILES, options))

    kinds = [type(r).__name__ for r in records if not isinstance(r, TileProgress)]
    assert kinds == ["FileStarted", "FileDone", "FileFailed", "FileStarted", "FileDone"]
    failed = [r for r in records if isinstance(r, FileFailed)]
    assert failed[0].number == 2 and "b.tif is not a readable TIFF" in failed[0].message
    assert [i.image.name for i in summary.done] == ["a.tif", "c.tif"]
    assert summary.failed == tuple(failed)
    for done in (r for r in records if isinstance(r, FileDone)):
        image = tifffile.imread(done.item.image)
        expected = predict(model, image, TILES).class_map
        written = read_tiff(done.item.out)
        np.testing.assert_array_equal(written.data, expected)
        assert written.axes == "YX" and done.shape == image.shape and done.axes == "YX"
        assert done.class_shares["nucleus"] == pytest.approx(np.mean(expected == 2))
        objects = tifffile.imread(done.item.instances)
        np.testing.assert_array_equal(
            objects, instances_from_classes(expected, "YX", (1.0, 1.0), InstanceConfig(4)))
        assert done.objects == objects.max()
    # progress counts up to the number announced before the first tile
    started = next(r for r in records if isinstance(r, FileStarted))
    first_tiles = [r for r in records[:records.index(started) + 10]
                   if isinstance(r, TileProgress)]
    assert first_tiles[-1].tiles_done == first_tiles[-1].tiles_total == started.tiles_total


def test_a_file_without_axes_of_its_own_takes_the_trainers_where_they_fit(tmp_path):
    stack = np.stack([make_blobs((40, 48), seed=s)[0] for s in range(3)])
    path = tmp_path / "plain.tif"
    # three planes, not RGB; no ImageJ metadata: its axes are a guess
    tifffile.imwrite(path, stack, photometric="minisblack")
    model = _model(z_context=1)  # sees the slices next to each one, unlike frames

    def started(fallback, target):
        item = BatchItem(path, tmp_path / target)
        records, done = _run(predict_file(model, item, TILES,
                                          PredictOptions(fallback_axes=fallback)))
        return records[0], tifffile.imread(item.out)

    as_frames, frames = started("TYX", "t.tif")
    assert (as_frames.axes, as_frames.axes_source) == ("TYX", "fallback")
    assert "as the trainer's" in as_frames.axes_note
    np.testing.assert_array_equal(frames, predict(model, stack, TILES, axes="TYX").class_map)
    # a trainer's 2D image says nothing about a stack: guessed, as from the command line
    guessed, slices = started("YX", "z.tif")
    assert (guessed.axes, guessed.axes_source) == ("ZYX", "guessed")
    np.testing.assert_array_equal(slices, predict(model, stack, TILES, axes="ZYX").class_map)
    assert (frames != slices).any()  # (so the two readings were told apart above)
    # the file's own axes come first
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    records, _ = _run(predict_file(model, BatchItem(tmp_path / "ij.tif", tmp_path / "o.tif"),
                                   TILES, PredictOptions(fallback_axes="TYX")))
    assert (records[0].axes, records[0].axes_source) == ("ZYX", "file")


def test_a_set_up_error_names_the_axes_and_how_to_change_them(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((32, 32, 3), np.uint8))
    item = BatchItem(tmp_path / "rgb.tif", tmp_path / "out.tif")
    with pytest.raises(ValueError, match=r"channel.*\[rgb.tif: axes YXC \(32x32x3, from "
                                         r"the file\); use --axes to change\]"):
        _run(predict_file(_model(), item, TILES, PredictOptions(axes_hint="use --axes to "
                                                                          "change")))
    assert not item.out.exists()


def test_a_batch_closed_part_way_leaves_complete_files_only(tmp_path):
    paths = []
    for n in range(3):
        paths.append(tmp_path / f"{n}.tif")
        tifffile.imwrite(paths[-1], make_blobs((96, 96), seed=n)[0])
    out = tmp_path / "out"
    out.mkdir()
    items, _ = plan_batch(paths, out)
    gen = predict_files(_model(), items, TileConfig(tile_size=32, batch_size=1))
    seen_second = 0
    for record in gen:
        if isinstance(record, FileStarted) and record.number == 2:
            seen_second = 1
        elif isinstance(record, TileProgress) and seen_second:
            break  # as a cancel does, in the middle of the second image
    gen.close()
    assert sorted(p.name for p in out.iterdir()) == ["0.tif"]  # no partial or hidden file
    assert read_tiff(out / "0.tif").data.shape == (96, 96)


def test_a_result_that_exists_is_not_replaced_unless_asked(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", make_blobs((40, 40))[0])
    Path(tmp_path / "mask.tif").write_bytes(b"earlier")
    item = BatchItem(tmp_path / "a.tif", tmp_path / "mask.tif")
    with pytest.raises(ValueError, match="exists"):
        _run(predict_file(_model(), item, TILES))
    assert (tmp_path / "mask.tif").read_bytes() == b"earlier"
    _run(predict_file(_model(), item, TILES, PredictOptions(overwrite=True)))
    assert read_tiff(tmp_path / "mask.tif").data.shape == (40, 40)
