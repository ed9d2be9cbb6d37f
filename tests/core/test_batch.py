"""Which files a batch prediction reads and writes (core.batch)."""

from pathlib import Path

import pytest

from napari_unet.core.batch import BatchItem, image_paths, is_batch, plan_batch
from napari_unet.core.errors import InputError


def _touch(path: Path) -> Path:
    path.write_bytes(b"x")
    return path


def test_folders_patterns_and_files_expand_in_order_each_image_once(tmp_path):
    b, a = _touch(tmp_path / "b.tif"), _touch(tmp_path / "a.TIFF")
    _touch(tmp_path / "c.png")
    (tmp_path / "sub.tif").mkdir()  # a folder named like an image is not one
    assert image_paths([tmp_path]) == [a, b]
    assert image_paths([b, tmp_path]) == [b, a]  # b is not listed twice
    assert image_paths([tmp_path / "*.tif"]) == [b]
    assert image_paths([tmp_path / "c.png"]) == [tmp_path / "c.png"]  # named: taken
    assert is_batch([b], tmp_path / "x.tif") is False
    assert is_batch([b], tmp_path) is True  # an existing folder as --out
    assert is_batch([tmp_path / "*.tif"], tmp_path / "o") is True
    with pytest.raises(InputError, match="file not found"):
        image_paths([tmp_path / "missing.tif"])


def test_a_stopped_batch_is_finished_not_redone(tmp_path):
    images = [_touch(tmp_path / f"{n}.tif") for n in "abc"]
    out, objects = tmp_path / "out", tmp_path / "objects"
    out.mkdir()
    objects.mkdir()
    _touch(out / "a.tif")
    _touch(objects / "a.tif")  # a: done
    _touch(out / "b.tif")  # b: stopped between its mask and its objects
    to_do, skipped = plan_batch(images, out, instances=objects, skip_existing=True)
    assert [i.image.name for i in skipped] == ["a.tif"]
    assert to_do == [BatchItem(images[1], out / "b.tif", None, objects / "b.tif", redo=True),
                     BatchItem(images[2], out / "c.tif", None, objects / "c.tif")]
    with pytest.raises(InputError, match="3 result file"):
        plan_batch(images, out, instances=objects)
    to_do, skipped = plan_batch(images, out, instances=objects, overwrite=True)
    assert len(to_do) == 3 and not skipped


def test_an_output_folder_may_lie_inside_another_one_still_to_be_made(tmp_path):
    from napari_unet.core.batch import make_folders

    image = _touch(tmp_path / "a.tif")
    out = tmp_path / "masks"
    to_do, _ = plan_batch([image], out, instances=out / "instances")
    assert to_do == [BatchItem(image, out / "a.tif", None, out / "instances" / "a.tif")]
    make_folders(out, None, out / "instances")
    assert (out / "instances").is_dir()
    with pytest.raises(InputError, match="cannot make folder"):
        plan_batch([image], tmp_path / "no" / "masks", instances=tmp_path / "no" / "objects")
