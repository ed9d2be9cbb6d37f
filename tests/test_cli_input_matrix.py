"""Every kind of input from the reliability matrix, through the command line.

Run in-process through ``cli.main`` (the subprocess tests in ``test_cli.py`` cover the real
entry point): each refusal is exit code 2 with one line on stderr and no output file; each
odd-but-valid input trains and predicts a mask that reads back.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core import memory_budget
from napari_unet.core.checkpoint import load_model
from tests.bad_files import corrupt_checkpoint, corrupt_tiff, crafted_checkpoint, newer_checkpoint
from tests.conftest import make_blobs, strokes_from_truth

STEPS = ["--steps", "2", "--device", "cpu", "--preset", "cpu-small"]


def _refused(capsys, argv: list) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _ok(capsys, argv: list) -> None:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    assert code == 0, capsys.readouterr().err


@pytest.fixture(scope="module")
def blobs_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_matrix")
    image, truth = make_blobs((48, 56))
    tifffile.imwrite(folder / "img.tif", image)
    tifffile.imwrite(folder / "strokes.tif", strokes_from_truth(truth, every=5))
    assert main(["train", "--image", str(folder / "img.tif"), "--labels",
                 str(folder / "strokes.tif"), "--out", str(folder / "m.pt"), "-q", *STEPS]) == 0
    return folder


def _as(dtype, image: np.ndarray) -> np.ndarray:
    if dtype is bool:
        return image > image.mean()
    if np.dtype(dtype).kind == "f":
        return image.astype(dtype) / 255.0 - 0.2  # values below zero too
    if dtype is np.int32:
        return image.astype(np.int32) * 1000 - 50_000
    if dtype is np.int8:
        return (image // 2).astype(np.int8) - 64
    if dtype is np.int16:
        return image.astype(np.int16) * 100 - 12_000
    if dtype is np.uint32:
        return image.astype(np.uint32) * 65_536
    return image.astype(dtype) * (257 if dtype is np.uint16 else 1)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32,
                                   np.uint32, np.float16, np.float32, np.float64, bool])
def test_every_pixel_type_trains_and_predicts(tmp_path, capsys, blobs_files, dtype):
    image, truth = make_blobs((48, 56))
    tifffile.imwrite(tmp_path / "img.tif", _as(dtype, image))
    train = ["train", "--image", tmp_path / "img.tif", "--labels", blobs_files / "strokes.tif",
             "--out", tmp_path / "m.pt", "-q", *STEPS]
    _ok(capsys, train)
    _ok(capsys, ["predict", "--model", tmp_path / "m.pt", "--image", tmp_path / "img.tif",
                 "--out", tmp_path / "mask.tif", "-q"])
    mask = tifffile.imread(tmp_path / "mask.tif")
    assert mask.shape == image.shape and set(np.unique(mask)) <= {1, 2}


def test_odd_but_valid_images_train_and_predict(tmp_path, capsys, blobs_files):
    strokes = tifffile.imread(blobs_files / "strokes.tif")
    image = tifffile.imread(blobs_files / "img.tif").astype(np.float32)
    holes = image.copy()
    holes[5:9, 5:30], holes[20, :] = np.nan, np.inf
    rgb = np.stack([image, image / 2, 255 - image], axis=-1).astype(np.uint8)
    tiny_image, tiny_truth = make_blobs((12, 10))
    cases = {
        "nan_inf": (holes, strokes),
        "constant": (np.full(image.shape, 7, np.uint16), strokes),
        "tiny": (tiny_image, strokes_from_truth(tiny_truth, every=3)),
        "rgb": (rgb, strokes),
    }
    for name, (img, lab) in cases.items():
        tifffile.imwrite(tmp_path / f"{name}.tif", img)
        tifffile.imwrite(tmp_path / f"{name}_strokes.tif", lab)
        _ok(capsys, ["train", "--image", tmp_path / f"{name}.tif", "--labels",
                     tmp_path / f"{name}_strokes.tif", "--out", tmp_path / f"{name}.pt", "-q",
                     *STEPS])
        _ok(capsys, ["predict", "--model", tmp_path / f"{name}.pt", "--image",
                     tmp_path / f"{name}.tif", "--out", tmp_path / f"{name}_mask.tif", "-q"])
        mask = tifffile.imread(tmp_path / f"{name}_mask.tif")
        assert mask.shape == lab.shape and set(np.unique(mask)) <= {1, 2}, name
    assert load_model(tmp_path / "rgb.pt").in_channels == 3


def test_five_dimensional_stack_trains_and_six_is_refused(tmp_path, capsys):
    image, truth = make_blobs((32, 40))
    # T=2, Z=3, C=2, Y, X; strokes on one slice of one frame
    stack = np.stack([image, 255 - image])[None, None].repeat(2, 0).repeat(3, 1)
    strokes = np.zeros((2, 3, 32, 40), np.uint8)
    strokes[1, 2] = strokes_from_truth(truth, every=4)
    tifffile.imwrite(tmp_path / "5d.tif", stack, imagej=True, metadata={"axes": "TZCYX"})
    tifffile.imwrite(tmp_path / "5d_strokes.tif", strokes, photometric="minisblack")
    _ok(capsys, ["train", "--image", tmp_path / "5d.tif", "--labels", tmp_path / "5d_strokes.tif",
                 "--out", tmp_path / "5d.pt", "-q", *STEPS])
    _ok(capsys, ["predict", "--model", tmp_path / "5d.pt", "--image", tmp_path / "5d.tif",
                 "--out", tmp_path / "5d_mask.tif", "-q"])
    with tifffile.TiffFile(tmp_path / "5d_mask.tif") as tif:
        assert tif.series[0].axes == "TZYX" and tif.asarray().shape == (2, 3, 32, 40)

    tifffile.imwrite(tmp_path / "6d.tif", np.zeros((2, 2, 2, 2, 16, 16), np.uint8))
    tifffile.imwrite(tmp_path / "6d_strokes.tif", np.zeros((2, 2, 2, 16, 16), np.uint8))
    message = _refused(capsys, ["train", "--image", tmp_path / "6d.tif", "--labels",
                                tmp_path / "6d_strokes.tif", "--out", tmp_path / "6d.pt", *STEPS])
    assert "6 dimensions" in message and "up to 5" in message
    assert not (tmp_path / "6d.pt").exists()


def test_bad_files_and_mismatches_are_refused_with_one_line(tmp_path, capsys, blobs_files):
    img, strokes = blobs_files / "img.tif", blobs_files / "strokes.tif"
    model = blobs_files / "m.pt"
    marker = tmp_path / "pwned"
    crafted = crafted_checkpoint(load_model(model), tmp_path / "evil.pt", marker)
    newer = newer_checkpoint(load_model(model), tmp_path / "newer.pt")
    corrupt = corrupt_checkpoint(tmp_path / "corrupt.pt")
    (tmp_path / "notes.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    corrupt_tiff(tmp_path / "corrupt.tif")
    image = tifffile.imread(img)
    tifffile.imwrite(tmp_path / "nan.tif", np.full(image.shape, np.nan, np.float32))
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([image] * 3, axis=-1))
    tifffile.imwrite(tmp_path / "complex.tif", image.astype(np.complex64))
    three = tifffile.imread(strokes)
    three[0, :5] = 3
    tifffile.imwrite(tmp_path / "three.tif", three)
    tifffile.imwrite(tmp_path / "fractional.tif", strokes_from_truth(
        make_blobs((48, 56))[1], every=5).astype(np.float32) * 0.5)
    out = tmp_path / "out.tif"

    def train(image_file, labels_file, *extra):
        return ["train", "--image", image_file, "--labels", labels_file, "--out",
                tmp_path / "new.pt", *STEPS, *extra]

    def predict(model_file, image_file=img):
        return ["predict", "--model", model_file, "--image", image_file, "--out", out]

    cases = {
        "refused": predict(crafted),
        "upgrade": predict(newer),
        "not a readable model file": predict(corrupt),
        "not a readable TIFF": train(tmp_path / "notes.png", strokes),
        "not a readable TIFF ": train(tmp_path / "corrupt.tif", strokes),
        "no finite": train(tmp_path / "nan.tif", strokes),
        "complex.tif has complex pixels": train(tmp_path / "complex.tif", strokes),
        "complex.tif has complex pixels ": predict(model, tmp_path / "complex.tif"),
        "channel": predict(model, tmp_path / "rgb.tif"),
        "class": train(img, tmp_path / "three.tif", "--init", model),
        "whole numbers": train(img, tmp_path / "fractional.tif"),
    }
    for expected, argv in cases.items():
        message = _refused(capsys, argv)
        assert expected.strip() in message, (expected, message)
    assert not marker.exists()
    assert not out.exists() and not (tmp_path / "new.pt").exists()


def test_a_job_too_large_for_memory_is_refused_before_the_image_is_read(
        tmp_path, capsys, blobs_files, monkeypatch):
    img, strokes, model = (blobs_files / name for name in ("img.tif", "strokes.tif", "m.pt"))
    reads = []
    read = tifffile.TiffPageSeries.asarray
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray",
                        lambda self, *a, **k: (reads.append(self), read(self, *a, **k))[1])
    monkeypatch.setattr(memory_budget, "available_memory", lambda: 2**20)
    out = tmp_path / "out.tif"
    message = _refused(capsys, ["train", "--image", img, "--labels", strokes,
                                "--out", tmp_path / "new.pt", *STEPS])
    assert message == (f"napari-unet train: error: training on {img} needs about 0.3 GiB of "
                       "memory at full resolution and 1 MiB is free: crop the image to the "
                       "part you need, or close other programs")
    message = _refused(capsys, ["predict", "--model", model, "--image", img, "--out", out,
                                "--instances", tmp_path / "i.tif",
                                "--probabilities", tmp_path / "p.tif"])
    assert message.startswith(f"napari-unet predict: error: predicting {img} needs about ")
    assert ": leave out --instances (" in message and "; leave out --probabilities (" in message
    assert not reads and not out.exists() and not (tmp_path / "new.pt").exists()
